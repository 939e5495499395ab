import BitFleetPostgres
import Foundation

/// The repository root, found from this file's path.
public let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

public struct TestSetupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A fresh database in the throwaway cluster that `Ops/test.sh` starts (`BITFLEET_TEST_DATABASE_URL`).
/// Each test gets its own database, so tests run in parallel without seeing each other's jobs.
/// Without the variable the test fails (it never skips): run the tests through `Ops/test.sh`.
public struct TestDatabase: Sendable {
    public let url: String
    public let name: String

    public static func create(migrate: ((PostgresConnection) throws -> Void)? = nil) throws -> TestDatabase {
        guard let admin = ProcessInfo.processInfo.environment["BITFLEET_TEST_DATABASE_URL"], !admin.isEmpty else {
            throw TestSetupError("BITFLEET_TEST_DATABASE_URL is not set: run the tests with Ops/test.sh, which starts a throwaway PostgreSQL cluster")
        }
        guard let range = admin.range(of: "/postgres?") ?? admin.range(of: "/postgres", options: .backwards) else {
            throw TestSetupError("BITFLEET_TEST_DATABASE_URL must name the postgres database: \(admin)")
        }
        let name = "bitfleet_test_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let connection = try PostgresConnection(url: admin)
        try connection.query("CREATE DATABASE " + name)  // name is generated here, never user input
        let url = admin.replacingCharacters(in: range, with: admin[range].hasSuffix("?") ? "/\(name)?" : "/\(name)")
        let database = TestDatabase(url: url, name: name)
        if let migrate { try migrate(try database.connect()) }
        return database
    }

    public func connect() throws -> PostgresConnection {
        try PostgresConnection(url: url, applicationName: "bitfleet-test")
    }
}

/// `Ops/testing/http_fixture.py`: a real HTTP server on loopback serving a directory plus error routes.
public final class HTTPFixture: @unchecked Sendable {
    public let port: Int
    public let root: URL
    private let process: Process
    private let stdin: Pipe

    public init(root: URL) throws {
        self.root = root
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", repositoryRoot.appendingPathComponent("Ops/testing/http_fixture.py").path,
                             "--root", root.path, "--port", "0"]
        let stdout = Pipe()
        stdin = Pipe()
        process.standardOutput = stdout
        process.standardInput = stdin
        try process.run()
        var line = Data()
        while true {
            let byte = stdout.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty || byte == Data("\n".utf8) { break }
            line.append(byte)
        }
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5)) else {
            process.terminate()
            throw TestSetupError("http_fixture.py did not report a port (got \"\(text)\")")
        }
        self.port = port
    }

    public func url(_ path: String) -> String { "http://127.0.0.1:\(port)/\(path)" }

    deinit {
        try? stdin.fileHandleForWriting.close()
        process.terminate()
        process.waitUntilExit()
    }
}

/// Runs a command and returns its standard output; throws with its standard error when it fails.
@discardableResult
public func run(_ arguments: [String], in directory: URL = repositoryRoot) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.currentDirectoryURL = directory
    let output = Pipe()
    let error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw TestSetupError("\(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(String(decoding: errorData, as: UTF8.self))")
    }
    return String(decoding: data, as: UTF8.self)
}

/// A new empty temporary directory.
public func temporaryDirectory(_ prefix: String = "bitfleet-test") throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Strings collected from several threads.
public final class LockedList: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    public init() {}
    public func add(_ more: [String]) { lock.lock(); items += more; lock.unlock() }
    public var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}
