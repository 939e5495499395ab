import BitFleetWorker
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 14, item 5: nobody can get a worker restarted through its health endpoint, and it binds where told.
@Suite("Health server under abuse: idle and slow clients, bind address")
struct HealthServerAbuseTests {
    typealias H = HealthServerTests

    /// Status of GET /healthz over a fresh connection (-1 when the connection is closed without an answer).
    static func probe(_ port: Int) throws -> Int {
        try H.get(port, "/healthz").status
    }

    @Test func idleAndSlowConnectionsFromAnyoneDoNotFailTheProbe() throws {
        let server = try HealthServer(port: 0, host: "127.0.0.1", ready: { true }, metrics: { "" })
        server.start()
        defer { server.stop() }
        // Far more idle connections than the old limit (16) and than one peer's share, plus slow drippers.
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        for _ in 0..<200 { held.append(try H.connect(server.port)) }
        var drippers: [Int32] = []
        for _ in 0..<20 {
            let fd = try H.connect(server.port)
            H.send(fd, Array("GET /healthz HTTP/1.1\r\nX-Slow: ".utf8))
            drippers.append(fd)
        }
        held += drippers
        for round in 0..<10 {
            for fd in drippers { H.send(fd, [UInt8(ascii: "a")]) }
            #expect(try Self.probe(server.port) == 200, "probe \(round)")
            for _ in 0..<10 { held.append(try H.connect(server.port)) }   // the flood goes on
        }
        #expect(server.evictedConnections > 0)
    }

    @Test func aFullServerStillAnswersEveryNewProbe() throws {
        // Tiny caps make the eviction visible: 4 per peer, 8 in all.
        let server = try HealthServer(port: 0, host: "127.0.0.1", maxConnections: 8, maxConnectionsPerPeer: 4,
                                      ready: { true }, metrics: { "" })
        server.start()
        defer { server.stop() }
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        for _ in 0..<50 { held.append(try H.connect(server.port)) }
        for _ in 0..<5 { #expect(try Self.probe(server.port) == 200) }
        #expect(server.evictedConnections >= 46 - 4)
        // The pushed-out connections were closed: reading one returns end-of-file, not a hang.
        #expect(H.readAll(held[0]).isEmpty)
    }

    @Test func aClientThatKeepsDrippingBytesIsCutOffAtItsDeadline() throws {
        let server = try HealthServer(port: 0, host: "127.0.0.1", requestTimeout: 0.5, ready: { true }, metrics: { "" })
        server.start()
        defer { server.stop() }
        let fd = try H.connect(server.port)
        defer { close(fd) }
        H.send(fd, Array("GET /healthz HTTP/1.1\r\n".utf8))
        // Activity does not extend the deadline: keep sending header bytes for longer than the timeout.
        for _ in 0..<15 {
            H.send(fd, Array("X: y\r\n".utf8))
            usleep(100_000)
        }
        #expect(H.parse(H.readAll(fd)).status == 408)
    }

    @Test func itBindsOnlyWhereConfigured() throws {
        let server = try HealthServer(port: 0, host: "127.0.0.1", ready: { true }, metrics: { "" })
        server.start()
        defer { server.stop() }
        #expect(try Self.probe(server.port) == 200)
        // Another local address of the same machine is not served.
        #expect(throws: H.TestError.self) { _ = try Self.connect(server.port, host: "127.0.0.2") }
        let wide = try HealthServer(port: 0, host: "0.0.0.0", ready: { true }, metrics: { "" })
        wide.start()
        defer { wide.stop() }
        let fd = try Self.connect(wide.port, host: "127.0.0.2")
        close(fd)
        #expect(wide.host == "0.0.0.0" && server.host == "127.0.0.1")
        #expect(throws: HealthServerError.self) {
            _ = try HealthServer(port: 0, host: "localhost", ready: { true }, metrics: { "" })
        }
    }

    @Test  // needs an IPv6 loopback: fails, never skips, without it
    func itBindsIPv6() throws {
        let server = try HealthServer(port: 0, host: "::1", ready: { true }, metrics: { "" })
        server.start()
        defer { server.stop() }
        let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = in_port_t(UInt16(server.port)).bigEndian
        _ = inet_pton(AF_INET6, "::1", &address.sin6_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        #expect(connected == 0)
        H.send(fd, Array("GET /healthz HTTP/1.1\r\n\r\n".utf8))
        #expect(H.parse(H.readAll(fd)).status == 200)
    }

    static func connect(_ port: Int, host: String) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw H.TestError("connect to \(host):\(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }
}
