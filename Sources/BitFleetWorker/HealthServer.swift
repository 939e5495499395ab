import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The worker's probe and metrics endpoint: a tiny HTTP/1.1 server on POSIX sockets, served by one thread of its
/// own (never the cooperative pool), so it answers even while every slot is busy in libpq, libcurl or the engine.
///
/// - `GET /healthz` → 200 `ok` (the process is alive and serving)
/// - `GET /readyz`  → 200 `ready` or 503 `not ready`, from `ready()` (database connected, not draining)
/// - `GET /metrics` → 200, Prometheus text format from `metrics()`
/// - anything else  → 404 (405 for methods other than GET/HEAD, 400 for what is not HTTP)
///
/// One connection = one request (`Connection: close`). Idle or slow clients cannot starve the kubelet's probes
/// (which would get the worker restarted): connections are non-blocking and multiplexed with `poll`, so a slow one
/// costs a file descriptor, not a thread; each gets `requestTimeout` seconds in total to send at most
/// `maxHeaderBytes` of headers (408 / 431 otherwise) and as long again to take its answer; and a new connection is
/// always admitted: when its peer address already holds `maxConnectionsPerPeer` connections, or the server holds
/// `maxConnections`, the oldest connection that has not yet sent a whole request (that peer's first) is closed
/// to make room. A probe sends its request at once, so it is answered before anyone can push it out.
public final class HealthServer: Sendable {
    /// The port actually bound (useful with port 0, which picks a free one).
    public let port: Int
    /// The address bound ("0.0.0.0", "::", "10.1.2.3", …).
    public let host: String
    public let requestTimeout: Double
    public let maxHeaderBytes: Int
    public let maxConnections: Int
    public let maxConnectionsPerPeer: Int

    private let listener: Int32
    private let ready: @Sendable () -> Bool
    private let metrics: @Sendable () -> String
    private let state = Mutex(State())
    private let loopDone = DispatchSemaphore(value: 0)

    private struct State {
        var started = false
        var stopping = false
        var closed = false
        var evicted = 0
    }

    /// Connections closed to make room for newer ones (idle or slow clients pushed out).
    public var evictedConnections: Int { state.withLock { $0.evicted } }

    /// Binds and listens at once (so a port in use fails here, loudly); serving begins with `start()`.
    /// - Parameters:
    ///   - port: TCP port; 0 picks a free one (see `port`).
    ///   - host: IPv4 or IPv6 address to bind; the default, all IPv4 interfaces, is what Kubernetes probes need.
    ///     "::" binds every IPv6 and IPv4 interface; "127.0.0.1" keeps the endpoint on the machine.
    public init(port: Int, host: String = "0.0.0.0", requestTimeout: Double = 2, maxHeaderBytes: Int = 8192,
                maxConnections: Int = 512, maxConnectionsPerPeer: Int = 16, ready: @escaping @Sendable () -> Bool,
                metrics: @escaping @Sendable () -> String) throws {
        guard (0...65535).contains(port) else { throw HealthServerError("port \(port) is not 0…65535") }
        guard maxConnections >= 1, maxConnectionsPerPeer >= 1, requestTimeout > 0 else {
            throw HealthServerError("maxConnections, maxConnectionsPerPeer and requestTimeout must be positive")
        }
        self.host = host
        self.requestTimeout = requestTimeout
        self.maxHeaderBytes = maxHeaderBytes
        self.maxConnections = maxConnections
        self.maxConnectionsPerPeer = maxConnectionsPerPeer
        self.ready = ready
        self.metrics = metrics

        var v4 = sockaddr_in()
        var v6 = sockaddr_in6()
        let family: Int32
        if inet_pton(AF_INET, host, &v4.sin_addr) == 1 {
            family = AF_INET
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(port)).bigEndian
        } else if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            family = AF_INET6
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(port)).bigEndian
        } else {
            throw HealthServerError("not an IPv4 or IPv6 address: \(host)")
        }
        #if canImport(Glibc) || canImport(Musl)
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(family, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw HealthServerError("socket: \(Self.errnoText())") }
        var one: Int32 = 1
        var zero: Int32 = 0
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if family == AF_INET6 {
            // "::" serves IPv4 too (as ::ffff:a.b.c.d); a specific IPv6 address only itself.
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, socklen_t(MemoryLayout<Int32>.size))
        }
        let bound = family == AF_INET
            ? withUnsafePointer(to: &v4) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            : withUnsafePointer(to: &v6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        guard bound == 0 else {
            let text = Self.errnoText()
            close(fd)
            throw HealthServerError("bind \(host):\(port): \(text)")
        }
        guard listen(fd, 1024) == 0 else {
            let text = Self.errnoText()
            close(fd)
            throw HealthServerError("listen: \(text)")
        }
        Self.setNonBlocking(fd)
        var actual = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = Self.address(of: actual).port
        self.listener = fd
    }

    deinit {
        let closed = state.withLock { $0.closed }
        if !closed { close(listener) }
    }

    /// Starts the serving thread. Calling it again does nothing.
    public func start() {
        let first = state.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started && !state.stopping
        }
        guard first else { return }
        let thread = Thread { [self] in
            eventLoop()
            loopDone.signal()
        }
        thread.name = "bitfleet-health"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Stops serving (within about 0.2 s), closes every connection and the port.
    public func stop() {
        let (wasRunning, alreadyClosed) = state.withLock { state -> (Bool, Bool) in
            defer { state.stopping = true }
            return (state.started && !state.stopping, state.closed || state.stopping)
        }
        if wasRunning { loopDone.wait() }
        if !alreadyClosed {
            state.withLock { $0.closed = true }
            close(listener)
        }
    }

    // MARK: - Serving

    private var isStopping: Bool { state.withLock { $0.stopping } }

    /// One client connection and where it is in its single request.
    private final class Connection {
        enum Phase { case reading, writing, draining }
        let fd: Int32
        let peer: String
        let serial: Int
        var phase = Phase.reading
        var deadline: Double
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var drained = 0
        init(fd: Int32, peer: String, serial: Int, deadline: Double) {
            self.fd = fd
            self.peer = peer
            self.serial = serial
            self.deadline = deadline
        }
    }

    private func eventLoop() {
        var connections: [Connection] = []
        var serial = 0
        var chunk = [UInt8](repeating: 0, count: 4096)
        defer { for c in connections { close(c.fd) } }
        while !isStopping {
            var descriptors = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
            for c in connections {
                descriptors.append(pollfd(fd: c.fd, events: Int16(c.phase == .writing ? POLLOUT : POLLIN), revents: 0))
            }
            let now = WorkerClock.monotonic()
            let nearest = connections.map(\.deadline).min().map { max(0, $0 - now) } ?? 0.2
            let waited = poll(&descriptors, nfds_t(descriptors.count), Int32(min(0.2, nearest) * 1000) + 1)
            if waited < 0 && errno != EINTR { break }
            let after = WorkerClock.monotonic()
            var closing = Set<Int32>()
            for (index, c) in connections.enumerated() {
                let events = descriptors[index + 1].revents
                if after >= c.deadline {
                    // Checked first: a client that keeps dripping bytes must not keep its connection forever.
                    if !expire(c, now: after) { closing.insert(c.fd) }
                } else if events != 0 {
                    if !step(c, events: events, chunk: &chunk, now: after) { closing.insert(c.fd) }
                }
            }
            if !closing.isEmpty {
                connections.removeAll { c in
                    guard closing.contains(c.fd) else { return false }
                    close(c.fd)
                    return true
                }
            }
            if descriptors[0].revents & Int16(POLLIN) != 0 {
                acceptPending(into: &connections, serial: &serial, now: after)
            }
        }
    }

    /// Accepts what is waiting (at most 64 per round, so reads are not starved), making room as documented.
    private func acceptPending(into connections: inout [Connection], serial: inout Int, now: Double) {
        for _ in 0..<64 {
            var peer = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let client = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listener, $0, &length) }
            }
            if client < 0 { return }
            Self.setNonBlocking(client)
            #if canImport(Darwin)
            var one: Int32 = 1
            setsockopt(client, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
            #endif
            let address = Self.address(of: peer).host
            let samePeer = connections.filter { $0.peer == address }
            if samePeer.count >= maxConnectionsPerPeer {
                evictOldest(samePeer, from: &connections)
            }
            if connections.count >= maxConnections {
                evictOldest(connections, from: &connections)
            }
            serial += 1
            connections.append(Connection(fd: client, peer: address, serial: serial, deadline: now + requestTimeout))
        }
    }

    /// Closes the oldest of `candidates` that is still waiting for its request (else the oldest of all).
    private func evictOldest(_ candidates: [Connection], from connections: inout [Connection]) {
        guard let victim = candidates.filter({ $0.phase == .reading }).min(by: { $0.serial < $1.serial })
                ?? candidates.min(by: { $0.serial < $1.serial }) else { return }
        close(victim.fd)
        connections.removeAll { $0 === victim }
        state.withLock { $0.evicted += 1 }
    }

    /// Handles readiness of one connection; false when it is finished and must be closed.
    private func step(_ c: Connection, events: Int16, chunk: inout [UInt8], now: Double) -> Bool {
        switch c.phase {
        case .reading:
            let n = chunk.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
            if n == 0 {
                // EOF before a full head: answer what can be parsed (a bare request line), else just close.
                if c.input.isEmpty { return false }
                respond(c, to: .error(status: 400), now: now)
                return true
            }
            c.input += chunk[..<n]
            if let end = Self.headerEnd(c.input) {
                respond(c, to: Self.parse(Array(c.input[..<end])), now: now)
            } else if c.input.count > maxHeaderBytes {
                respond(c, to: .error(status: 431), now: now)
            }
            return true
        case .writing:
            if events & Int16(POLLERR | POLLHUP) != 0 && events & Int16(POLLOUT) == 0 { return false }
            let n = c.output.withUnsafeBytes { raw in
                send(c.fd, raw.baseAddress! + c.written, raw.count - c.written, Self.sendFlags)
            }
            if n < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
            c.written += n
            if c.written == c.output.count {
                // Read what the client still sends before closing: closing with unread input makes the kernel
                // send a reset, which can destroy the response before the client has read it.
                shutdown(c.fd, Int32(SHUT_WR))
                c.phase = .draining
                c.deadline = now + 0.2
            }
            return true
        case .draining:
            let n = chunk.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
            c.drained += max(0, n)
            return n > 0 && c.drained < 65536
        }
    }

    /// A connection's time is up; false when it must be closed now.
    private func expire(_ c: Connection, now: Double) -> Bool {
        guard c.phase == .reading, !c.input.isEmpty else { return false }   // silent clients: closed without a word
        respond(c, to: .error(status: 408), now: now)
        return true
    }

    private func respond(_ c: Connection, to request: Request, now: Double) {
        c.output = response(to: request)
        c.input = []
        c.phase = .writing
        c.deadline = now + requestTimeout
    }

    /// What a request asked for, or why it could not be read.
    enum Request: Equatable {
        case get(path: String, head: Bool)
        case error(status: Int)
        case closed
    }

    private func response(to request: Request) -> [UInt8] {
        let (status, contentType, body, head): (Int, String, String, Bool)
        switch request {
        case .closed:
            return []
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
        return out
    }

    private static var sendFlags: Int32 {
        #if canImport(Glibc) || canImport(Musl)
        Int32(MSG_NOSIGNAL)
        #else
        0
        #endif
    }

    private static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL, 0)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    private static func text(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Host text and port of a socket address.
    private static func address(of storage: sockaddr_storage) -> (host: String, port: Int) {
        var storage = storage
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        if Int32(storage.ss_family) == AF_INET {
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    inet_ntop(AF_INET, &a, &text, socklen_t(text.count))
                    return (Self.text(text), Int(UInt16(bigEndian: sin.pointee.sin_port)))
                }
            }
        }
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                var a = sin6.pointee.sin6_addr
                inet_ntop(AF_INET6, &a, &text, socklen_t(text.count))
                return (Self.text(text), Int(UInt16(bigEndian: sin6.pointee.sin6_port)))
            }
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
