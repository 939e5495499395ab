import ArgumentParser
import BitFleetPostgres
import Foundation

/// `--database-url`, falling back to `DATABASE_URL`, then to libpq's own `PG*` variables.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("database-url"),
            help: "libpq connection URL (default: $DATABASE_URL, else libpq's PG* variables).")
    var databaseURL: String?

    var resolvedURL: String? {
        databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"]
    }

    func connect(_ applicationName: String = "bitfleet-cli") throws -> PostgresConnection {
        try PostgresConnection(url: resolvedURL, applicationName: applicationName)
    }
}

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON for scripts instead of a table.")
    var json = false
}

/// Reads an environment variable as the default of an option that was not given.
func environment<T: LosslessStringConvertible>(_ name: String, _ fallback: T) -> T {
    ProcessInfo.processInfo.environment[name].flatMap(T.init) ?? fallback
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// A plain text table: columns padded to their widest cell, numbers right-aligned.
func printTable(_ columns: [String], _ rows: [[String?]]) {
    let cells = rows.map { $0.map { $0 ?? "" } }
    var widths = columns.map(\.count)
    for row in cells {
        for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
    }
    func isNumber(_ text: String) -> Bool { !text.isEmpty && Double(text) != nil }
    func line(_ values: [String]) -> String {
        values.enumerated().map { index, value in
            let pad = String(repeating: " ", count: widths[index] - value.count)
            return isNumber(value) ? pad + value : value + pad
        }.joined(separator: "  ")
    }
    print(line(columns))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    cells.forEach { print(line($0)) }
}

/// Rounds text numbers for humans (tables); JSON and CSV keep full precision.
func humanize(_ value: String?) -> String? {
    guard let value, value.contains("."), let number = Double(value) else { return value }
    if number == 0 { return "0" }
    let magnitude = abs(number)
    let digits = magnitude >= 100 ? 1 : magnitude >= 1 ? 3 : 6
    return String(format: "%.\(digits)f", number)
}
