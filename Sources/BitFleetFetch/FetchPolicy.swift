/// Limits and safety settings for one `HTTPClient`. Every field has a safe default; the worker fills
/// `allowedNetworks`, `caBundlePath` and `headers` from its configuration.
public struct FetchPolicy: Sendable, Equatable {
    /// Seconds to establish the TCP (and TLS) connection.
    public var connectTimeout: Double = 5
    /// Seconds for the whole transfer, redirects included.
    public var totalTimeout: Double = 60
    /// Stall detection: abort when fewer than `lowSpeedLimit` bytes/s arrive for `lowSpeedTime` seconds.
    /// `lowSpeedLimit = 0` turns stall detection off.
    public var lowSpeedLimit: Int = 1024
    public var lowSpeedTime: Int = 10
    /// Largest body accepted, after content decoding (a gzip bomb stops here too).
    public var maxBodyBytes: Int = 64 << 20
    /// Redirects followed before `tooManyRedirects`.
    public var maxRedirects: Int = 5
    /// `file://` URLs (the first URL only: a redirect never leads to `file://`).
    public var allowFileScheme = false
    /// Non-public addresses the SSRF guard lets through: IPs ("127.0.0.1", "::1"), CIDRs ("10.0.0.0/8",
    /// "fd00::/8") or host names (their addresses at client creation). Public addresses always pass.
    public var allowedNetworks: [String] = []
    /// The SSRF guard itself. Turning it off is for tests and closed networks only.
    public var ssrfGuard = true
    /// PEM bundle of trusted CAs (TLS verification is always on; this only changes whom to trust).
    public var caBundlePath: String? = nil
    /// Request headers sent with every request, e.g. "Authorization: Bearer …". Never logged.
    public var headers: [String] = []
    /// Accept a 2xx response with an empty body (otherwise `emptyBody`).
    public var allowEmptyBody = false
    /// User-Agent header.
    public var userAgent = "bitfleet-fetch/1"

    public init() {}

    public init(
        connectTimeout: Double = 5, totalTimeout: Double = 60, lowSpeedLimit: Int = 1024, lowSpeedTime: Int = 10,
        maxBodyBytes: Int = 64 << 20, maxRedirects: Int = 5, allowFileScheme: Bool = false,
        allowedNetworks: [String] = [], caBundlePath: String? = nil, headers: [String] = []
    ) {
        self.connectTimeout = connectTimeout
        self.totalTimeout = totalTimeout
        self.lowSpeedLimit = lowSpeedLimit
        self.lowSpeedTime = lowSpeedTime
        self.maxBodyBytes = maxBodyBytes
        self.maxRedirects = maxRedirects
        self.allowFileScheme = allowFileScheme
        self.allowedNetworks = allowedNetworks
        self.caBundlePath = caBundlePath
        self.headers = headers
    }
}

extension FetchPolicy: CustomStringConvertible {
    /// The policy for logs: header values (credentials) are replaced by "<redacted>".
    public var description: String {
        let hs = headers.map { h -> String in
            let name = h.split(separator: ":", maxSplits: 1).first.map(String.init) ?? "?"
            return "\(name): <redacted>"
        }
        return "FetchPolicy(connectTimeout: \(connectTimeout), totalTimeout: \(totalTimeout), "
            + "lowSpeedLimit: \(lowSpeedLimit), lowSpeedTime: \(lowSpeedTime), maxBodyBytes: \(maxBodyBytes), "
            + "maxRedirects: \(maxRedirects), allowFileScheme: \(allowFileScheme), allowedNetworks: \(allowedNetworks), "
            + "ssrfGuard: \(ssrfGuard), caBundlePath: \(caBundlePath ?? "system"), headers: \(hs))"
    }
}
