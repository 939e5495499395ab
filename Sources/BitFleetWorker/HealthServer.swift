import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The worker's probe and metrics endpoint: a tiny HTTP/1.1 server on POSIX sockets, on threads of its own (never
/// the cooperative pool), so it answers even while every slot is busy in libpq, libcurl or the engine.
///
/// - `GET /healthz` → 200 `ok` (the process is alive and serving)
/// - `GET /readyz`  → 200 `ready` or 503 `not ready`, from `ready()` (database connected, not draining)
/// - `GET /metrics` → 200, Prometheus text format from `metrics()`
/// - anything else  → 404 (405 for methods other than GET/HEAD, 400 for what is not HTTP)
///
/// One connection = one request (`Connection: close`). A client gets `requestTimeout` seconds in total to send its
/// headers and at most `maxHeaderBytes` of them (408 / 431 otherwise); at most `maxConnections` are served at once
/// (more are closed at once), so slow or garbage clients cannot stop the probes from being answered.
public final class HealthServer: Sendable {
    /// The port actually bound (useful with port 0, which picks a free one).
    public let port: Int
    public let requestTimeout: Double
    public let maxHeaderBytes: Int
    public let maxConnections: Int

    private let listener: Int32
    private let ready: @Sendable () -> Bool
    private let metrics: @Sendable () -> String
    private let state = Mutex(State())
    private let acceptLoopDone = DispatchSemaphore(value: 0)

    private struct State {
        var started = false
        var stopping = false
        var closed = false
        var connections = 0
    }

    /// Binds and listens at once (so a port in use fails here, loudly); serving begins with `start()`.
    /// - Parameters:
    ///   - port: TCP port; 0 picks a free one (see `port`).
    ///   - host: IPv4 address to bind; the default, all interfaces, is what Kubernetes probes need.
    public init(port: Int, host: String = "0.0.0.0", requestTimeout: Double = 2, maxHeaderBytes: Int = 8192,
                maxConnections: Int = 16, ready: @escaping @Sendable () -> Bool,
                metrics: @escaping @Sendable () -> String) throws {
        guard (0...65535).contains(port) else { throw HealthServerError("port \(port) is not 0…65535") }
        self.requestTimeout = requestTimeout
        self.maxHeaderBytes = maxHeaderBytes
        self.maxConnections = maxConnections
        self.ready = ready
        self.metrics = metrics

        #if canImport(Glibc) || canImport(Musl)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw HealthServerError("socket: \(Self.errnoText())") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port)).bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw HealthServerError("not an IPv4 address: \(host)")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let text = Self.errnoText()
            close(fd)
            throw HealthServerError("bind \(host):\(port): \(text)")
        }
        guard listen(fd, 64) == 0 else {
            let text = Self.errnoText()
            close(fd)
            throw HealthServerError("listen: \(text)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        self.listener = fd
    }

    deinit {
        let closed = state.withLock { $0.closed }
        if !closed { close(listener) }
    }

    /// Starts the accept loop on its own thread. Calling it again does nothing.
    public func start() {
        let first = state.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started && !state.stopping
        }
        guard first else { return }
        let thread = Thread { [self] in
            acceptLoop()
            acceptLoopDone.signal()
        }
        thread.name = "bitfleet-health"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Stops accepting (within about 0.2 s) and closes the port. Requests in progress finish on their own threads.
    public func stop() {
        let (wasRunning, alreadyClosed) = state.withLock { state -> (Bool, Bool) in
            defer { state.stopping = true }
            return (state.started && !state.stopping, state.closed || state.stopping)
        }
        if wasRunning { acceptLoopDone.wait() }
        if !alreadyClosed {
            state.withLock { $0.closed = true }
            close(listener)
        }
    }

    // MARK: - Serving

    private var isStopping: Bool { state.withLock { $0.stopping } }

    private func acceptLoop() {
        while !isStopping {
            var descriptor = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, 200)
            if ready <= 0 { continue }
            let client = accept(listener, nil, nil)
            if client < 0 { continue }
            let admitted = state.withLock { state -> Bool in
                guard state.connections < maxConnections else { return false }
                state.connections += 1
                return true
            }
            guard admitted else {
                close(client)
                continue
            }
            let thread = Thread { [self] in
                serve(client)
                close(client)
                state.withLock { $0.connections -= 1 }
            }
            thread.name = "bitfleet-health-conn"
            thread.stackSize = 512 << 10
            thread.start()
        }
    }

    /// What a request asked for, or why it could not be read.
    enum Request: Equatable {
        case get(path: String, head: Bool)
        case error(status: Int)
        case closed
    }

    private func serve(_ client: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = readRequest(client)
        let (status, contentType, body, head): (Int, String, String, Bool)
        switch request {
        case .closed:
            return
        case .error(let code):
            (status, contentType, body, head) = (code, "text/plain; charset=utf-8", Self.reason(code).lowercased() + "\n", false)
        case .get(let path, let isHead):
            switch path {
            case "/healthz":
                (status, contentType, body, head) = (200, "text/plain; charset=utf-8", "ok\n", isHead)
            case "/readyz":
                let isReady = ready()
                (status, contentType, body, head) = (isReady ? 200 : 503, "text/plain; charset=utf-8",
                                                     isReady ? "ready\n" : "not ready\n", isHead)
            case "/metrics":
                (status, contentType, body, head) = (200, "text/plain; version=0.0.4; charset=utf-8", metrics(), isHead)
            default:
                (status, contentType, body, head) = (404, "text/plain; charset=utf-8", "not found\n", isHead)
            }
        }
        let bytes = Array(body.utf8)
        var response = "HTTP/1.1 \(status) \(Self.reason(status))\r\n"
        response += "Content-Type: \(contentType)\r\nContent-Length: \(bytes.count)\r\n"
        if status == 405 { response += "Allow: GET, HEAD\r\n" }
        response += "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        var out = Array(response.utf8)
        if !head { out += bytes }
        writeAll(client, out)
        shutdown(client, Int32(SHUT_WR))
        lingeringClose(client)
    }

    /// Reads what the client still sends (at most 64 KiB or 0.2 s) before the socket is closed: closing with unread
    /// input makes the kernel send a reset, which can destroy the response before the client has read it.
    private func lingeringClose(_ client: Int32) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        var drained = 0
        let deadline = WorkerClock.monotonic() + 0.2
        while drained < 65536 {
            let remaining = deadline - WorkerClock.monotonic()
            if remaining <= 0 { return }
            var descriptor = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            if poll(&descriptor, 1, Int32(max(1, remaining * 1000))) <= 0 { return }
            let n = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            drained += n
        }
    }

    /// Reads the request head within `requestTimeout` and `maxHeaderBytes`, and parses its request line.
    private func readRequest(_ client: Int32) -> Request {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(1024)
        var chunk = [UInt8](repeating: 0, count: 2048)
        let deadline = WorkerClock.monotonic() + requestTimeout
        while true {
            if let end = Self.headerEnd(buffer) { return Self.parse(Array(buffer[..<end])) }
            if buffer.count > maxHeaderBytes { return .error(status: 431) }
            let remaining = deadline - WorkerClock.monotonic()
            if remaining <= 0 { return buffer.isEmpty ? .closed : .error(status: 408) }
            var descriptor = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            let polled = poll(&descriptor, 1, Int32(max(1, min(remaining * 1000, 1000))))
            if polled < 0 && errno != EINTR { return .closed }
            if polled <= 0 { continue }
            let n = chunk.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if n <= 0 {
                // EOF before a full head: answer what can be parsed (a bare request line), else just close.
                return buffer.isEmpty ? .closed : .error(status: 400)
            }
            buffer += chunk[..<n]
        }
    }

    /// Index just past the blank line that ends an HTTP head ("\r\n\r\n", or "\n\n" from lenient clients).
    static func headerEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 1..<bytes.count where bytes[index] == 10 {
            if bytes[index - 1] == 10 { return index + 1 }
            if index >= 3, bytes[index - 1] == 13, bytes[index - 2] == 10, bytes[index - 3] == 13 { return index + 1 }
        }
        return nil
    }

    static func parse(_ head: [UInt8]) -> Request {
        let lineEnd = head.firstIndex(of: 10) ?? head.count
        var line = head[..<lineEnd]
        if line.last == 13 { line = line.dropLast() }
        guard line.allSatisfy({ $0 >= 32 && $0 < 127 }) else { return .error(status: 400) }
        let parts = String(decoding: line, as: UTF8.self).split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1."), !parts[0].isEmpty, parts[1].hasPrefix("/") else {
            return .error(status: 400)
        }
        guard parts[0] == "GET" || parts[0] == "HEAD" else { return .error(status: 405) }
        let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        return .get(path: String(path), head: parts[0] == "HEAD")
    }

    private func writeAll(_ client: Int32, _ bytes: [UInt8]) {
        var offset = 0
        #if canImport(Glibc) || canImport(Musl)
        let flags = Int32(MSG_NOSIGNAL)
        #else
        let flags: Int32 = 0
        #endif
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(client, $0.baseAddress! + offset, bytes.count - offset, flags) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            offset += n
        }
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 431: "Request Header Fields Too Large"
        case 503: "Service Unavailable"
        default: "Error"
        }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}

public struct HealthServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
