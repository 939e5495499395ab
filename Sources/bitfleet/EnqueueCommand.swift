import ArgumentParser
import BitFleetWorker

struct EnqueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Enqueue one job (the same as `select bitfleet.enqueue(...)`) and print its id.")

    @OptionGroup var options: FleetOptions

    @Option(help: "Registered model name.") var model: String
    @Option(help: "Input URL (.npy, JSON, NDJSON or raw).") var input: String
    @Option(help: "Model version (default: the newest registered).") var modelVersion: String?
    @Option(help: "Input format: npy, json, ndjson, json:uint8, ndjson:uint8 (raw 0–255 values) or raw:<dtype>:<shape> (default: detect).") var format: String?
    @Option(help: "Classes reported per sample.") var topK = 3
    @Option(help: "Higher runs first.") var priority = 0
    @Option(help: "Attempts before the job is dead.") var maxAttempts = 5
    @Option(help: "Tenant label for cost allocation.") var tenant: String?
    @Option(help: "Enqueuing twice with the same key returns the first job.") var idempotencyKey: String?
    @Option(help: "Run no earlier than this many seconds from now.") var delay: Double = 0

    func run() throws {
        var request = FleetClient.JobRequest(model: model, inputURL: input)
        request.modelVersion = modelVersion
        request.inputFormat = format
        request.topK = topK
        request.priority = priority
        request.maxAttempts = maxAttempts
        request.tenant = tenant
        request.idempotencyKey = idempotencyKey
        request.delaySeconds = delay
        let id = try FleetClient(connection: try options.connect()).enqueue(request)
        if options.json { try printJSON(["id": id]) } else { print(id) }
    }
}
