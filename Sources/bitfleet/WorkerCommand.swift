import ArgumentParser
import BitFleetWorker
import Dispatch
import Foundation
import Logging

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Drain the job queue: claim, fetch, infer, write results and cost rows. SIGTERM drains gracefully.",
        discussion: "Every option also reads an environment variable (shown in brackets) when it is not given.")

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "Executor slots: jobs processed at once [BITFLEET_CONCURRENCY].")
    var concurrency: Int = environment("BITFLEET_CONCURRENCY", 2)

    @Option(help: "Lease length in seconds; a dead worker's jobs run again after about this long [BITFLEET_LEASE_SECONDS].")
    var leaseSeconds: Double = environment("BITFLEET_LEASE_SECONDS", 30)

    @Option(help: "Euros per core-hour of this server, for cost rows [BITFLEET_PRICE_PER_CORE_HOUR].")
    var pricePerCoreHour: Double = environment("BITFLEET_PRICE_PER_CORE_HOUR", 0.05)

    @Option(help: "Name of this server's price class [BITFLEET_NODE_CLASS].")
    var nodeClass: String = environment("BITFLEET_NODE_CLASS", "default")

    @Option(help: "Directory that relative model URIs are resolved against [BITFLEET_MODEL_DIR].")
    var modelDir: String? = ProcessInfo.processInfo.environment["BITFLEET_MODEL_DIR"]

    @Option(help: "Seconds in-flight jobs may finish after SIGTERM before they are given back [BITFLEET_GRACE_PERIOD].")
    var gracePeriod: Double = environment("BITFLEET_GRACE_PERIOD", 30)

    @Option(help: "Comma-separated hosts/IPs/CIDRs the SSRF guard lets through, e.g. 127.0.0.1,10.0.0.0/8 [BITFLEET_ALLOW_NETWORKS].")
    var allowNetworks: String = environment("BITFLEET_ALLOW_NETWORKS", "")

    @Option(help: "Largest input body in bytes [BITFLEET_MAX_INPUT_BYTES].")
    var maxInputBytes: Int = environment("BITFLEET_MAX_INPUT_BYTES", 64 << 20)

    @Option(help: "Total fetch timeout in seconds [BITFLEET_FETCH_TIMEOUT].")
    var fetchTimeout: Double = environment("BITFLEET_FETCH_TIMEOUT", 60)

    @Option(help: "Seconds an idle slot waits before polling again [BITFLEET_POLL_SECONDS].")
    var pollSeconds: Double = environment("BITFLEET_POLL_SECONDS", 2)

    @Option(help: "Jobs one slot claims per statement (and completes together) [BITFLEET_CLAIM_BATCH].")
    var claimBatch: Int = environment("BITFLEET_CLAIM_BATCH", 8)

    @Flag(help: "Do not LISTEN for new jobs, poll only (PgBouncer transaction pooling) [BITFLEET_POLL_ONLY=1].")
    var pollOnly = ProcessInfo.processInfo.environment["BITFLEET_POLL_ONLY"] == "1"

    @Flag(help: "Exit once no job is queued, retrying or running.")
    var exitWhenDrained = false

    func validate() throws {
        guard concurrency >= 1 && concurrency <= 256 else { throw ValidationError("--concurrency must be 1…256") }
        guard claimBatch >= 1 && claimBatch <= 1000 else { throw ValidationError("--claim-batch must be 1…1000") }
        guard leaseSeconds >= 2 else { throw ValidationError("--lease-seconds must be at least 2") }
        guard pricePerCoreHour >= 0 else { throw ValidationError("--price-per-core-hour must not be negative") }
    }

    func run() throws {
        var configuration = WorkerConfiguration(databaseURL: connection.resolvedURL)
        configuration.concurrency = concurrency
        configuration.claimBatch = claimBatch
        configuration.leaseSeconds = leaseSeconds
        configuration.heartbeatSeconds = max(1, leaseSeconds / 6)
        configuration.pollSeconds = pollSeconds
        configuration.pollOnly = pollOnly
        configuration.pricePerCoreHour = pricePerCoreHour
        configuration.nodeClass = nodeClass
        configuration.modelDirectory = modelDir
        configuration.gracePeriodSeconds = gracePeriod
        configuration.exitWhenDrained = exitWhenDrained
        configuration.fetchPolicy.allowedNetworks = allowNetworks.split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        configuration.fetchPolicy.maxBodyBytes = maxInputBytes
        configuration.fetchPolicy.totalTimeout = fetchTimeout

        let worker = Worker(configuration: configuration, logger: Logger(label: "bitfleet.worker"))
        let signals = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { worker.stop() }
            source.resume()
            return source
        }
        try worker.run()
        signals.forEach { $0.cancel() }
    }
}
