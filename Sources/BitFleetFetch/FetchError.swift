/// Why a fetch failed. `isRetryable` says whether the same request may succeed later (timeouts, 5xx, 408/429,
/// dropped connections); policy violations (SSRF, size, protocol, redirects) and 4xx never are.
public struct FetchError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable, Hashable {
        case invalidURL
        case protocolNotAllowed
        case addressRefused
        case dnsFailure
        case connectionFailed
        case timeout
        case stalled
        case tls
        case tooLarge
        case tooManyRedirects
        case httpStatus(Int)
        case emptyBody
        case other
    }

    public var kind: Kind
    public var message: String
    public var isRetryable: Bool
    /// Seconds from a Retry-After header (429/503), if the server sent one.
    public var retryAfterSeconds: Double?

    public init(_ kind: Kind, _ message: String, retryable: Bool? = nil, retryAfterSeconds: Double? = nil) {
        self.kind = kind
        self.message = message
        self.isRetryable = retryable ?? FetchError.defaultRetryable(kind)
        self.retryAfterSeconds = retryAfterSeconds
    }

    public var description: String { message }

    /// A short stable name for metrics and job error columns ("timeout", "http_404", ...).
    public var code: String {
        switch kind {
        case .invalidURL: return "invalid_url"
        case .protocolNotAllowed: return "protocol_not_allowed"
        case .addressRefused: return "address_refused"
        case .dnsFailure: return "dns_failure"
        case .connectionFailed: return "connection_failed"
        case .timeout: return "timeout"
        case .stalled: return "stalled"
        case .tls: return "tls"
        case .tooLarge: return "too_large"
        case .tooManyRedirects: return "too_many_redirects"
        case .httpStatus(let s): return "http_\(s)"
        case .emptyBody: return "empty_body"
        case .other: return "fetch_error"
        }
    }

    public static func defaultRetryable(_ kind: Kind) -> Bool {
        switch kind {
        case .dnsFailure, .connectionFailed, .timeout, .stalled: return true
        case .httpStatus(let s): return s >= 500 || s == 408 || s == 425 || s == 429
        case .invalidURL, .protocolNotAllowed, .addressRefused, .tls, .tooLarge, .tooManyRedirects, .emptyBody,
            .other:
            return false
        }
    }
}

/// Standard reason phrases for messages ("HTTP 404 Not Found from …").
func httpReasonPhrase(_ status: Int) -> String {
    switch status {
    case 200: return "OK"
    case 201: return "Created"
    case 202: return "Accepted"
    case 204: return "No Content"
    case 206: return "Partial Content"
    case 300: return "Multiple Choices"
    case 301: return "Moved Permanently"
    case 302: return "Found"
    case 303: return "See Other"
    case 304: return "Not Modified"
    case 307: return "Temporary Redirect"
    case 308: return "Permanent Redirect"
    case 400: return "Bad Request"
    case 401: return "Unauthorized"
    case 403: return "Forbidden"
    case 404: return "Not Found"
    case 405: return "Method Not Allowed"
    case 406: return "Not Acceptable"
    case 408: return "Request Timeout"
    case 409: return "Conflict"
    case 410: return "Gone"
    case 411: return "Length Required"
    case 413: return "Content Too Large"
    case 414: return "URI Too Long"
    case 415: return "Unsupported Media Type"
    case 416: return "Range Not Satisfiable"
    case 418: return "I'm a teapot"
    case 421: return "Misdirected Request"
    case 422: return "Unprocessable Content"
    case 425: return "Too Early"
    case 429: return "Too Many Requests"
    case 431: return "Request Header Fields Too Large"
    case 451: return "Unavailable For Legal Reasons"
    case 500: return "Internal Server Error"
    case 501: return "Not Implemented"
    case 502: return "Bad Gateway"
    case 503: return "Service Unavailable"
    case 504: return "Gateway Timeout"
    case 505: return "HTTP Version Not Supported"
    default: return ""
    }
}

/// The URL as it may appear in logs and errors: no user:password, no query string (pre-signed URLs carry
/// credentials there), no fragment.
public func redactedURL(_ url: String) -> String {
    var s = Substring(url)
    if let hash = s.firstIndex(of: "#") { s = s[..<hash] }
    var query = false
    if let q = s.firstIndex(of: "?") {
        s = s[..<q]
        query = true
    }
    var out = String(s)
    if let (scheme, rest) = splitScheme(out) {
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        if let at = rest[..<authorityEnd].lastIndex(of: "@") {
            out = String(scheme) + "://…@" + String(rest[rest.index(after: at)...])
        }
    }
    return query ? out + "?…" : out
}

/// "scheme://rest" → ("scheme", "rest"), or nil without "://".
func splitScheme(_ url: String) -> (Substring, Substring)? {
    let u = Array(url.utf8)
    guard u.count >= 3 else { return nil }
    var i = 0
    while i + 2 < u.count {
        if u[i] == 58 && u[i + 1] == 47 && u[i + 2] == 47 {   // "://"
            let a = url.utf8.index(url.utf8.startIndex, offsetBy: i)
            let b = url.utf8.index(a, offsetBy: 3)
            return (Substring(url[..<a]), Substring(url[b...]))
        }
        if u[i] == 47 || u[i] == 63 || u[i] == 35 { return nil }   // '/', '?', '#' before any "://"
        i += 1
    }
    return nil
}
