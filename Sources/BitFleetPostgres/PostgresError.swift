import CLibPQ

/// An error from libpq or the server, carrying the server's SQLSTATE when there is one.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The connection could not be made or was lost: retry after reconnecting.
        case connection
        /// The server rejected a statement (see `sqlState`).
        case server
        /// A value could not be read as the requested type.
        case decoding
        /// The connection string itself is wrong (libpq cannot parse it): retrying cannot help.
        case configuration
    }

    public var kind: Kind
    /// Five-character SQLSTATE code (`23505` unique violation, `40001` serialization failure, …).
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(kind: Kind, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    /// True when the statement may succeed on a fresh connection or a second try.
    public var isTransient: Bool {
        if kind == .connection { return true }
        guard let state = sqlState else { return false }
        // 08 connection exception, 40001/40P01 serialization/deadlock, 57P01..57P03 admin shutdown / crash / cannot connect now
        return state.hasPrefix("08") || state == "40001" || state == "40P01" || state.hasPrefix("57P")
    }

    public var description: String {
        var text = sqlState.map { "postgres error \($0): \(message)" } ?? "postgres: \(message)"
        if let detail { text += " (detail: \(detail))" }
        if let hint { text += " (hint: \(hint))" }
        return text
    }

    static func from(result: OpaquePointer?, connection: OpaquePointer?) -> PostgresError {
        guard let result else {
            return PostgresError(kind: .connection, message: connectionMessage(connection))
        }
        func field(_ code: Int32) -> String? {
            guard let value = PQresultErrorField(result, code) else { return nil }
            return String(cString: value)
        }
        let state = field(Int32(UInt8(ascii: "C")))  // PG_DIAG_SQLSTATE
        let primary = field(Int32(UInt8(ascii: "M"))) ?? String(cString: PQresultErrorMessage(result)).trimmed
        let lost = connection.map { PQstatus($0) != CONNECTION_OK } ?? true
        return PostgresError(
            kind: (state == nil && lost) ? .connection : .server,
            sqlState: state,
            message: primary.isEmpty ? connectionMessage(connection) : primary,
            detail: field(Int32(UInt8(ascii: "D"))),
            hint: field(Int32(UInt8(ascii: "H")))
        )
    }

    static func connectionMessage(_ connection: OpaquePointer?) -> String {
        guard let connection, let text = PQerrorMessage(connection) else { return "connection lost" }
        let message = String(cString: text).trimmed
        return message.isEmpty ? "connection lost" : message
    }
}

extension String {
    var trimmed: String {
        var text = Substring(self)
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        return String(text)
    }
}
