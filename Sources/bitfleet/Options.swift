import ArgumentParser
import BitFleetPostgres
import Foundation
import Synchronization

/// `--database-url`, falling back to `DATABASE_URL`, then to libpq's own `PG*` variables.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("database-url"),
            help: "libpq connection URL (default: $DATABASE_URL, else libpq's PG* variables).")
    var databaseURL: String?

    var resolvedURL: String? {
        databaseURL ?? ProcessInfo.processInfo.environment["DATABASE_URL"]
    }

    func connect(_ applicationName: String = "bitfleet-cli") throws -> PostgresConnection {
        try ConnectionString.validate(resolvedURL)  // a clear message, without the password
        return try PostgresConnection(url: resolvedURL, applicationName: applicationName)
    }
}

/// The options every command that reads or writes the fleet's tables shares: where the database is, and `--json`.
/// (Commands that print no table take `ConnectionOptions` alone.)
struct FleetOptions: ParsableArguments {
    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Print JSON for scripts instead of a table.")
    var json = false

    func connect(_ applicationName: String = "bitfleet-cli") throws -> PostgresConnection {
        try connection.connect(applicationName)
    }
}

/// Environment values that did not parse (`BITFLEET_CONCURRENCY=eight`): commands that read them refuse to run.
let environmentProblems = Mutex<[String]>([])

/// Reads an environment variable as the default of an option that was not given. A value that does not parse is
/// recorded in `environmentProblems` (and `checkEnvironment()` turns it into an error), never silently replaced.
func environment<T: LosslessStringConvertible>(_ name: String, _ fallback: T) -> T {
    guard let text = ProcessInfo.processInfo.environment[name] else { return fallback }
    guard let value = T(text.trimmingCharacters(in: .whitespaces)) else {
        environmentProblems.withLock {
            let problem = "\(name)=\(text) is not a valid \(T.self == Int.self ? "whole number" : T.self == Double.self ? "number" : "\(T.self)")"
            if !$0.contains(problem) { $0.append(problem) }
        }
        return fallback
    }
    return value
}

/// Throws when an environment value an option read did not parse.
func checkEnvironment() throws {
    let problems = environmentProblems.withLock { $0 }
    if !problems.isEmpty { throw ValidationError(problems.joined(separator: "; ")) }
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

/// A boolean environment variable: 1/true/yes/on or 0/false/no/off (anything else is recorded as a problem).
func environmentFlag(_ name: String) -> Bool {
    guard let text = ProcessInfo.processInfo.environment[name]?.lowercased() else { return false }
    switch text.trimmingCharacters(in: .whitespaces) {
    case "1", "true", "yes", "on": return true
    case "0", "false", "no", "off", "": return false
    default:
        environmentProblems.withLock { $0.append("\(name)=\(text) is not 1/0/true/false") }
        return false
    }
}
