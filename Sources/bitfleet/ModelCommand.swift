import ArgumentParser
import BitFleetWorker

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "Register and list models.", subcommands: [Add.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a model directory and register it with the sha256 of its weights.")
        @OptionGroup var options: FleetOptions
        @Option(help: "Model name jobs will use.") var name: String
        @Option(help: "Version label (default: the \"version\" in the model's config.json).") var version: String?
        @Option(help: "Model directory (config.json + model.safetensors).") var path: String
        @Option(help: "URI workers load it from, if not this path (e.g. a path relative to their --model-dir).") var uri: String?

        func run() throws {
            let entry = try FleetClient(connection: try options.connect()).addModel(
                name: name, version: version, directory: path, uri: uri)
            if options.json { try printJSON(entry) } else { print("registered \(entry.name) \(entry.version) sha256 \(entry.sha256)") }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List registered models.")
        @OptionGroup var options: FleetOptions

        func run() throws {
            let models = try FleetClient(connection: try options.connect()).models()
            if options.json { try printJSON(models); return }
            printTable(["name", "version", "sha256", "features", "uri"], models.map {
                [$0.name, $0.version, String($0.sha256.prefix(16)) + "…", $0.inputFeatures.map(String.init), $0.uri]
            })
        }
    }
}
