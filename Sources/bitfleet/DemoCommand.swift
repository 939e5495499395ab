import ArgumentParser
import BitFleetFetch
import BitFleetWorker
import Foundation
import Logging

/// `bitfleet demo`: the product in one command against a database you name — real Fashion-MNIST test images
/// as `.npy` inputs (read from `file://` URLs, so no HTTP server is needed), a batch, an in-process worker until the
/// queue drains, the predictions scored against the true labels, and the cost dashboard. `Ops/demo.sh` does the same
/// over HTTP with two worker processes and a throwaway cluster.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run real Fashion-MNIST images through the queue and a worker, then print accuracy and the cost dashboard.")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Model directory to register as 'fashion'.") var model = "Ops/models/fashion"
    @Option(help: "Directory of the Fashion-MNIST idx files (Debian's dataset-fashion-mnist).")
    var dataset = "/usr/share/datasets/fashion-mnist"
    @Option(help: "Input files (jobs).") var files = 20
    @Option(help: "Images per file.") var perFile = 50
    @Option(help: "Executor slots of the worker.") var concurrency = 2

    func validate() throws {
        guard files >= 1, perFile >= 1, files * perFile <= 10_000 else {
            throw ValidationError("--files × --per-file must be 1…10 000 (the test set's size)")
        }
    }

    func run() throws {
        let url = connection.resolvedURL
        let client = FleetClient(connection: try connection.connect())
        let applied = try Schema.migrate(client.connection)
        print(applied.isEmpty ? "schema is up to date" : "applied: " + applied.joined(separator: ", "))
        let entry = try client.addModel(name: "fashion", directory: model)
        print("model fashion \(entry.version) sha256 \(entry.sha256.prefix(16))…")

        let images = try Self.idx(dataset + "/t10k-images-idx3-ubyte.gz")
        let labels = try Self.idx(dataset + "/t10k-labels-idx1-ubyte.gz")
        let width = 784
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bitfleet-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var items: [FleetClient.BatchItem] = []
        for index in 0..<files {
            let start = index * perFile
            let file = directory.appendingPathComponent("test-\(index).npy")
            try Self.npy(Array(images[(start * width)..<((start + perFile) * width)]), rows: perFile, width: width).write(to: file)
            items.append(.init(inputURL: file.absoluteString, customID: String(start)))
        }
        let batch = try client.createBatch(model: "fashion", items: items, topK: 1, tenant: "demo")
        print("batch \(batch): \(files) jobs × \(perFile) images from file:// inputs")

        var configuration = WorkerConfiguration(databaseURL: url)
        configuration.concurrency = concurrency
        configuration.exitWhenDrained = true
        configuration.pollSeconds = 0.2
        configuration.fetchPolicy.allowFileScheme = true
        var logger = Logger(label: "bitfleet.demo")
        logger.logLevel = .warning
        let started = Date()
        let worker = Worker(configuration: configuration, logger: logger)
        try worker.run()
        let seconds = Date().timeIntervalSince(started)

        var correct = 0
        var total = 0
        for result in try client.batchResults(batch) {
            guard let output = result.output, let first = Int(result.customID ?? ""),
                  let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
                  let predictions = object["predictions"] as? [[String: Any]] else { continue }
            for prediction in predictions {
                guard let sample = prediction["sample"] as? Int,
                      let top = (prediction["top"] as? [[String: Any]])?.first, let label = top["class"] as? Int else { continue }
                total += 1
                if label == Int(labels[first + sample]) { correct += 1 }
            }
        }
        let stats = worker.statistics
        print(String(format: "%d jobs, %d images in %.2f s (%.0f images/s, one worker, %d slots); accuracy %.2f %%",
                     stats.succeeded, stats.samples, seconds, Double(stats.samples) / seconds, concurrency,
                     100 * Double(correct) / Double(max(total, 1))))
        print("")
        try CostDashboard(client: client, hours: 24).print(json: false)
    }

    /// The payload of a gzip'd idx file (images or labels), header skipped.
    static func idx(_ path: String) throws -> [UInt8] {
        guard let compressed = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(path) (apt-get install dataset-fashion-mnist)")
        }
        let data = try Gzip.decompress([UInt8](compressed), limit: 64 << 20)
        guard data.count > 4 else { throw ValidationError("\(path) is not an idx file") }
        let header = 4 + 4 * Int(data[3])
        guard data.count >= header else { throw ValidationError("\(path) is not an idx file") }
        return Array(data[header...])
    }

    /// A version 1.0 `.npy` of uint8 rows.
    static func npy(_ values: [UInt8], rows: Int, width: Int) -> Data {
        var header = "{'descr': '|u1', 'fortran_order': False, 'shape': (\(rows), \(width)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: values)
        return data
    }
}
