import BitFleetEngine
import BitFleetWorker
import Foundation
import Prometheus
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The probe and metrics endpoint over a real loopback socket.
@Suite("Health server: /healthz, /readyz, /metrics over real sockets")
struct HealthServerTests {
    final class Flag: Sendable {
        private let value = Mutex(false)
        func set(_ v: Bool) { value.withLock { $0 = v } }
        var get: Bool { value.withLock { $0 } }
    }

    /// Connects to 127.0.0.1:port; returns the socket.
    static func connect(_ port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw TestError("connect to \(port): \(String(cString: strerror(errno)))")
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the server closes the connection.
    static func readAll(_ fd: Int32) -> String {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data += chunk[..<n]
        }
        return String(decoding: data, as: UTF8.self)
    }

    struct Response {
        var status: Int
        var headers: String
        var body: String
    }

    static func request(_ port: Int, _ raw: String) throws -> Response {
        let fd = try connect(port)
        defer { close(fd) }
        send(fd, Array(raw.utf8))
        return parse(readAll(fd))
    }

    static func get(_ port: Int, _ path: String) throws -> Response {
        try request(port, "GET \(path) HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n")
    }

    static func parse(_ text: String) -> Response {
        let parts = text.components(separatedBy: "\r\n\r\n")
        let head = parts.first ?? ""
        let status = head.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? -1
        return Response(status: status, headers: head, body: parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    struct TestError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    static func server(ready: Flag, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
                       timeout: Double = 0.5) throws -> HealthServer {
        let server = try HealthServer(port: 0, host: "127.0.0.1", requestTimeout: timeout, ready: { ready.get },
                                      metrics: { registry.emitToString() })
        server.start()
        return server
    }

    @Test func healthReadinessAndUnknownPaths() throws {
        let ready = Flag()
        let server = try Self.server(ready: ready)
        defer { server.stop() }
        #expect(server.port > 0)

        let health = try Self.get(server.port, "/healthz")
        #expect(health.status == 200)
        #expect(health.body == "ok\n")
        #expect(health.headers.contains("Content-Length: 3"))

        #expect(try Self.get(server.port, "/readyz").status == 503)
        ready.set(true)
        let readyResponse = try Self.get(server.port, "/readyz")
        #expect(readyResponse.status == 200)
        #expect(readyResponse.body == "ready\n")
        ready.set(false)
        #expect(try Self.get(server.port, "/readyz?verbose=1").status == 503)

        #expect(try Self.get(server.port, "/").status == 404)
        #expect(try Self.get(server.port, "/healthz/extra").status == 404)
        #expect(try Self.request(server.port, "POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n").status == 405)
        let head = try Self.request(server.port, "HEAD /healthz HTTP/1.1\r\n\r\n")
        #expect(head.status == 200)
        #expect(head.body.isEmpty)
        // Lenient line endings still work.
        #expect(try Self.request(server.port, "GET /healthz HTTP/1.0\n\n").status == 200)
    }

    @Test func metricsServePrometheusTextOfWorkerMetrics() throws {
        let registry = PrometheusCollectorRegistry()
        let metrics = WorkerMetrics(factory: WorkerMetrics.prometheusFactory(registry: registry))
        let server = try Self.server(ready: Flag(), registry: registry)
        defer { server.stop() }

        metrics.jobFinished(outcome: "succeeded")
        metrics.jobFinished(outcome: "succeeded")
        metrics.jobFinished(outcome: "dead")
        metrics.phase("infer", seconds: 0.003)
        metrics.phase("fetch", seconds: 0.2)
        metrics.claim(seconds: 0.002, jobs: 8)
        metrics.samples(120)
        metrics.busySlots(3)

        let response = try Self.get(server.port, "/metrics")
        #expect(response.status == 200)
        #expect(response.headers.contains("Content-Type: text/plain; version=0.0.4"))
        let text = response.body
        #expect(text.contains("bitfleet_jobs_total{outcome=\"succeeded\"} 2"), "\(text)")
        #expect(text.contains("bitfleet_jobs_total{outcome=\"dead\"} 1"))
        #expect(text.contains("bitfleet_jobs_total{outcome=\"lease_lost\"} 0"))
        #expect(text.contains("bitfleet_samples_total 120"))
        #expect(text.contains("bitfleet_claimed_jobs_total 8"))
        #expect(text.contains("bitfleet_busy_slots 3"))
        #expect(text.contains("# TYPE bitfleet_job_phase_seconds histogram"))
        #expect(text.contains("bitfleet_job_phase_seconds_count{phase=\"infer\"} 1"))
        // 3 ms falls in the 5 ms bucket but not the 2.5 ms one; the buckets are WorkerMetrics.phaseBuckets.
        #expect(text.contains("bitfleet_job_phase_seconds_bucket{phase=\"infer\",le=\"0.0025\"} 0"), "\(text)")
        #expect(text.contains("bitfleet_job_phase_seconds_bucket{phase=\"infer\",le=\"0.005\"} 1"))
        #expect(text.contains("bitfleet_job_phase_seconds_bucket{phase=\"infer\",le=\"120.0\"} 1")
                || text.contains("bitfleet_job_phase_seconds_bucket{phase=\"infer\",le=\"120\"} 1"))
        #expect(text.contains("bitfleet_claim_seconds_count 1"))
        #expect(text.contains("bitfleet_claim_jobs_bucket{le=\"8.0\"} 1") || text.contains("bitfleet_claim_jobs_bucket{le=\"8\"} 1"))

        metrics.jobFinished(outcome: "succeeded")
        metrics.busySlots(0)
        let again = try Self.get(server.port, "/metrics").body
        #expect(again.contains("bitfleet_jobs_total{outcome=\"succeeded\"} 3"))
        #expect(again.contains("bitfleet_busy_slots 0"))
    }

    @Test func garbageSlowAndOversizedClientsDoNotStopTheServer() throws {
        let server = try Self.server(ready: Flag(), timeout: 0.5)
        defer { server.stop() }

        // Binary garbage with a blank line: 400.
        #expect(try Self.request(server.port, "\u{1}\u{2}\u{3} \u{ff}\r\n\r\n").status == 400)
        // Not HTTP at all.
        #expect(try Self.request(server.port, "hello\r\n\r\n").status == 400)
        // Headers larger than the cap: 431, without waiting for the end.
        let big = "GET /healthz HTTP/1.1\r\n" + String(repeating: "X-Pad: " + String(repeating: "a", count: 1000) + "\r\n", count: 20)
        #expect(try Self.request(server.port, big).status == 431)
        // A client that sends half a request and closes: the server just closes.
        let half = try Self.connect(server.port)
        Self.send(half, Array("GET /hea".utf8))
        close(half)
        // A client that connects and sends nothing holds one connection until the timeout; others are served meanwhile.
        let silent = try Self.connect(server.port)
        let slow = try Self.connect(server.port)
        Self.send(slow, Array("GET /healthz HTTP/1.1\r\n".utf8))
        let start = Date()
        #expect(try Self.get(server.port, "/healthz").status == 200)
        #expect(Date().timeIntervalSince(start) < 0.4)
        // The slow client gets 408 once its time is up; the silent one is closed without a word.
        #expect(Self.parse(Self.readAll(slow)).status == 408)
        #expect(Self.readAll(silent).isEmpty)
        close(slow)
        close(silent)
        // Random bytes, many times.
        var generator = SplitMix64(state: 99)
        for _ in 0..<20 {
            let fd = try Self.connect(server.port)
            Self.send(fd, (0..<Int.random(in: 1...300, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) })
            shutdown(fd, Int32(SHUT_WR))
            _ = Self.readAll(fd)
            close(fd)
        }
        #expect(try Self.get(server.port, "/healthz").status == 200)
    }

    @Test func stopClosesThePortAndPortsInUseAreRefused() throws {
        let server = try Self.server(ready: Flag())
        let port = server.port
        #expect(try Self.get(port, "/healthz").status == 200)
        #expect(throws: HealthServerError.self) {
            _ = try HealthServer(port: port, host: "127.0.0.1", ready: { true }, metrics: { "" })
        }
        let start = Date()
        server.stop()
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(throws: TestError.self) { _ = try Self.connect(port) }
        server.stop()  // twice is fine
    }
}
