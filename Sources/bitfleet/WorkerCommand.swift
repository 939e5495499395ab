import ArgumentParser
import BitFleetWorker
import Dispatch
import Foundation
import Logging
import Metrics
import Prometheus

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

    @Option(help: "Euros per GB-hour of memory, charged for the model's memory during each job [BITFLEET_PRICE_PER_GB_HOUR].")
    var pricePerGbHour: Double = environment("BITFLEET_PRICE_PER_GB_HOUR", 0)

    @Option(help: "Name of this server's price class [BITFLEET_NODE_CLASS].")
    var nodeClass: String = environment("BITFLEET_NODE_CLASS", "default")

    @Option(help: "Directory that relative model URIs are resolved against [BITFLEET_MODEL_DIR].")
    var modelDir: String = environment("BITFLEET_MODEL_DIR", "")

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
    var pollOnly = environmentFlag("BITFLEET_POLL_ONLY")

    @Option(help: "Longest a worker statement may run, in seconds [BITFLEET_STATEMENT_TIMEOUT].")
    var statementTimeout: Double = environment("BITFLEET_STATEMENT_TIMEOUT", 30)

    @Option(help: "Longest a worker statement waits for a lock, in seconds [BITFLEET_LOCK_TIMEOUT].")
    var lockTimeout: Double = environment("BITFLEET_LOCK_TIMEOUT", 5)

    @Flag(help: "Exit once no job is queued, retrying or running.")
    var exitWhenDrained = false
    @Option(help: "Port of GET /healthz, /readyz and /metrics (Prometheus); 0 turns it off [BITFLEET_HEALTH_PORT].")
    var healthPort: Int = environment("BITFLEET_HEALTH_PORT", 8080)
    @Option(help: "Address the health endpoint binds: 0.0.0.0 (all IPv4), :: (all), 127.0.0.1, a pod IP … [BITFLEET_HEALTH_HOST].")
    var healthHost: String = environment("BITFLEET_HEALTH_HOST", "0.0.0.0")
    @Option(help: "Largest result document of one job in bytes; larger results fail the job [BITFLEET_MAX_RESULT_BYTES].")
    var maxResultBytes: Int = environment("BITFLEET_MAX_RESULT_BYTES", ResultLimits.defaultMaxResultBytes)

    func validate() throws {
        try checkEnvironment()
        if ProcessInfo.processInfo.environment["BITFLEET_RETENTION_DAYS"] != nil {
            throw ValidationError("BITFLEET_RETENTION_DAYS is gone: retention is the database owner's setting now "
                                  + "(UPDATE bitfleet.settings SET finished_job_retention = interval '7 days')")
        }
        guard pollSeconds > 0 && pollSeconds.isFinite else { throw ValidationError("--poll-seconds must be positive") }
        guard gracePeriod >= 0 && gracePeriod.isFinite else { throw ValidationError("--grace-period must not be negative") }
        guard fetchTimeout > 0 && fetchTimeout.isFinite else { throw ValidationError("--fetch-timeout must be positive") }
        guard maxInputBytes > 0 else { throw ValidationError("--max-input-bytes must be positive") }
        guard statementTimeout > 0 && statementTimeout.isFinite else { throw ValidationError("--statement-timeout must be positive") }
        guard lockTimeout > 0 && lockTimeout.isFinite else { throw ValidationError("--lock-timeout must be positive") }
        guard concurrency >= 1 && concurrency <= 256 else { throw ValidationError("--concurrency must be 1…256") }
        guard claimBatch >= 1 && claimBatch <= 1000 else { throw ValidationError("--claim-batch must be 1…1000") }
        guard leaseSeconds >= 2 else { throw ValidationError("--lease-seconds must be at least 2") }
        guard pricePerCoreHour >= 0 else { throw ValidationError("--price-per-core-hour must not be negative") }
        guard pricePerGbHour >= 0 else { throw ValidationError("--price-per-gb-hour must not be negative") }
        guard (0...65535).contains(healthPort) else { throw ValidationError("--health-port must be 0…65535") }
        guard maxResultBytes >= 1024 else { throw ValidationError("--max-result-bytes must be at least 1024") }
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
        configuration.pricePerGBHour = pricePerGbHour
        configuration.nodeClass = nodeClass
        configuration.modelDirectory = modelDir.isEmpty ? nil : modelDir
        configuration.gracePeriodSeconds = gracePeriod
        configuration.statementTimeoutSeconds = statementTimeout
        configuration.lockTimeoutSeconds = lockTimeout
        configuration.exitWhenDrained = exitWhenDrained
        configuration.fetchPolicy.allowedNetworks = allowNetworks.split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        configuration.fetchPolicy.maxBodyBytes = maxInputBytes
        configuration.fetchPolicy.totalTimeout = fetchTimeout
        ResultLimits.maxResultBytes = maxResultBytes

        // Metrics are bootstrapped once, here in the executable, before the worker makes its metric objects.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(WorkerMetrics.prometheusFactory(registry: registry))
        let worker = Worker(configuration: configuration, logger: Logger(label: "bitfleet.worker"))
        // A port already taken (a second worker on the same server) turns the endpoint off with a warning rather
        // than stopping the worker: give each worker its own --health-port, or 0.
        var health: HealthServer?
        if healthPort != 0 {
            let logger = Logger(label: "bitfleet.health")
            do {
                health = try HealthServer(port: healthPort, host: healthHost, ready: { worker.isReady }, metrics: { registry.emitToString() })
                health?.start()
                logger.info("health endpoint listening", metadata: ["host": "\(healthHost)", "port": "\(healthPort)", "paths": "/healthz /readyz /metrics"])
            } catch {
                logger.warning("health endpoint off", metadata: ["port": "\(healthPort)", "error": "\(error)"])
            }
        }
        defer { health?.stop() }
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
