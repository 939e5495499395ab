import Foundation
import Synchronization
import Testing

@testable import BitFleetFetch

/// Issue 14, item 8: IPv6 forms that embed an IPv4 address are judged by that address; allow-list entries may
/// name a port; host-name entries follow the name's current addresses.
@Suite("SSRF guard: embedded IPv4, ports, re-resolved host names")
struct SSRFGuardGapTests {
    let fx = HTTPFixture.shared

    @Test(arguments: [
        // NAT64, well-known prefix 64:ff9b::/96
        ("64:ff9b::7f00:1", "NAT64 of loopback"), ("64:ff9b::a00:1", "NAT64 of private (10.0.0.0/8)"),
        ("64:ff9b::a9fe:a9fe", "link-local (169.254.0.0/16)"),
        // local-use NAT64 64:ff9b:1::/48 (RFC 8215; RFC 6052 /48 layout: octets 6, 7, 9, 10)
        ("64:ff9b:1:7f00:0:100::", "local NAT64 of loopback"), ("64:ff9b:1:a9fe:a9:fe00::", "local NAT64 of link-local"),
        ("64:ff9b:1:c0a8:1:100::", "local NAT64 of private (192.168.0.0/16)"),
        // 6to4 2002::/16
        ("2002:7f00:1::1", "6to4 of loopback"), ("2002:a9fe:a9fe::", "6to4 of link-local"),
        ("2002:c0a8:101::1", "6to4 of private"), ("2002:a00:1:1::", "6to4 of private (10.0.0.0/8)"),
        // Teredo 2001::/32: client 127.0.0.1 (inverted 80ff:fffe) behind a public server; private server
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo of loopback"),
        ("2001:0:a00:1::f7f7:f7f7", "Teredo of private (10.0.0.0/8)"),
        // IPv4-translated ::ffff:0:a.b.c.d
        ("::ffff:0:7f00:1", "IPv4-translated of loopback"), ("::ffff:0:a9fe:a9fe", "IPv4-translated of link-local"),
        ("::ffff:0:a00:1", "IPv4-translated of private"),
    ])
    func embeddedNonPublicIPv4IsRefused(address: String, reason: String) throws {
        let r = try #require(SSRFGuard.classify(address), "\(address) classified public")
        #expect(r.contains(reason), "\(address): \(r)")
        let client = try HTTPClient(policy: FetchPolicy())
        #expect(!client.permits(address: address))
    }

    @Test(arguments: ["2002:808:808::1", "64:ff9b:1:808:8:800::", "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
                      "::ffff:0:808:808", "64:ff9b::101:101"])
    func embeddedPublicIPv4Passes(address: String) throws {
        #expect(SSRFGuard.classify(address) == nil, "\(address)")
        #expect(try HTTPClient(policy: FetchPolicy()).permits(address: address))
    }

    @Test func embeddedLoopbackIsRefusedAtConnectTime() throws {
        // A real fetch: the guard refuses before a socket is opened (this host has no NAT64 or 6to4 route anyway,
        // so anything but addressRefused would mean the guard let it through).
        for host in ["[64:ff9b::7f00:1]", "[2002:7f00:1::1]", "[::ffff:0:7f00:1]", "[64:ff9b:1:7f00:0:100::]"] {
            let e = try fetchError(fx.url("/sample.json", host: host), policy: localPolicy())
            #expect(e.kind == .addressRefused, "\(host): \(e)")
            #expect(e.message.contains("loopback"), "\(host): \(e)")
        }
    }

    @Test func allowListEntryWithAPortAllowsOnlyThatPort() throws {
        let other = closedPort()
        let client = try HTTPClient(policy: localPolicy { $0.allowedNetworks = ["127.0.0.1:\(fx.port)"] })
        #expect(try client.get(fx.url("/sample.json")).status == 200)
        #expect(client.permits(address: "127.0.0.1", port: fx.port))
        #expect(!client.permits(address: "127.0.0.1", port: other))
        #expect(!client.permits(address: "127.0.0.1"))   // port unknown: only port-less entries count
        do {
            _ = try client.get("http://127.0.0.1:\(other)/sample.json")
            Issue.record("a port the entry does not name was let through")
        } catch {
            #expect(error.kind == .addressRefused, "\(error)")   // refused by the guard, not "connection refused"
        }
        var p = FetchPolicy()
        p.allowedNetworks = ["10.0.0.0/8:443", "[fd00::/8]:8443", "[::1]:9000", "localhost:7000", "192.168.1.7:80"]
        let c = try HTTPClient(policy: p)
        #expect(c.permits(address: "10.9.8.7", port: 443) && !c.permits(address: "10.9.8.7", port: 80))
        #expect(c.permits(address: "fd12::1", port: 8443) && !c.permits(address: "fd12::1", port: 443))
        #expect(c.permits(address: "::1", port: 9000) && !c.permits(address: "::1", port: 9001))
        #expect(c.permits(address: "127.0.0.5", port: 7000) && !c.permits(address: "127.0.0.5", port: 7001))
        #expect(c.permits(address: "::ffff:192.168.1.7", port: 80) && !c.permits(address: "192.168.1.7", port: 81))
    }

    @Test func hostNameEntriesAreResolvedAgainNotFrozen() throws {
        let dns = Mutex<[String]>([])
        let client = try HTTPClient(policy: localPolicy { $0.allowedNetworks = ["store.bitfleet.test"] })
        client.setGuardResolver { name in name == "store.bitfleet.test" ? dns.withLock { $0 } : [] }
        // Not resolvable when the client was made: nothing allowed, and the client is still created.
        #expect(!client.permits(address: "10.0.0.5"))
        #expect(try fetchErrorFrom(client, fx.url("/sample.json", host: "127.0.0.2")).kind == .addressRefused)
        // The name now resolves to 10.0.0.5 and 127.0.0.2: both allowed, by the same client.
        dns.withLock { $0 = ["10.0.0.5", "127.0.0.2"] }
        #expect(client.permits(address: "10.0.0.5"))
        #expect(client.permits(address: "::ffff:10.0.0.5"))
        #expect(!client.permits(address: "10.0.0.6"))
        // The name moves: the old address is no longer allowed, the new one is.
        dns.withLock { $0 = ["10.0.0.6"] }
        #expect(!client.permits(address: "10.0.0.5"))
        #expect(client.permits(address: "10.0.0.6"))
        // With a port, only that port.
        let ported = try HTTPClient(policy: localPolicy { $0.allowedNetworks = ["store.bitfleet.test:9000"] })
        ported.setGuardResolver { _ in ["10.0.0.7"] }
        #expect(ported.permits(address: "10.0.0.7", port: 9000) && !ported.permits(address: "10.0.0.7", port: 9001))
    }

    @Test func aRealFetchFollowsTheNamesCurrentAddress() throws {
        let dns = Mutex<[String]>([])
        // The fixture listens on 127.0.0.1 only; the allow-list holds just the name (no numeric entry).
        let client = try HTTPClient(policy: localPolicy { $0.allowedNetworks = ["fixture.bitfleet.test"] })
        client.setGuardResolver { _ in dns.withLock { $0 } }
        #expect(try fetchErrorFrom(client, fx.url("/sample.json")).kind == .addressRefused)
        dns.withLock { $0 = ["127.0.0.1"] }
        #expect(try client.get(fx.url("/sample.json")).status == 200)
    }

    func fetchErrorFrom(_ client: HTTPClient, _ url: String) throws -> FetchError {
        do {
            let r = try client.get(url)
            Issue.record("expected an error for \(url), got HTTP \(r.status)")
            return FetchError(.other, "no error")
        } catch {
            return error
        }
    }
}
