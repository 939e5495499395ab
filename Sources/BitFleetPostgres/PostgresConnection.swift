import CLibPQ
#if canImport(Glibc)
import Glibc
#endif

/// A value sent as a query parameter, in Postgres text format. Values always travel apart from the SQL text
/// (`PQexecParams`), so no value is ever spliced into a statement.
public protocol PostgresEncodable {
    var postgresText: String { get }
}

extension String: PostgresEncodable { public var postgresText: String { self } }
extension Substring: PostgresEncodable { public var postgresText: String { String(self) } }
extension Int: PostgresEncodable { public var postgresText: String { String(self) } }
extension Int32: PostgresEncodable { public var postgresText: String { String(self) } }
extension Int64: PostgresEncodable { public var postgresText: String { String(self) } }
extension Bool: PostgresEncodable { public var postgresText: String { self ? "true" : "false" } }
extension Double: PostgresEncodable {
    public var postgresText: String { isFinite ? "\(self)" : (isNaN ? "NaN" : (self > 0 ? "Infinity" : "-Infinity")) }
}

/// `text[]` / `bigint[]` parameters, written as array literals with every element quoted and escaped.
extension Array: PostgresEncodable where Element: PostgresEncodable {
    public var postgresText: String {
        // Two passes over the elements' text: the exact length (each '"' and '\\' takes an escape), then one
        // write into the string's own storage. The worker sends its jobs' result documents this way, tens of
        // kilobytes of JSON full of quotes per statement: a byte-by-byte append cost more than the rest of the write.
        let texts = map(\.postgresText)
        var length = 2 + Swift.max(0, texts.count - 1)
        for var text in texts {
            text.withUTF8 { utf8 in
                var escapes = 0
                for byte in utf8 where byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { escapes &+= 1 }
                length += utf8.count + escapes + 2
            }
        }
        return String(unsafeUninitializedCapacity: length) { out in
            var at = 0
            out[at] = UInt8(ascii: "{"); at += 1
            for index in texts.indices {
                if index > 0 { out[at] = UInt8(ascii: ","); at += 1 }
                out[at] = UInt8(ascii: "\""); at += 1
                var text = texts[index]
                text.withUTF8 { utf8 in
                    for byte in utf8 {
                        if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out[at] = UInt8(ascii: "\\"); at &+= 1 }
                        out[at] = byte
                        at &+= 1
                    }
                }
                out[at] = UInt8(ascii: "\""); at += 1
            }
            out[at] = UInt8(ascii: "}"); at += 1
            return at
        }
    }
}

/// An optional parameter: `nil` is SQL NULL.
public typealias PostgresBind = (any PostgresEncodable)?

/// A notification received on a channel the connection listens to.
public struct PostgresNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String
    public var senderPID: Int32
}

/// One libpq connection. It is owned by one thread at a time: create it on the thread that uses it. libpq calls
/// block, so never use it from Swift's cooperative thread pool.
public final class PostgresConnection {
    private var handle: OpaquePointer?
    private let url: String?
    private let applicationName: String

    /// Connects with a libpq URL or `key=value` string; `nil` or empty uses libpq's `PG*` environment variables.
    public init(url: String?, applicationName: String = "bitfleet", connectTimeout: Int = 10) throws(PostgresError) {
        self.url = url
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
        try connect()
    }

    private let connectTimeout: Int

    deinit {
        if let handle { PQfinish(handle) }
    }

    private func connect() throws(PostgresError) {
        if let handle { PQfinish(handle) }
        handle = nil
        // Later keywords override what the expanded URL says, earlier ones are defaults it may override.
        let pairs: [(String, String)] = [
            ("application_name", applicationName),
            ("connect_timeout", String(connectTimeout)),
            ("keepalives", "1"),
            ("keepalives_idle", "10"),
            ("keepalives_interval", "5"),
            ("keepalives_count", "3"),
            // Data unacknowledged this long means the server is gone (a cut link): fail instead of blocking.
            ("tcp_user_timeout", "20000"),
            ("dbname", url ?? ""),
        ]
        let keys = pairs.map { strdup($0.0) }
        let values = pairs.map { strdup($0.1) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keyPointers = keys.map { UnsafePointer<CChar>($0) } + [nil]
        var valuePointers = values.map { UnsafePointer<CChar>($0) } + [nil]
        let connection = keyPointers.withUnsafeMutableBufferPointer { k in
            valuePointers.withUnsafeMutableBufferPointer { v in
                PQconnectdbParams(k.baseAddress, v.baseAddress, 1)
            }
        }
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            // libpq quotes a connection string it cannot use, password and all: never pass that on.
            let message = ConnectionString.redact(PostgresError.connectionMessage(connection), in: url)
            if let connection { PQfinish(connection) }
            throw PostgresError(kind: .connection, message: "could not connect: \(message)")
        }
        // Server notices ("schema already exists, skipping") are not errors; keep them off the user's terminal.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        handle = connection
    }

    /// Drops the connection and connects again (after a server restart or a terminated backend).
    public func reconnect() throws(PostgresError) { try connect() }

    /// True while libpq believes the connection is usable.
    public var isConnected: Bool { handle.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// The server process id serving this connection (for `pg_terminate_backend` in tests and chaos runs).
    public var backendPID: Int32 { handle.map { PQbackendPID($0) } ?? 0 }

    /// Runs one parameterised statement and reads its rows, all values as text.
    @discardableResult
    public func query(_ sql: String, _ parameters: [PostgresBind] = []) throws(PostgresError) -> PostgresRows {
        guard let handle else { throw PostgresError(kind: .connection, message: "not connected") }
        let texts: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.map { strdup($0.postgresText) } ?? nil }
        defer { texts.forEach { free($0) } }
        let result: OpaquePointer? = texts.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer { values in
            PQexecParams(handle, sql, Int32(values.count), nil, values.baseAddress, nil, nil, 0)
        }
        return try Self.read(result, connection: handle)
    }

    /// Runs a script of several statements with no parameters (migrations).
    public func execute(script sql: String) throws(PostgresError) {
        guard let handle else { throw PostgresError(kind: .connection, message: "not connected") }
        var result = PQexec(handle, sql)
        defer { PQclear(result) }
        // PQexec returns the last statement's result; an error stops the script.
        let status = PQresultStatus(result)
        if status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK {
            let error = PostgresError.from(result: result, connection: handle)
            result = nil
            throw error
        }
    }

    /// Runs `body` inside BEGIN … COMMIT; any thrown error rolls back and is rethrown.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try query("BEGIN")
        do {
            let value = try body()
            try query("COMMIT")
            return value
        } catch {
            if isConnected { _ = try? query("ROLLBACK") }
            throw error
        }
    }

    /// Starts listening on a channel (an identifier, quoted here with libpq's own escaping).
    public func listen(_ channel: String) throws(PostgresError) {
        guard let handle else { throw PostgresError(kind: .connection, message: "not connected") }
        guard let quoted = PQescapeIdentifier(handle, channel, channel.utf8.count) else {
            throw PostgresError.from(result: nil, connection: handle)
        }
        defer { PQfreemem(quoted) }
        try query("LISTEN " + String(cString: quoted))
    }

    /// Waits up to `timeout` seconds for notifications and returns those that arrived (possibly none).
    public func waitForNotifications(timeout: Double) throws(PostgresError) -> [PostgresNotification] {
        guard let handle else { throw PostgresError(kind: .connection, message: "not connected") }
        var received = try drainNotifications(handle)
        if !received.isEmpty { return received }
        var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        guard descriptor.fd >= 0 else { throw PostgresError(kind: .connection, message: "connection has no socket") }
        let ready = poll(&descriptor, 1, Int32(max(0, timeout * 1000)))
        if ready < 0 && errno != EINTR {
            throw PostgresError(kind: .connection, message: "poll failed: errno \(errno)")
        }
        received = try drainNotifications(handle)
        return received
    }

    private func drainNotifications(_ handle: OpaquePointer) throws(PostgresError) -> [PostgresNotification] {
        guard PQconsumeInput(handle) == 1 else {
            throw PostgresError(kind: .connection, message: PostgresError.connectionMessage(handle))
        }
        var notifications: [PostgresNotification] = []
        while let notify = PQnotifies(handle) {
            notifications.append(PostgresNotification(
                channel: String(cString: notify.pointee.relname),
                payload: String(cString: notify.pointee.extra),
                senderPID: notify.pointee.be_pid))
            PQfreemem(notify)
        }
        return notifications
    }

    private static func read(_ result: OpaquePointer?, connection: OpaquePointer) throws(PostgresError) -> PostgresRows {
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard result != nil, status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            throw PostgresError.from(result: result, connection: connection)
        }
        let columnCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        var columns: [String] = []
        columns.reserveCapacity(columnCount)
        for column in 0..<columnCount {
            columns.append(String(cString: PQfname(result, Int32(column))))
        }
        var values: [String?] = []
        values.reserveCapacity(rowCount * columnCount)
        for row in 0..<rowCount {
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, Int32(row), Int32(column))))
                }
            }
        }
        let affected = String(cString: PQcmdTuples(result))
        return PostgresRows(columns: columns, values: values, affectedRows: Int(affected) ?? 0)
    }
}
