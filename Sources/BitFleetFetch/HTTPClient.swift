import CCurl

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Process-wide libcurl set-up. `globalInit()` runs `curl_global_init` exactly once; call it from `main` before
/// starting threads (every `HTTPClient.init` calls it too, which is safe once the first call has returned).
public enum HTTPFetcher {
    private static let initCode: UInt32 = curl_global_init(3 /* CURL_GLOBAL_ALL */).rawValue

    public static func globalInit() {
        _ = initCode
    }

    /// "libcurl/7.88.1 OpenSSL/3.0.x zlib/…"
    public static var curlVersion: String { String(cString: curl_version()) }
}

/// The body and metadata of a successful (2xx) response.
public struct FetchResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var contentType: String?
    /// The URL after redirects.
    public var effectiveURL: String
    /// Bytes received on the wire for the body (before content decoding).
    public var bytesReceived: Int
    public var totalSeconds: Double
    /// Redirects followed.
    public var redirects: Int
    /// The address the final connection went to ("127.0.0.1"), if libcurl reports one.
    public var remoteAddress: String?

    public init(
        status: Int, body: [UInt8], contentType: String?, effectiveURL: String, bytesReceived: Int,
        totalSeconds: Double, redirects: Int = 0, remoteAddress: String? = nil
    ) {
        self.status = status
        self.body = body
        self.contentType = contentType
        self.effectiveURL = effectiveURL
        self.bytesReceived = bytesReceived
        self.totalSeconds = totalSeconds
        self.redirects = redirects
        self.remoteAddress = remoteAddress
    }
}

/// A blocking HTTP(S) client over one libcurl easy handle, reused across requests (keep-alive, DNS cache).
/// Owned by one thread at a time: create one per worker thread, never call it from the cooperative pool.
public final class HTTPClient {
    public let policy: FetchPolicy
    private let easy: UnsafeMutableRawPointer
    private let sink: UnsafeMutablePointer<ccurl_sink>
    private let guardState: UnsafeMutablePointer<ccurl_guard>
    private let headerCapture: UnsafeMutablePointer<ccurl_headers>
    private let errorBuffer: UnsafeMutablePointer<CChar>
    private var resolverBox: ResolverBox?
    private static let errorBufferSize = 512   // >= CURL_ERROR_SIZE (256)

    public init(policy: FetchPolicy) throws(FetchError) {
        HTTPFetcher.globalInit()
        guard let easy = curl_easy_init() else {
            throw FetchError(.other, "curl_easy_init failed")
        }
        self.policy = policy
        self.easy = easy
        sink = .allocate(capacity: 1)
        sink.initialize(to: ccurl_sink())
        guardState = .allocate(capacity: 1)
        ccurl_guard_init(guardState, policy.ssrfGuard ? 1 : 0)
        headerCapture = .allocate(capacity: 1)
        headerCapture.initialize(to: ccurl_headers())
        errorBuffer = .allocate(capacity: HTTPClient.errorBufferSize)
        errorBuffer.initialize(repeating: 0, count: HTTPClient.errorBufferSize)
        // From here on deinit frees everything, so a throw below is safe.
        try configure()
    }

    deinit {
        curl_easy_cleanup(easy)
        ccurl_sink_free(sink)
        sink.deallocate()
        guardState.deallocate()
        headerCapture.deallocate()
        errorBuffer.deallocate()
    }

    private func set(_ option: CURLoption, _ value: Int) throws(FetchError) {
        try check(ccurl_setopt_long(easy, option, value), option)
    }

    private func set(_ option: CURLoption, _ value: String?) throws(FetchError) {
        let rc: CURLcode
        if let value {
            rc = value.withCString { ccurl_setopt_string(easy, option, $0) }   // libcurl copies strings
        } else {
            rc = ccurl_setopt_pointer(easy, option, nil)
        }
        try check(rc, option)
    }

    private func check(_ rc: CURLcode, _ option: CURLoption) throws(FetchError) {
        if rc != CURLE_OK {
            throw FetchError(.other, "libcurl rejected option \(option.rawValue): \(String(cString: curl_easy_strerror(rc)))")
        }
    }

    private func configure() throws(FetchError) {
        let p = policy
        guard p.connectTimeout > 0, p.totalTimeout > 0, p.maxBodyBytes > 0, p.maxRedirects >= 0,
            p.lowSpeedLimit >= 0, p.lowSpeedTime >= 0
        else {
            throw FetchError(.other, "invalid fetch policy: timeouts and maxBodyBytes must be positive")
        }
        try check(ccurl_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer), CURLOPT_ERRORBUFFER)
        try set(CURLOPT_NOSIGNAL, 1)
        try set(CURLOPT_CONNECTTIMEOUT_MS, Int((p.connectTimeout * 1000).rounded(.up)))
        try set(CURLOPT_TIMEOUT_MS, Int((p.totalTimeout * 1000).rounded(.up)))
        if p.lowSpeedLimit > 0 && p.lowSpeedTime > 0 {
            try set(CURLOPT_LOW_SPEED_LIMIT, p.lowSpeedLimit)
            try set(CURLOPT_LOW_SPEED_TIME, p.lowSpeedTime)
        }
        try check(ccurl_setopt_off_t(easy, CURLOPT_MAXFILESIZE_LARGE, Int64(p.maxBodyBytes)), CURLOPT_MAXFILESIZE_LARGE)
        try set(CURLOPT_FOLLOWLOCATION, 1)
        try set(CURLOPT_MAXREDIRS, p.maxRedirects)
        try set(CURLOPT_PROTOCOLS_STR, p.allowFileScheme ? "http,https,file" : "http,https")
        try set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
        try set(CURLOPT_SSL_VERIFYPEER, 1)
        try set(CURLOPT_SSL_VERIFYHOST, 2)
        if let ca = p.caBundlePath { try set(CURLOPT_CAINFO, ca) }
        // No proxy from the environment: the SSRF guard must see the real destination.
        try set(CURLOPT_PROXY, "")
        // Ask for gzip but decode it ourselves (Gzip.swift): libcurl 7.88 returns a truncated gzip body as if it
        // were complete, and our decoder also caps the decoded size.
        try set(CURLOPT_ACCEPT_ENCODING, "gzip")
        try set(CURLOPT_HTTP_CONTENT_DECODING, 0)
        try set(CURLOPT_USERAGENT, p.userAgent)
        try set(CURLOPT_TCP_KEEPALIVE, 1)
        // Receive in 256 KiB reads rather than libcurl's 16 KiB: a typical input (tens of kilobytes to megabytes)
        // then takes a few recv/poll rounds and write callbacks instead of dozens.
        try set(CURLOPT_BUFFERSIZE, 256 << 10)
        try check(ccurl_install_sink(easy, sink), CURLOPT_WRITEFUNCTION)
        try check(ccurl_install_header_capture(easy, headerCapture), CURLOPT_HEADERFUNCTION)
        try check(ccurl_install_guard(easy, guardState), CURLOPT_OPENSOCKETFUNCTION)
        var message = [CChar](repeating: 0, count: 256)
        for entry in p.allowedNetworks {
            let entry = entry.trimmingSpaces()
            if entry.isEmpty { continue }
            if ccurl_guard_allow(guardState, entry, &message, message.count) != 0 {
                let text = message.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }
                throw FetchError(.other, "invalid allowedNetworks entry: \(String(decoding: text, as: UTF8.self))")
            }
        }
        for h in p.headers { try validateHeader(h) }
    }

    private func validateHeader(_ h: String) throws(FetchError) {
        if h.utf8.contains(where: { $0 == 10 || $0 == 13 || $0 == 0 }) || !h.contains(":") {
            // Don't echo the header: it may hold a credential.
            throw FetchError(.other, "invalid request header (needs 'Name: value', no line breaks)")
        }
    }

    /// Whether the SSRF guard of this client lets a connection to a numeric address (and port, when given) through.
    /// Without a port only allow-list entries that name no port count.
    public func permits(address: String, port: Int? = nil) -> Bool {
        ccurl_guard_permits_text_port(guardState, address, Int32(port ?? -1)) == 1
    }

    /// Replaces the resolver the guard uses for host-name entries (tests: names whose addresses change).
    /// `resolve` returns numeric addresses; it is called on this client's thread, during `get`.
    func setGuardResolver(_ resolve: @escaping (String) -> [String]) {
        let box = ResolverBox(resolve)
        resolverBox = box
        ccurl_guard_set_resolver(guardState, { context, name, families, addresses, capacity in
            guard let context, let name, let families, let addresses else { return 0 }
            let box = Unmanaged<ResolverBox>.fromOpaque(context).takeUnretainedValue()
            var n: Int32 = 0
            for text in box.resolve(String(cString: name)) where n < capacity {
                var raw = [UInt8](repeating: 0, count: 16)
                let family: Int32
                if inet_pton(AF_INET, text, &raw) == 1 {
                    family = Int32(AF_INET)
                } else if inet_pton(AF_INET6, text, &raw) == 1 {
                    family = Int32(AF_INET6)
                } else {
                    continue
                }
                families[Int(n)] = family
                withUnsafeMutableBytes(of: &addresses[Int(n)]) { $0.copyBytes(from: raw) }
                n += 1
            }
            return n
        }, Unmanaged.passUnretained(box).toOpaque())
    }

    private final class ResolverBox {
        let resolve: (String) -> [String]
        init(_ resolve: @escaping (String) -> [String]) { self.resolve = resolve }
    }

    /// GET `url`. Returns only 2xx responses; everything else is a `FetchError` naming the cause.
    public func get(_ url: String, headers extraHeaders: [String] = []) throws(FetchError) -> FetchResponse {
        let shown = redactedURL(url)
        try checkScheme(url, shown)
        for h in extraHeaders { try validateHeader(h) }

        // Per-request header list, freed after the transfer.
        var list: UnsafeMutablePointer<curl_slist>? = nil
        for h in policy.headers + extraHeaders {
            guard let next = curl_slist_append(list, h) else {
                curl_slist_free_all(list)
                throw FetchError(.other, "out of memory building request headers")
            }
            list = next
        }
        defer {
            _ = ccurl_setopt_pointer(easy, CURLOPT_HTTPHEADER, nil)
            curl_slist_free_all(list)
        }
        try check(ccurl_setopt_pointer(easy, CURLOPT_HTTPHEADER, list), CURLOPT_HTTPHEADER)
        try set(CURLOPT_URL, url)

        ccurl_sink_reset(sink, policy.maxBodyBytes)
        // Don't keep a large buffer between requests (one client per worker thread, bodies up to the limit).
        defer { if sink.pointee.capacity > 8 << 20 { ccurl_sink_free(sink) } }
        ccurl_guard_reset_transfer(guardState)
        headerCapture.pointee.content_encoding.0 = 0
        errorBuffer[0] = 0

        let rc = curl_easy_perform(easy)

        var status = 0
        _ = ccurl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        var total = 0.0
        _ = ccurl_getinfo_double(easy, CURLINFO_TOTAL_TIME, &total)
        var wire: Int64 = 0
        _ = ccurl_getinfo_off_t(easy, CURLINFO_SIZE_DOWNLOAD_T, &wire)
        var redirects = 0
        _ = ccurl_getinfo_long(easy, CURLINFO_REDIRECT_COUNT, &redirects)
        var effective = url
        var cstr: UnsafePointer<CChar>? = nil
        if ccurl_getinfo_string(easy, CURLINFO_EFFECTIVE_URL, &cstr) == CURLE_OK, let cstr {
            effective = String(cString: cstr)
        }
        var contentType: String? = nil
        cstr = nil
        if ccurl_getinfo_string(easy, CURLINFO_CONTENT_TYPE, &cstr) == CURLE_OK, let cstr {
            contentType = String(cString: cstr)
        }
        var remote: String? = nil
        cstr = nil
        if ccurl_getinfo_string(easy, CURLINFO_PRIMARY_IP, &cstr) == CURLE_OK, let cstr {
            let s = String(cString: cstr)
            if !s.isEmpty { remote = s }
        }

        if rc != CURLE_OK {
            throw mapCurlError(rc, shown: shown, effective: redactedURL(effective), received: Int(wire))
        }

        let isFile = effective.lowercased().hasPrefix("file:")
        if isFile && status == 0 { status = 200 }
        let length = sink.pointee.length
        if !(200...299).contains(status) {
            var retryAfter: Int64 = -1
            _ = ccurl_getinfo_off_t(easy, CURLINFO_RETRY_AFTER, &retryAfter)
            let phrase = httpReasonPhrase(status)
            let redirectNote = redirects > 0 ? " (after \(redirects) redirect\(redirects == 1 ? "" : "s"))" : ""
            throw FetchError(
                .httpStatus(status),
                "HTTP \(status)\(phrase.isEmpty ? "" : " " + phrase) from \(redactedURL(effective))\(redirectNote)",
                retryAfterSeconds: retryAfter > 0 ? Double(retryAfter) : nil)
        }
        if length == 0 && !policy.allowEmptyBody {
            throw FetchError(.emptyBody, "empty body (HTTP \(status)) from \(redactedURL(effective))")
        }
        var body: [UInt8]
        if let data = sink.pointee.data, length > 0 {
            body = Array(UnsafeBufferPointer(start: data, count: length))
        } else {
            body = []
        }
        // Hand the sink's buffer back now rather than after the decoding below: one body in memory, not two.
        if sink.pointee.capacity > 8 << 20 { ccurl_sink_free(sink) }
        let encoding = withUnsafeBytes(of: headerCapture.pointee.content_encoding) {
            String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        switch encoding {
        case "", "identity":
            break
        case "gzip", "x-gzip":
            do {
                body = try Gzip.decompress(body, limit: policy.maxBodyBytes)
            } catch {
                if error.kind == .tooLarge {
                    throw FetchError(
                        .tooLarge,
                        "body from \(redactedURL(effective)) exceeds the limit of \(policy.maxBodyBytes) bytes after gzip decoding")
                }
                throw FetchError(.other, "bad gzip body (Content-Encoding: gzip) from \(redactedURL(effective)): \(error.message)")
            }
            if body.isEmpty && !policy.allowEmptyBody {
                throw FetchError(.emptyBody, "empty body (HTTP \(status), gzip) from \(redactedURL(effective))")
            }
        default:
            throw FetchError(.other, "unsupported Content-Encoding '\(encoding)' from \(redactedURL(effective)) (only gzip is accepted)")
        }
        try checkEmbeddedGzip(body, from: effective)
        return FetchResponse(
            status: status, body: body, contentType: contentType, effectiveURL: effective,
            bytesReceived: Int(wire), totalSeconds: total, redirects: redirects, remoteAddress: remote)
    }

    /// A body that is itself gzip data (`inputs.npy.gz` served without Content-Encoding) is decompressed by the
    /// input decoder; here it must decompress within `maxBodyBytes` (the operator's --max-input-bytes), so no
    /// later stage holds more than the limit for one input. Data that is not valid gzip is left alone (a raw
    /// input may begin with the magic bytes by chance); only a stream that expands past the limit is refused.
    private func checkEmbeddedGzip(_ body: [UInt8], from effective: String) throws(FetchError) {
        guard Gzip.isGzip(body) else { return }
        do {
            _ = try Gzip.decompressedSize(body, limit: policy.maxBodyBytes)
        } catch {
            if error.kind == .tooLarge {
                throw FetchError(
                    .tooLarge,
                    "body from \(redactedURL(effective)) is gzip data that decompresses past the limit of \(policy.maxBodyBytes) bytes")
            }
        }
    }

    private func checkScheme(_ url: String, _ shown: String) throws(FetchError) {
        guard !url.utf8.contains(0), let (rawScheme, _) = splitScheme(url) else {
            throw FetchError(.invalidURL, "invalid URL '\(shown)': expected scheme://host/path")
        }
        let scheme = rawScheme.lowercased()
        let okChar: (Character) -> Bool = { c in c.isLetter || c.isNumber || c == "+" || c == "-" || c == "." }
        if scheme.isEmpty || !scheme.allSatisfy(okChar) {
            throw FetchError(.invalidURL, "invalid URL '\(shown)': bad scheme")
        }
        let allowed = policy.allowFileScheme ? ["http", "https", "file"] : ["http", "https"]
        if !allowed.contains(scheme) {
            throw FetchError(
                .protocolNotAllowed,
                "protocol '\(scheme)' not allowed for \(shown) (allowed: \(allowed.joined(separator: ", ")))")
        }
    }

    private var curlMessage: String {
        let bytes = UnsafeRawBufferPointer(start: errorBuffer, count: HTTPClient.errorBufferSize)
        return String(decoding: bytes.prefix(while: { $0 != 0 }), as: UTF8.self).trimmingSpaces()
    }

    private func mapCurlError(_ rc: CURLcode, shown: String, effective: String, received: Int) -> FetchError {
        let detail = curlMessage.isEmpty ? String(cString: curl_easy_strerror(rc)) : curlMessage
        let g = guardState.pointee
        switch rc {
        case CURLE_UNSUPPORTED_PROTOCOL:
            return FetchError(.protocolNotAllowed, "protocol not allowed fetching \(shown): \(detail)")
        case CURLE_URL_MALFORMAT:
            return FetchError(.invalidURL, "invalid URL '\(shown)': \(detail)")
        case CURLE_COULDNT_RESOLVE_HOST:
            return FetchError(.dnsFailure, "DNS lookup failed for \(effective): \(detail)")
        case CURLE_COULDNT_CONNECT:
            if g.refused_since_connect > 0 {
                let addr = withUnsafeBytes(of: g.refused_address) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                let why = withUnsafeBytes(of: g.refused_reason) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                let via = effective == shown ? "" : " (requested as \(shown))"
                return FetchError(
                    .addressRefused,
                    "refused to connect to \(addr), a \(why) address, for \(effective)\(via): not in allowedNetworks (SSRF guard)")
            }
            return FetchError(.connectionFailed, "connection failed to \(effective): \(detail)")
        case CURLE_OPERATION_TIMEDOUT:
            let lower = detail.lowercased()
            if lower.contains("too slow") {
                return FetchError(
                    .stalled,
                    "transfer stalled from \(effective): under \(policy.lowSpeedLimit) bytes/s for \(policy.lowSpeedTime) s (\(received) bytes received)")
            }
            if lower.contains("connection timed out") || lower.contains("connect") || lower.contains("resolv") {
                return FetchError(.timeout, "connect timeout (\(policy.connectTimeout) s) to \(effective): \(detail)")
            }
            return FetchError(
                .timeout, "timeout after \(policy.totalTimeout) s fetching \(effective) (\(received) bytes received)")
        case CURLE_WRITE_ERROR:
            if sink.pointee.exceeded != 0 {
                return FetchError(
                    .tooLarge, "body from \(effective) exceeds the limit of \(policy.maxBodyBytes) bytes")
            }
            if sink.pointee.oom != 0 {
                return FetchError(.other, "out of memory receiving the body from \(effective)")
            }
            return FetchError(.other, "write error fetching \(effective): \(detail)")
        case CURLE_FILESIZE_EXCEEDED:
            return FetchError(
                .tooLarge,
                "body from \(effective) exceeds the limit of \(policy.maxBodyBytes) bytes (Content-Length)")
        case CURLE_TOO_MANY_REDIRECTS:
            return FetchError(
                .tooManyRedirects, "too many redirects (more than \(policy.maxRedirects)) fetching \(shown)")
        case CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE,
            CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CRL_BADFILE,
            CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_USE_SSL_FAILED:
            return FetchError(.tls, "TLS verification failed for \(effective): \(detail)")
        case CURLE_SSL_CONNECT_ERROR:
            return FetchError(.tls, "TLS handshake failed with \(effective): \(detail)", retryable: true)
        case CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING, CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_HTTP2,
            CURLE_HTTP2_STREAM, CURLE_HTTP3:
            return FetchError(
                .connectionFailed, "connection to \(effective) broke off (\(received) bytes received): \(detail)")
        case CURLE_BAD_CONTENT_ENCODING:
            return FetchError(.other, "cannot decode the Content-Encoding of \(effective): \(detail)")
        case CURLE_FILE_COULDNT_READ_FILE, CURLE_READ_ERROR:
            return FetchError(.other, "cannot read \(shown): \(detail)")
        case CURLE_OUT_OF_MEMORY:
            return FetchError(.other, "out of memory fetching \(effective)")
        default:
            return FetchError(.other, "fetch of \(effective) failed: \(detail) (curl error \(rc.rawValue))")
        }
    }
}

/// One client belongs to one thread (a libcurl easy handle must not be used concurrently).
@available(*, unavailable)
extension HTTPClient: Sendable {}

/// The address classification the SSRF guard applies at connect time (for diagnostics and tests).
public enum SSRFGuard {
    /// Why a numeric IPv4/IPv6 address is not public ("loopback (127.0.0.0/8)", "link-local (169.254.0.0/16)",
    /// …), nil for a public address, "invalid" when it cannot be parsed.
    public static func classify(_ address: String) -> String? {
        guard let r = ccurl_classify_text(address) else { return nil }
        return String(cString: r)
    }
}
