import BitFleetEngine
import BitFleetPostgres
import BitFleetTestSupport
import BitFleetWorker
import Foundation
import Logging

/// A migrated database, a small random model registered as "tiny", and an HTTP server over a temp directory.
final class FleetFixture: @unchecked Sendable {
    static let features = 40
    let database: TestDatabase
    let connection: PostgresConnection
    let client: FleetClient
    let http: HTTPFixture
    let root: URL
    let modelDirectory: URL
    let model: BinaryMoEModel

    init() throws {
        database = try TestDatabase.create { try Schema.migrate($0) }
        connection = try database.connect()
        client = FleetClient(connection: connection)
        root = try temporaryDirectory("bitfleet-worker")
        modelDirectory = root.appendingPathComponent("tiny-model")
        try run(["python3", "Ops/models/random_model.py", modelDirectory.path, "--features", String(Self.features),
                 "--stem", "48", "--experts", "6", "--top-k", "2", "--hidden", "24", "--classes", "5", "--planes", "8",
                 "--seed", "7", "--samples", "16"])
        model = try BinaryMoEModel.load(directory: modelDirectory.path)
        try client.addModel(name: "tiny", version: "1", directory: modelDirectory.path)
        http = try HTTPFixture(root: root)
    }

    deinit {
        try? FileManager.default.removeItem(at: root)   // the model and the files it served
    }

    /// Writes `rows` samples of uint8 features as a .npy file served at /name; returns its URL.
    @discardableResult
    func serveNPY(_ name: String, samples: [[UInt8]]) throws -> String {
        let width = samples.first?.count ?? Self.features
        try npy(samples.flatMap { $0 }, shape: [samples.count, width]).write(to: root.appendingPathComponent(name))
        return http.url(name)
    }

    func serve(_ name: String, bytes: Data) throws -> String {
        try bytes.write(to: root.appendingPathComponent(name))
        return http.url(name)
    }

    func configuration(_ change: (inout WorkerConfiguration) -> Void = { _ in }) -> WorkerConfiguration {
        var configuration = WorkerConfiguration(databaseURL: database.url)
        configuration.concurrency = 2
        configuration.exitWhenDrained = true
        configuration.pollSeconds = 0.2
        configuration.heartbeatSeconds = 0.5
        configuration.fetchPolicy.allowedNetworks = ["127.0.0.1"]
        configuration.fetchPolicy.totalTimeout = 5
        configuration.retryPolicy = RetryPolicy(baseDelay: 0.05, maximumDelay: 0.2, jitter: 0)
        configuration.pricePerCoreHour = 0.08
        change(&configuration)
        return configuration
    }

    /// Runs a worker in this process until the queue drains.
    func drain(_ change: (inout WorkerConfiguration) -> Void = { _ in }) throws -> Worker {
        let worker = Worker(configuration: configuration(change), logger: quietLogger(.warning))
        try worker.run()
        return worker
    }

    func scalar(_ sql: String, _ parameters: [PostgresBind] = []) throws -> String? {
        try connection.query(sql, parameters).first.flatMap { row in row[row.columns[0]] }
    }

    static func randomSamples(_ count: Int, seed: UInt64) -> [[UInt8]] {
        var generator = SplitMix64(state: seed)
        return (0..<count).map { _ in (0..<features).map { _ in UInt8.random(in: 0...255, using: &generator) } }
    }
}

/// A .npy (version 1.0, C order) of uint8 data.
func npy(_ values: [UInt8], shape: [Int]) -> Data {
    var data = npyHeaderOnly(descr: "|u1", shape: shape, dataBytes: 0)
    data.append(contentsOf: values)
    return data
}

/// A logger for workers run by tests: only what is worth reading in a failing test's output.
func quietLogger(_ level: Logger.Level = .critical) -> Logger {
    var logger = Logger(label: "test.worker")
    logger.logLevel = level
    return logger
}
