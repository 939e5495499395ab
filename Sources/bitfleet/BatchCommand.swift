import ArgumentParser
import BitFleetWorker
import Foundation

struct BatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch",
        abstract: "Create, watch, cancel and read batches of many inputs.",
        subcommands: [Create.self, Status.self, Wait.self, Results.self, Cancel.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a batch from a file: one URL per line, or JSONL lines {\"custom_id\": \"…\", \"url\": \"…\"}.")
        @OptionGroup var options: FleetOptions
        @Option(help: "Registered model name.") var model: String
        @Option(help: "File of inputs ('-' for standard input).") var inputs: String
        @Option(help: "Model version (default: the newest registered).") var modelVersion: String?
        @Option(help: "Input format of every item: npy, json, ndjson, json:uint8, ndjson:uint8 or raw:<dtype>:<shape> (default: detect).") var format: String?
        @Option(help: "Classes reported per sample.") var topK = 3
        @Option(help: "Tenant label for cost allocation.") var tenant: String?
        @Option(help: "Hours until unfinished items expire.") var expiresInHours: Double = 24

        func run() throws {
            let items = try Self.readItems(inputs)
            guard !items.isEmpty else { throw ValidationError("\(inputs) holds no inputs") }
            let id = try FleetClient(connection: try options.connect()).createBatch(
                model: model, items: items, modelVersion: modelVersion, inputFormat: format, topK: topK, tenant: tenant,
                expiresInHours: expiresInHours)
            if options.json { try printJSON(["id": id, "items": items.count]) } else { print(id) }
        }

        static func readItems(_ path: String) throws -> [FleetClient.BatchItem] {
            let data = path == "-" ? FileHandle.standardInput.readDataToEndOfFile()
                                   : try Data(contentsOf: URL(fileURLWithPath: path))
            var items: [FleetClient.BatchItem] = []
            for (number, line) in String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).enumerated() {
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.isEmpty || text.hasPrefix("#") { continue }
                if text.hasPrefix("{") {
                    struct Line: Decodable { var custom_id: String?; var url: String }
                    guard let item = try? JSONDecoder().decode(Line.self, from: Data(text.utf8)) else {
                        throw ValidationError("\(path) line \(number + 1): expected {\"custom_id\": \"…\", \"url\": \"…\"}")
                    }
                    items.append(.init(inputURL: item.url, customID: item.custom_id))
                } else {
                    items.append(.init(inputURL: text))
                }
            }
            return items
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Request counts and status of a batch.")
        @OptionGroup var options: FleetOptions
        @Argument(help: "Batch id.") var batch: Int

        func run() throws {
            guard let progress = try FleetClient(connection: try options.connect()).batchProgress(batch) else {
                throw ValidationError("no batch \(batch)")
            }
            if options.json { try printJSON(progress); return }
            printTable(["batch", "model", "status", "total", "queued", "running", "retrying", "succeeded", "failed", "cancelled"],
                       [[String(progress.batchID), progress.model, progress.status, String(progress.total),
                         String(progress.queued), String(progress.running), String(progress.retrying),
                         String(progress.succeeded), String(progress.failed), String(progress.cancelled)]])
        }
    }

    struct Wait: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Wait for a batch to finish, with a progress bar.")
        @OptionGroup var options: FleetOptions
        @Argument(help: "Batch id.") var batch: Int
        @Option(help: "Give up after this many seconds (exit 1).") var timeout: Double = 86_400

        func run() throws {
            let client = FleetClient(connection: try options.connect())
            let start = Date()
            let interactive = isatty(STDERR_FILENO) == 1
            while true {
                guard let progress = try client.batchProgress(batch) else { throw ValidationError("no batch \(batch)") }
                let done = progress.succeeded + progress.failed + progress.cancelled
                if !options.json {
                    let width = 30
                    let filled = progress.total == 0 ? width : width * done / progress.total
                    let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                    let text = "[\(bar)] \(done)/\(progress.total) succeeded \(progress.succeeded) failed \(progress.failed) running \(progress.running)"
                    FileHandle.standardError.write(Data(((interactive ? "\r" : "") + text + (interactive ? "" : "\n")).utf8))
                }
                if progress.isFinished {
                    if interactive && !options.json { FileHandle.standardError.write(Data("\n".utf8)) }
                    if options.json { try printJSON(progress) }
                    return
                }
                if Date().timeIntervalSince(start) > timeout { throw ExitCode(1) }
                Thread.sleep(forTimeInterval: interactive ? 0.5 : 2)
            }
        }
    }

    struct Results: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Results of a batch by custom_id: JSONL by default (one line per item), or a table.")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "Batch id.") var batch: Int
        @Flag(help: "Print a table of each item's top class instead of JSONL.") var table = false

        func run() throws {
            let results = try FleetClient(connection: try connection.connect()).batchResults(batch)
            if table {
                printTable(["job", "custom_id", "state", "attempts", "top class", "error"], results.map { result in
                    [String(result.jobID), result.customID, result.state, String(result.attempt),
                     result.output.flatMap(Self.firstLabel), result.lastError]
                })
                return
            }
            for result in results {
                var line: [String: Any] = ["job_id": result.jobID, "state": result.state]
                line["custom_id"] = result.customID
                if let output = result.output, let data = output.data(using: .utf8) {
                    line["result"] = try JSONSerialization.jsonObject(with: data)
                }
                line["error"] = result.lastError
                let data = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            }
        }

        static func firstLabel(_ output: String) -> String? {
            guard let data = output.data(using: .utf8),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let predictions = object["predictions"] as? [[String: Any]] else { return nil }
            let labels = predictions.compactMap { ($0["top"] as? [[String: Any]])?.first?["label"] as? String }
            return labels.count == 1 ? labels[0] : "\(labels.count) samples: " + labels.prefix(3).joined(separator: ", ") + (labels.count > 3 ? ", …" : "")
        }
    }

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel a batch: waiting items are cancelled, running items finish; results so far are kept.")
        @OptionGroup var options: FleetOptions
        @Argument(help: "Batch id.") var batch: Int

        func run() throws {
            let cancelled = try FleetClient(connection: try options.connect()).cancelBatch(batch)
            if options.json { try printJSON(["cancelled": cancelled]) } else { print("cancelled \(cancelled) waiting items") }
        }
    }
}
