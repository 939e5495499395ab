import Foundation
import Synchronization
import Testing

@testable import BitFleetFetch

@Suite("HTTP fetch against the fixture server")
struct FetchTests {
    let fx = HTTPFixture.shared

    @Test func getNpyAndDecode() throws {
        let client = try HTTPClient(policy: localPolicy())
        let r = try client.get(fx.url("/sample.npy"))
        #expect(r.status == 200)
        #expect(r.body == HTTPFixture.sampleNpy)
        #expect(r.contentType == "application/x-npy")
        #expect(r.effectiveURL == fx.url("/sample.npy"))
        #expect(r.bytesReceived == HTTPFixture.sampleNpy.count)
        #expect(r.remoteAddress == "127.0.0.1")
        let batch = try InputDecoder.decode(r.body, format: nil, contentType: r.contentType, url: r.effectiveURL, features: 4)
        #expect(batch.samples == 2 && batch.format == .npy)
        guard case .uint8(let v) = batch.values else { Issue.record("expected uint8"); return }
        #expect(v == (0..<8).map { UInt8($0 * 30) })
    }

    @Test func getJSONAndNDJSONAndDecode() throws {
        let client = try HTTPClient(policy: localPolicy())
        let j = try client.get(fx.url("/sample.json"))
        let b = try InputDecoder.decode(j.body, format: nil, contentType: j.contentType, url: j.effectiveURL, features: 4)
        #expect(b.samples == 2 && b.format == .json)
        // Same handle again: keep-alive reuse must not leak state between requests.
        let n = try client.get(fx.url("/sample.ndjson"))
        let c = try InputDecoder.decode(n.body, format: nil, contentType: n.contentType, url: n.effectiveURL, features: 4)
        #expect(c.samples == 2 && c.format == .ndjson)
        #expect(c.customIDs == ["a", nil])
    }

    @Test(arguments: [(404, false, "Not Found"), (403, false, "Forbidden"), (500, true, "Internal Server Error"),
                      (503, true, "Service Unavailable"), (429, true, "Too Many Requests"), (408, true, "Request Timeout")])
    func httpStatusErrors(code: Int, retryable: Bool, phrase: String) throws {
        let e = try fetchError(fx.url("/status/\(code)"), policy: localPolicy())
        #expect(e.kind == .httpStatus(code))
        #expect(e.isRetryable == retryable)
        #expect(e.message == "HTTP \(code) \(phrase) from \(fx.url("/status/\(code)"))")
        #expect(e.code == "http_\(code)")
    }

    @Test func retryAfterIsReported() throws {
        let e = try fetchError(fx.url("/status/429?retry_after=7"), policy: localPolicy())
        #expect(e.kind == .httpStatus(429) && e.isRetryable)
        #expect(e.retryAfterSeconds == 7)
        let e2 = try fetchError(fx.url("/status/503"), policy: localPolicy())
        #expect(e2.retryAfterSeconds == nil)
    }

    @Test func connectionRefused() throws {
        let port = closedPort()
        let e = try fetchError("http://127.0.0.1:\(port)/x", policy: localPolicy())
        #expect(e.kind == .connectionFailed)
        #expect(e.isRetryable)
        #expect(e.message.contains("connection failed to http://127.0.0.1:\(port)/x"))
    }

    @Test func stalledTransferIsDetected() throws {
        let policy = localPolicy { $0.lowSpeedLimit = 1024; $0.lowSpeedTime = 1; $0.totalTimeout = 30 }
        let start = Date()
        let e = try fetchError(fx.url("/slow"), policy: policy)
        #expect(e.kind == .stalled)
        #expect(e.isRetryable)
        #expect(e.message.contains("stalled"))
        #expect(e.message.contains("under 1024 bytes/s for 1 s"))
        #expect(Date().timeIntervalSince(start) < 10)
    }

    @Test func headersThenSilenceTimesOut() throws {
        let policy = localPolicy { $0.lowSpeedLimit = 0; $0.totalTimeout = 1 }
        let start = Date()
        let e = try fetchError(fx.url("/stall/10"), policy: policy)
        #expect(e.kind == .timeout)
        #expect(e.isRetryable)
        #expect(e.message.contains("timeout after 1.0 s"))
        #expect(Date().timeIntervalSince(start) < 5)
    }

    @Test func stallRouteAlsoCountsAsStall() throws {
        let policy = localPolicy { $0.lowSpeedLimit = 1; $0.lowSpeedTime = 1; $0.totalTimeout = 20 }
        let e = try fetchError(fx.url("/stall/10"), policy: policy)
        #expect(e.kind == .stalled)
    }

    @Test func bodyOverLimitWithContentLength() throws {
        let e = try fetchError(fx.url("/big/5000"), policy: localPolicy { $0.maxBodyBytes = 1000 })
        #expect(e.kind == .tooLarge)
        #expect(!e.isRetryable)
        #expect(e.message.contains("exceeds the limit of 1000 bytes"))
    }

    @Test func bodyOverLimitWithoutContentLength() throws {
        let e = try fetchError(fx.url("/big-chunked/200000"), policy: localPolicy { $0.maxBodyBytes = 1000 })
        #expect(e.kind == .tooLarge)
        #expect(e.message.contains("exceeds the limit of 1000 bytes"))
    }

    @Test func bodyExactlyAtLimitPasses() throws {
        let client = try HTTPClient(policy: localPolicy { $0.maxBodyBytes = 150_000 })
        #expect(try client.get(fx.url("/big/150000")).body.count == 150_000)
        #expect(try client.get(fx.url("/big-chunked/150000")).body.count == 150_000)
    }

    @Test func redirectsWithinTheCapAreFollowed() throws {
        let client = try HTTPClient(policy: localPolicy { $0.maxRedirects = 5 })
        let r = try client.get(fx.url("/redirect/5"))
        #expect(r.body == bytes("redirect chain done\n"))
        #expect(r.redirects == 5)
        #expect(r.effectiveURL == fx.url("/redirect/0"))
    }

    @Test func redirectCap() throws {
        let e = try fetchError(fx.url("/redirect/6"), policy: localPolicy { $0.maxRedirects = 5 })
        #expect(e.kind == .tooManyRedirects)
        #expect(!e.isRetryable)
        #expect(e.message.contains("too many redirects (more than 5)"))
    }

    @Test func redirectLoop() throws {
        let e = try fetchError(fx.url("/redirect-loop"), policy: localPolicy())
        #expect(e.kind == .tooManyRedirects)
        #expect(e.message.contains("too many redirects"))
    }

    @Test func protocolNotAllowed() throws {
        let ftp = try fetchError("ftp://127.0.0.1/x", policy: localPolicy())
        #expect(ftp.kind == .protocolNotAllowed)
        #expect(ftp.message.contains("protocol 'ftp' not allowed"))
        let file = try fetchError("file:///etc/hostname", policy: localPolicy())
        #expect(file.kind == .protocolNotAllowed)
        #expect(file.message.contains("protocol 'file' not allowed"))
        let gopher = try fetchError("gopher://127.0.0.1/x", policy: localPolicy())
        #expect(gopher.kind == .protocolNotAllowed)
    }

    @Test func fileSchemeWhenAllowed() throws {
        let client = try HTTPClient(policy: localPolicy { $0.allowFileScheme = true })
        let path = fx.root.appendingPathComponent("sample.json").path
        let r = try client.get("file://" + path)
        #expect(r.status == 200)
        #expect(r.body == bytes(HTTPFixture.sampleJSON))
    }

    @Test func redirectToFileIsNeverFollowed() throws {
        let target = "file://" + fx.root.appendingPathComponent("sample.json").path
        let url = fx.url("/redirect-to?url=" + target.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)
        let e = try fetchError(url, policy: localPolicy { $0.allowFileScheme = true })
        #expect(e.kind == .protocolNotAllowed)
        #expect(!e.isRetryable)
    }

    @Test func invalidURL() throws {
        let e = try fetchError("not a url", policy: localPolicy())
        #expect(e.kind == .invalidURL)
        #expect(e.message.contains("invalid URL"))
        let e2 = try fetchError("http://[::1/x", policy: localPolicy())
        #expect(e2.kind == .invalidURL)
    }

    // --- SSRF guard ---------------------------------------------------------------------------------------------

    @Test(arguments: [
        ("127.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"), ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"), ("[::1]", "::1"),
    ])
    func loopbackIsRefusedWithoutAllowList(host: String, address: String) throws {
        var policy = FetchPolicy()
        policy.connectTimeout = 2
        let e = try fetchError(fx.url("/sample.json", host: host), policy: policy)
        #expect(e.kind == .addressRefused)
        #expect(!e.isRetryable)
        #expect(e.message.contains("refused to connect to \(address)"))
        #expect(e.message.contains("loopback"))
        #expect(e.message.contains("not in allowedNetworks"))
    }

    @Test func localhostNameIsRefused() throws {
        let e = try fetchError(fx.url("/sample.json", host: "localhost"), policy: FetchPolicy())
        #expect(e.kind == .addressRefused)
        #expect(e.message.contains("loopback"))
    }

    @Test func allowListLetsLoopbackThrough() throws {
        for entry in ["127.0.0.1", "127.0.0.0/8", "localhost", "::ffff:127.0.0.1"] {
            var policy = FetchPolicy()
            policy.allowedNetworks = [entry]
            let client = try HTTPClient(policy: policy)
            #expect(try client.get(fx.url("/sample.json")).status == 200, "allowedNetworks \(entry)")
            #expect(try client.get(fx.url("/sample.json", host: "0x7f.1")).status == 200, "allowedNetworks \(entry)")
        }
    }

    @Test  // needs an IPv6 loopback: fails, never skips, without it
    func ipv6LoopbackRefusedThenAllowed() throws {
        let v6 = try #require(HTTPFixture.ipv6)
        let e = try fetchError(v6.url("/sample.json", host: "[::1]"), policy: localPolicy())   // only 127.0.0.1 allowed
        #expect(e.kind == .addressRefused)
        #expect(e.message.contains("refused to connect to ::1, a loopback (::1) address"))
        for entry in ["::1", "::1/128", "localhost"] {
            var p = FetchPolicy()
            p.allowedNetworks = [entry]
            let client = try HTTPClient(policy: p)
            let r = try client.get(v6.url("/sample.json", host: "[::1]"))
            #expect(r.body == bytes(HTTPFixture.sampleJSON), "allowedNetworks \(entry)")
            #expect(r.remoteAddress == "::1")
        }
    }

    @Test func allowListDoesNotCoverOtherLoopbackAddresses() throws {
        // 127.0.0.2 is also loopback: a /32 entry for .1 must not let it through.
        let e = try fetchError(fx.url("/x", host: "127.0.0.2"), policy: localPolicy())
        #expect(e.kind == .addressRefused)
        #expect(e.message.contains("127.0.0.2"))
    }

    @Test func redirectToRefusedAddressIsStopped() throws {
        let target = fx.url("/sample.json", host: "127.0.0.2")
        let url = fx.url("/redirect-to?url=" + target.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)
        let e = try fetchError(url, policy: localPolicy())
        #expect(e.kind == .addressRefused)
        #expect(e.message.contains("refused to connect to 127.0.0.2"))
    }

    @Test func metadataAddressIsRefusedBeforeConnecting() throws {
        var policy = FetchPolicy()
        policy.connectTimeout = 1
        policy.totalTimeout = 2
        let client = try HTTPClient(policy: policy)
        // The connect-time check uses exactly this function: if it said yes we would not send a packet there.
        try #require(!client.permits(address: "169.254.169.254"))
        try #require(!client.permits(address: "::ffff:169.254.169.254"))
        do {
            _ = try client.get("http://169.254.169.254/latest/meta-data/")
            Issue.record("metadata address was fetched")
        } catch {
            #expect(error.kind == .addressRefused)
            #expect(error.message.contains("refused to connect to 169.254.169.254, a link-local (169.254.0.0/16) address"))
        }
        do {
            _ = try client.get("http://[::ffff:169.254.169.254]/latest/meta-data/")
            Issue.record("metadata address was fetched")
        } catch {
            #expect(error.kind == .addressRefused)
            #expect(error.message.contains("link-local"))
        }
    }

    @Test(arguments: [
        ("169.254.169.254", "link-local"), ("10.1.2.3", "private (10.0.0.0/8)"), ("172.16.5.4", "private (172.16.0.0/12)"),
        ("172.31.255.255", "private"), ("192.168.1.1", "private (192.168.0.0/16)"), ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.255", "carrier-grade NAT"), ("0.0.0.0", "this-network"), ("0.1.2.3", "this-network"),
        ("127.255.255.254", "loopback"), ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"), ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local (fe80::/10)"), ("febf::1", "link-local"),
        ("fc00::1", "unique-local"), ("fd12:3456::1", "unique-local"), ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "link-local"),
        ("::127.0.0.1", "loopback"), ("64:ff9b::a9fe:a9fe", "link-local"), ("fec0::1", "site-local"),
    ])
    func nonPublicAddressesAreClassified(address: String, reason: String) throws {
        let r = try #require(SSRFGuard.classify(address))
        #expect(r.contains(reason))
        let client = try HTTPClient(policy: FetchPolicy())
        #expect(!client.permits(address: address))
    }

    @Test(arguments: ["8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0",
                      "192.169.0.1", "169.253.255.255", "11.0.0.1", "2606:4700::1111", "2001:4860:4860::8888",
                      "::ffff:8.8.8.8", "64:ff9b::808:808"])
    func publicAddressesPass(address: String) throws {
        #expect(SSRFGuard.classify(address) == nil)
        let client = try HTTPClient(policy: FetchPolicy())
        #expect(client.permits(address: address))
    }

    @Test func allowListEntries() throws {
        var p = FetchPolicy()
        p.allowedNetworks = ["10.0.0.0/8", "fd00::/8", "192.168.1.7"]
        let client = try HTTPClient(policy: p)
        #expect(client.permits(address: "10.200.3.4"))
        #expect(client.permits(address: "::ffff:10.0.0.1"))
        #expect(client.permits(address: "fd99::1"))
        #expect(client.permits(address: "192.168.1.7"))
        #expect(!client.permits(address: "192.168.1.8"))
        #expect(!client.permits(address: "fc00::1"))
        #expect(!client.permits(address: "127.0.0.1"))
        #expect(SSRFGuard.classify("not-an-ip") == "invalid")
    }

    /// Malformed networks, host names and ports (an entry may name a port: `10.0.0.5:9000`, `[fd00::/8]:443`).
    @Test(arguments: ["10.0.0.0/33", "not a host name !", "1.2.3.4/", "::1/129", "fe80::/x",
                      "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "[::1]9000", "[::1", "host.example:",
                      "10.0.0.0/8:x"])
    func invalidAllowListEntryIsRejected(entry: String) throws {
        var p = FetchPolicy()
        p.allowedNetworks = [entry]
        #expect {
            _ = try HTTPClient(policy: p)
        } throws: { error in
            (error as? FetchError)?.message.contains("invalid allowedNetworks entry") ?? false
        }
    }

    // --- content ------------------------------------------------------------------------------------------------

    @Test func gzipContentIsDecoded() throws {
        let client = try HTTPClient(policy: localPolicy())
        let r = try client.get(fx.url("/gzip/many.json"))
        let original = try Data(contentsOf: fx.root.appendingPathComponent("many.json"))
        #expect(r.body == Array(original))
        #expect(r.bytesReceived < original.count)
        let b = try InputDecoder.decode(r.body, format: nil, contentType: r.contentType, url: r.effectiveURL, features: 4)
        #expect(b.samples == 2000)
    }

    @Test func truncatedGzipIsAnError() throws {
        let e = try fetchError(fx.url("/truncated-gzip/many.json"), policy: localPolicy())
        #expect(e.message.contains("gzip"))
        #expect(e.message.contains("truncated"))
    }

    @Test func gzipBombStopsAtTheLimit() throws {
        // /gzip/ of a 2 MB file of zeros is a few KB on the wire; the decoded size is what counts.
        let zeros = fx.root.appendingPathComponent("zeros.bin")
        if !FileManager.default.fileExists(atPath: zeros.path) {
            try Data(count: 2_000_000).write(to: zeros)
        }
        let e = try fetchError(fx.url("/gzip/zeros.bin"), policy: localPolicy { $0.maxBodyBytes = 100_000 })
        #expect(e.kind == .tooLarge)
        #expect(e.message.contains("exceeds the limit of 100000 bytes"))
    }

    @Test func emptyBody() throws {
        let e = try fetchError(fx.url("/empty"), policy: localPolicy())
        #expect(e.kind == .emptyBody)
        #expect(!e.isRetryable)
        #expect(e.message.contains("empty body"))
        let client = try HTTPClient(policy: localPolicy { $0.allowEmptyBody = true })
        #expect(try client.get(fx.url("/empty")).body.isEmpty)
    }

    @Test func requestHeadersArePerRequest() throws {
        let client = try HTTPClient(policy: localPolicy { $0.headers = ["Authorization: Bearer s3cret"] })
        let r = try client.get(fx.url("/headers"), headers: ["X-Job-Id: 42"])
        let h = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: String] ?? [:]
        #expect(h["Authorization"] == "Bearer s3cret")
        #expect(h["X-Job-Id"] == "42")
        #expect(h["Accept-Encoding"]?.contains("gzip") == true)
        let r2 = try client.get(fx.url("/headers"))
        let h2 = try JSONSerialization.jsonObject(with: Data(r2.body)) as? [String: String] ?? [:]
        #expect(h2["X-Job-Id"] == nil)
        #expect(h2["Authorization"] == "Bearer s3cret")
    }

    @Test func headerInjectionIsRejectedWithoutEchoingTheValue() throws {
        let e = try fetchError(fx.url("/headers"), policy: localPolicy(), headers: ["X-A: 1\r\nX-Secret: hunter2"])
        #expect(e.message.contains("invalid request header"))
        #expect(!e.message.contains("hunter2"))
    }

    @Test func credentialsAndQueryAreRedactedInErrors() throws {
        let e = try fetchError(fx.url("/status/404?X-Amz-Signature=abc", host: "user:pw@127.0.0.1"), policy: localPolicy())
        #expect(e.kind == .httpStatus(404))
        #expect(!e.message.contains("abc"))
        #expect(!e.message.contains("pw"))
        #expect(e.message.contains("/status/404?…"))
    }

    @Test func clientsOnManyThreadsAtOnce() throws {
        // The worker runs one client per executor thread: concurrent clients must not interfere.
        let threads = 4, perThread = 25
        let failures = Mutex<[String]>([])
        var workers: [Thread] = []
        let done = DispatchGroup()
        for t in 0..<threads {
            done.enter()
            let fxURL = fx.url(t % 2 == 0 ? "/sample.npy" : "/gzip/many.json")
            let manyJSON = (try? Data(contentsOf: fx.root.appendingPathComponent("many.json")).count) ?? -1
            let expected = t % 2 == 0 ? HTTPFixture.sampleNpy.count : manyJSON
            let th = Thread {
                defer { done.leave() }
                do {
                    let client = try HTTPClient(policy: localPolicy())
                    for _ in 0..<perThread {
                        let r = try client.get(fxURL)
                        if r.body.count != expected { failures.withLock { $0.append("thread \(t): \(r.body.count) bytes") } }
                    }
                    _ = try? client.get(self.fx.url("/status/500"))
                } catch {
                    failures.withLock { $0.append("thread \(t): \(error)") }
                }
            }
            workers.append(th)
            th.start()
        }
        #expect(done.wait(timeout: .now() + 60) == .success)
        #expect(failures.withLock { $0 } == [])
    }

    // --- TLS ----------------------------------------------------------------------------------------------------

    @Test  // needs the openssl command (Ops/setup.sh installs it): fails, never skips, without it
    func tlsVerificationIsAlwaysOn() throws {
        let tls = try #require(HTTPFixture.tls, "openssl and the TLS fixture are needed")
        let e = try fetchError(tls.fixture.url("/sample.json"), policy: localPolicy())
        #expect(e.kind == .tls)
        #expect(!e.isRetryable)
        #expect(e.message.contains("TLS verification failed for https://127.0.0.1:\(tls.fixture.port)/sample.json"))
        #expect(e.message.lowercased().contains("certificate"))
    }

    @Test  // needs the openssl command (Ops/setup.sh installs it): fails, never skips, without it
    func tlsWithCABundle() throws {
        let tls = try #require(HTTPFixture.tls, "openssl and the TLS fixture are needed")
        let client = try HTTPClient(policy: localPolicy { $0.caBundlePath = tls.certPath })
        let r = try client.get(tls.fixture.url("/sample.json"))
        #expect(r.body == bytes(HTTPFixture.sampleJSON))
        // Trusted CA, but the name does not match the certificate (issued for IP 127.0.0.1 only).
        let e = try fetchError(
            tls.fixture.url("/sample.json", host: "localhost"),
            policy: localPolicy { $0.caBundlePath = tls.certPath; $0.allowedNetworks = ["localhost"] })
        #expect(e.kind == .tls)
        #expect(e.message.contains("localhost"))
    }

    @Test  // needs the openssl command (Ops/setup.sh installs it): fails, never skips, without it
    func missingCABundleFileIsATLSError() throws {
        let tls = try #require(HTTPFixture.tls, "openssl and the TLS fixture are needed")
        let e = try fetchError(tls.fixture.url("/sample.json"), policy: localPolicy { $0.caBundlePath = "/nonexistent/ca.pem" })
        #expect(e.kind == .tls)
    }

    @Test func policyDescriptionHidesHeaders() {
        var p = FetchPolicy()
        p.headers = ["Authorization: Bearer s3cret"]
        #expect(!String(describing: p).contains("s3cret"))
        #expect(String(describing: p).contains("Authorization: <redacted>"))
    }
}

