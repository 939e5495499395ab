/// The rows of one result, copied out of libpq (all values in text format).
public struct PostgresRows: Sendable, RandomAccessCollection {
    public let columns: [String]
    let values: [String?]
    /// Rows changed by an INSERT/UPDATE/DELETE (from the command tag).
    public let affectedRows: Int

    init(columns: [String], values: [String?], affectedRows: Int) {
        self.columns = columns
        self.values = values
        self.affectedRows = affectedRows
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { columns.isEmpty ? 0 : values.count / columns.count }
    public subscript(position: Int) -> PostgresRow { PostgresRow(rows: self, index: position) }
}

/// One row; read a column by name with a typed accessor, which throws when the value does not parse.
public struct PostgresRow: Sendable {
    let rows: PostgresRows
    let index: Int

    /// The raw text value, `nil` for SQL NULL.
    public subscript(column: String) -> String? {
        guard let position = rows.columns.firstIndex(of: column) else { return nil }
        return rows.values[index * rows.columns.count + position]
    }

    /// Column names in result order.
    public var columns: [String] { rows.columns }

    public func string(_ column: String) throws(PostgresError) -> String {
        guard let value = try optionalValue(column) else { throw Self.null(column) }
        return value
    }

    public func optionalString(_ column: String) throws(PostgresError) -> String? { try optionalValue(column) }

    public func int(_ column: String) throws(PostgresError) -> Int {
        guard let value = try optionalInt(column) else { throw Self.null(column) }
        return value
    }

    public func optionalInt(_ column: String) throws(PostgresError) -> Int? {
        guard let text = try optionalValue(column) else { return nil }
        guard let value = Int(text) else { throw Self.bad(column, text, "an integer") }
        return value
    }

    public func double(_ column: String) throws(PostgresError) -> Double {
        guard let value = try optionalDouble(column) else { throw Self.null(column) }
        return value
    }

    public func optionalDouble(_ column: String) throws(PostgresError) -> Double? {
        guard let text = try optionalValue(column) else { return nil }
        guard let value = Double(text) else { throw Self.bad(column, text, "a number") }
        return value
    }

    public func bool(_ column: String) throws(PostgresError) -> Bool {
        switch try string(column) {
        case "t", "true": return true
        case "f", "false": return false
        case let text: throw Self.bad(column, text, "a boolean")
        }
    }

    private func optionalValue(_ column: String) throws(PostgresError) -> String? {
        guard let position = rows.columns.firstIndex(of: column) else {
            throw PostgresError(kind: .decoding, message: "no column \"\(column)\" in result (\(rows.columns.joined(separator: ", ")))")
        }
        return rows.values[index * rows.columns.count + position]
    }

    private static func null(_ column: String) -> PostgresError {
        PostgresError(kind: .decoding, message: "column \"\(column)\" is NULL")
    }

    private static func bad(_ column: String, _ text: String, _ expected: String) -> PostgresError {
        PostgresError(kind: .decoding, message: "column \"\(column)\" holds \"\(text.prefix(40))\", not \(expected)")
    }
}
