import BitFleetEngine
import BitFleetFetch
import BitFleetPostgres
import Foundation
import Logging
import Synchronization

/// One worker process: `concurrency` executor slots that claim, fetch, infer and complete jobs, a heartbeat that
/// renews leases and rescues expired ones, and a listener that wakes idle slots on NOTIFY.
///
/// Every slot runs on a thread of its own with its own libpq connection and libcurl handle: those calls block, and
/// they never run on Swift's cooperative pool.
public final class Worker: Sendable {
    public let configuration: WorkerConfiguration
    private let logger: Logger
    private let models: ModelStore
    private let metrics: WorkerMetrics
    /// The decisions (what to run, skip, release, renew; when to flush, drain, maintain): a pure value.
    private let machine: Mutex<WorkerStateMachine>
    private let counters = Mutex(Counters())
    private let wake = WakeSignal()
    private let finished = DispatchGroup()

    struct Counters {
        var succeeded = 0
        var failed = 0
        var samples = 0
        var readySlots = 0
        var busySlots = 0
    }

    /// Counters since start, for tests, health and the demo.
    public struct Statistics: Sendable, Equatable {
        public var succeeded: Int
        public var failed: Int
        public var samples: Int
    }

    public init(configuration: WorkerConfiguration, logger: Logger, metrics: WorkerMetrics = WorkerMetrics()) {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.models = ModelStore(baseDirectory: configuration.modelDirectory) { [logger, metrics] registered, model in
            // which kernels this model runs on this CPU: the start-up log of each model and an info metric
            var metadata: Logger.Metadata = [
                "model": "\(registered.name)", "version": "\(registered.version)",
                "xnor_kernel": "\(model.xnorPath.rawValue)", "stem_kernel": "\(model.stemKernel.rawValue)",
                "stem_kernel_small_batches": "\(model.stemKernelSmallBatch.rawValue)",
                "mapped_bytes": "\(model.mappedBytes)", "private_bytes": "\(model.privateBytes)",
            ]
            if let conv = model.convKernel { metadata["conv_kernel"] = "\(conv)" }
            logger.info("model loaded", metadata: metadata)
            metrics.modelKernels(model: "\(registered.name) \(registered.version)", xnor: model.xnorPath.rawValue,
                                 stem: model.stemKernel.rawValue, stemSmallBatch: model.stemKernelSmallBatch.rawValue,
                                 conv: model.convKernel)
        }
        self.machine = Mutex(WorkerStateMachine(settings: .init(
            flushSeconds: configuration.flushSeconds, gracePeriodSeconds: configuration.gracePeriodSeconds,
            maintenanceSeconds: configuration.maintenanceSeconds)))
    }

    public var statistics: Statistics {
        counters.withLock { Statistics(succeeded: $0.succeeded, failed: $0.failed, samples: $0.samples) }
    }

    /// True while every slot is connected and the worker is not draining (the readiness probe).
    public var isReady: Bool {
        !isStopping && counters.withLock { $0.readySlots == configuration.concurrency }
    }

    /// Stops claiming; in-flight jobs finish within the grace period or are given back to the queue.
    public func stop() {
        let first = machine.withLock { $0.stop(now: WorkerClock.monotonic()) }
        if first { logger.info("draining", metadata: ["grace_seconds": "\(configuration.gracePeriodSeconds)"]) }
        wake.signalAll()
    }

    var isStopping: Bool { machine.withLock { $0.isStopping } }
    private var drainDeadlinePassed: Bool { machine.withLock { $0.drainDeadlinePassed(now: WorkerClock.monotonic()) } }

    /// Runs until `stop()` (or until the queue drains with `exitWhenDrained`), then returns.
    public func run() throws {
        // A database URL libpq cannot parse never works: say so now (without its password), instead of retrying.
        try ConnectionString.validate(configuration.databaseURL)
        HTTPFetcher.globalInit()
        // A fetch policy that cannot work (an unparsable allowlist entry, say) is a configuration error: say so now,
        // not in every slot's loop.
        _ = try HTTPClient(policy: configuration.fetchPolicy)
        guard let control = try connectAndRegister() else { return }
        logger.info("worker started", metadata: [
            "worker": "\(configuration.workerID)", "concurrency": "\(configuration.concurrency)",
            "lease_seconds": "\(configuration.leaseSeconds)", "node_class": "\(configuration.nodeClass)",
            "cpu": "\(CPUClock.cpuModelName ?? "unknown")", "cpu_kernels": "\(KernelCapabilities.running)",
        ])
        for slot in 0..<configuration.concurrency {
            spawn(name: "bitfleet-slot-\(slot)") { self.slotLoop(slot) }
        }
        if !configuration.pollOnly {
            spawn(name: "bitfleet-listener") { self.listenLoop() }
        }
        // Returns once every slot has stopped, or when the grace period ran out and unfinished jobs were released.
        heartbeatLoop(control)
        try? JobQueue(connection: control, workerID: configuration.workerID).stopped()
        let stats = statistics
        logger.info("worker stopped", metadata: ["succeeded": "\(stats.succeeded)", "failed": "\(stats.failed)"])
    }

    private func spawn(name: String, _ body: @escaping @Sendable () -> Void) {
        finished.enter()
        let thread = Thread { [finished] in
            body()
            finished.leave()
        }
        thread.name = name
        thread.stackSize = 4 << 20
        thread.start()
    }

    /// A new connection with the worker's session limits (statement, lock and idle-in-transaction timeouts).
    func connect(_ applicationName: String = "bitfleet-worker") throws -> PostgresConnection {
        let connection = try PostgresConnection(url: configuration.databaseURL, applicationName: applicationName)
        try JobQueue(connection: connection, workerID: configuration.workerID).limitSession(
            statementTimeout: configuration.statementTimeoutSeconds, lockTimeout: configuration.lockTimeoutSeconds,
            idleInTransactionTimeout: configuration.idleInTransactionTimeoutSeconds)
        return connection
    }

    // MARK: - Slots

    /// The database of one slot: its own connection, re-made when lost. Statements that fail for the connection's
    /// sake (or a lock/statement timeout) run again after a backoff, for as long as the worker is not past its
    /// drain deadline: no job is failed for it, and the heartbeat keeps renewing the leases of the jobs in hand.
    final class SlotDatabase {
        let worker: Worker
        let slot: Int
        private var connection: PostgresConnection?
        private var ready = false

        init(worker: Worker, slot: Int) {
            self.worker = worker
            self.slot = slot
        }

        deinit { setReady(false) }

        private func setReady(_ value: Bool) {
            guard value != ready else { return }
            ready = value
            worker.counters.withLock { $0.readySlots += value ? 1 : -1 }
        }

        /// The slot's queue, connecting first if need be (errors propagate).
        func queue() throws -> JobQueue {
            if connection == nil || !(connection?.isConnected ?? false) {
                setReady(false)
                connection = nil
                connection = try worker.connect()
                setReady(true)
            }
            return JobQueue(connection: connection!, workerID: worker.configuration.workerID)
        }

        /// Runs `body` until it succeeds or fails for a reason other than the connection. Gives up (rethrows) once
        /// the worker is past its drain deadline, or at once when `untilStopping` and the worker is stopping.
        func run<T>(untilStopping: Bool = false, _ body: (JobQueue) throws -> T) throws -> T {
            var backoff: Double?
            while true {
                do {
                    return try body(try queue())
                } catch let error where ErrorClassifier.classify(error, phase: .database) == .reconnect {
                    if worker.drainDeadlinePassed || (untilStopping && worker.isStopping) { throw error }
                    if !(connection?.isConnected ?? false) {
                        connection = nil
                        setReady(false)
                    }
                    backoff = WorkerStateMachine.reconnectBackoff(after: backoff)
                    worker.logger.warning("database statement failed; retrying", metadata: [
                        "slot": "\(slot)", "error": "\(error)", "retry_seconds": "\(backoff!)"])
                    worker.wake.wait(timeout: backoff!)
                }
            }
        }
    }

    private func slotLoop(_ slot: Int) {
        let database = SlotDatabase(worker: self, slot: slot)
        var client: HTTPClient?
        var backoff: Double?
        while !isStopping {
            do {
                if client == nil { client = try HTTPClient(policy: configuration.fetchPolicy) }
                let claimStart = WorkerClock.monotonic()
                let claims = try database.run(untilStopping: true) {
                    try $0.claim(limit: configuration.claimBatch, leaseSeconds: configuration.leaseSeconds)
                }
                metrics.claim(seconds: WorkerClock.monotonic() - claimStart, jobs: claims.count)
                backoff = nil
                if claims.isEmpty {
                    if configuration.exitWhenDrained, try database.run(untilStopping: true, { try $0.isDrained() }) {
                        logger.info("queue drained")
                        stop()
                        break
                    }
                    wake.wait(timeout: configuration.pollSeconds)
                    continue
                }
                try runClaimed(claims, database: database, client: client!)
            } catch {
                // Past the drain deadline (the heartbeat gives back what is left), or an error no job caused.
                if isStopping { break }
                backoff = WorkerStateMachine.reconnectBackoff(after: backoff)
                logger.warning("slot error", metadata: ["slot": "\(slot)", "error": "\(error)"])
                wake.wait(timeout: backoff!)
            }
        }
    }

    typealias Finished = (claim: JobClaim, completion: JobCompletion)

    /// Runs a claimed batch: each job fetched and decoded in turn, the decoded jobs run through the model together
    /// (one batch per model, so the engine sees hundreds of samples, not one job's), completions written together
    /// (one statement per flush); jobs not started when the worker stops are given back at once. A job's failure,
    /// in any phase, is that job's alone.
    private func runClaimed(_ claims: [JobClaim], database: SlotDatabase, client: HTTPClient) throws {
        metrics.busySlots(counters.withLock { $0.busySlots += 1; return $0.busySlots })
        machine.withLock { $0.claimed(claims) }
        defer {
            metrics.busySlots(counters.withLock { $0.busySlots -= 1; return $0.busySlots })
            // Leaving by error (past the drain deadline): the heartbeat gives back what is still in flight.
            if !drainDeadlinePassed { machine.withLock { $0.finished(claims.map(\.key)) } }
        }
        var pending: [Finished] = []
        var oldestPending: Double?
        var ready: [Decoded] = []
        var oldestReady: Double?
        var registry = RegistryCache()
        func finished(_ claim: JobClaim, _ outcome: Result<JobCompletion, JobFailure>) throws {
            switch outcome {
            case .success(let completion):
                if pending.isEmpty { oldestPending = WorkerClock.monotonic() }
                pending.append((claim, completion))
            case .failure(let failure):
                try recordFailure(claim, failure, database: database)
            }
        }
        func infer() throws {
            let jobs = ready
            ready.removeAll(keepingCapacity: true)
            oldestReady = nil
            for (claim, outcome) in runModel(jobs) { try finished(claim, outcome) }
        }
        for (index, claim) in claims.enumerated() {
            switch machine.withLock({ $0.beforeStarting(claim) }) {
            case .releaseRest:
                try infer()
                try flush(&pending, database: database)
                let rest = Array(claims[index...])
                _ = try database.run { try $0.release(rest) }
                machine.withLock { $0.finished(rest.map(\.key)) }
                return
            case .skipLeaseLost:
                logger.warning("lease lost before the job started; skipped", metadata: ["job": "\(claim.key)"])
                metrics.jobFinished(outcome: "lease_lost")
                continue
            case .run:
                break
            }
            switch prepare(claim, database: database, client: client, registry: &registry) {
            case .success(.decoded(let job)):
                if ready.isEmpty { oldestReady = WorkerClock.monotonic() }
                ready.append(job)
            case .success(.completed(let completion)):
                try finished(claim, .success(completion))
            case .failure(let failure):
                try finished(claim, .failure(failure))
            }
            let remaining = claims.count - index - 1
            let inferNow = machine.withLock {
                $0.shouldInfer(readySamples: ready.reduce(0) { $0 + $1.input.samples }, oldestReadyAt: oldestReady,
                               remaining: remaining, now: WorkerClock.monotonic())
            }
            if inferNow { try infer() }
            let flushNow = machine.withLock {
                $0.shouldFlush(pending: pending.count, oldestPendingAt: oldestPending,
                               remaining: remaining, now: WorkerClock.monotonic())
            }
            if flushNow { try flush(&pending, database: database) }
        }
        try infer()
        try flush(&pending, database: database)
    }

    /// Writes finished jobs together. When Postgres refuses the statement for one job's sake, each job is written
    /// on its own: the good ones succeed, the offending one fails with the server's error, permanently.
    private func flush(_ pending: inout [Finished], database: SlotDatabase) throws {
        guard !pending.isEmpty else { return }
        defer { pending.removeAll(keepingCapacity: true) }
        try write(pending, database: database)
    }

    private func write(_ items: [Finished], database: SlotDatabase) throws {
        let start = WorkerClock.monotonic(), cpuStart = WorkerClock.threadCPU()
        let written: Set<Int>
        do {
            written = try database.run { queue in
                try configuration.faults?.inject(items.map(\.claim), .write)
                return try queue.complete(items)
            }
        } catch let error where ErrorClassifier.classify(error, phase: .write) != .reconnect {
            if items.count > 1 {
                logger.warning("a batched write was refused; writing its jobs one by one", metadata: [
                    "jobs": "\(items.count)", "error": "\(error)"])
                for item in items { try write([item], database: database) }
            } else {
                try recordFailure(items[0].claim, JobFailure(.permanent, phase: JobPhase.write.rawValue,
                                                             "the result could not be stored: \(error)"),
                                  database: database)
            }
            return
        }
        let seconds = WorkerClock.monotonic() - start, cpuSeconds = max(0, WorkerClock.threadCPU() - cpuStart)
        try? database.run(untilStopping: true) {
            try $0.recordWriteTime(jobIDs: written, seconds: seconds, cpuSeconds: cpuSeconds)
        }
        counters.withLock {
            $0.succeeded += written.count
            $0.samples += items.filter { written.contains($0.claim.id) }.reduce(0) { $0 + $1.completion.samples }
        }
        for item in items {
            guard written.contains(item.claim.id) else {
                metrics.jobFinished(outcome: "lease_lost")
                logger.warning("lease lost before the result was written; nothing written", metadata: ["job": "\(item.claim.key)"])
                continue
            }
            metrics.jobFinished(outcome: "succeeded")
            metrics.samples(item.completion.samples)
            metrics.phase("write", seconds: seconds / Double(written.count))
        }
        machine.withLock { $0.finished(items.map(\.claim.key)) }
    }

    /// Ends a failed attempt in the database (retry, dead, or cancelled when its batch stopped).
    private func recordFailure(_ claim: JobClaim, _ failure: JobFailure, database: SlotDatabase) throws {
        let decision = WorkerStateMachine.decision(for: failure, claim: claim, policy: configuration.retryPolicy)
        let written = try database.run { try $0.fail(claim, failure, decision: decision) }
        machine.withLock { $0.finished([claim.key]) }
        metrics.jobFinished(outcome: written ?? "lease_lost")
        counters.withLock { $0.failed += 1 }
        logger.warning("job attempt failed", metadata: [
            "job": "\(claim.id)", "attempt": "\(claim.attempt)", "state": "\(written ?? "lease lost")",
            "error": "\(failure)",
        ])
    }

    /// A job fetched and decoded, waiting for the model with the others of its claimed batch.
    struct Decoded {
        var claim: JobClaim
        var registered: RegisteredModel
        var model: BinaryMoEModel
        var input: InputBatch
        /// `input` as the engine's uint8 values.
        var samples: [UInt8]
        var bytesFetched: Int
        /// The job's phases so far (model, fetch, decode); inference and encoding are added by `runModel`.
        var timer: PhaseTimer
        var log: Logger
    }

    enum Prepared {
        case decoded(Decoded)
        /// Done without the model (the built-in no-op job).
        case completed(JobCompletion)
    }

    /// Runs one phase of `claims` (the fault hook first): any error it throws is these jobs' failure in that phase.
    private func phase<T>(_ phase: JobPhase, _ claims: [JobClaim], _ body: () throws -> T) throws(JobFailure) -> T {
        do {
            try configuration.faults?.inject(claims, phase)
            return try body()
        } catch {
            throw JobFailure(error, phase: phase)
        }
    }

    /// The first half of an attempt: the model, the input fetched and decoded, or why that failed. Errors of the
    /// slot's connection are retried inside (they are no job's fault); every other error becomes this job's
    /// failure, classified.
    private func prepare(_ claim: JobClaim, database: SlotDatabase, client: HTTPClient,
                         registry: inout RegistryCache) -> Result<Prepared, JobFailure> {
        var log = logger
        log[metadataKey: "job"] = "\(claim.id)"
        if let batch = claim.batchID { log[metadataKey: "batch"] = "\(batch)" }
        var timer = PhaseTimer()
        do throws(JobFailure) {
            if claim.model == Self.noopModel {
                // Queue overhead alone: no fetch, no model; still metered and written like any job.
                return .success(.completed(JobCompletion(modelVersion: "builtin", samples: 0, output: "{\"noop\": true}", cost: CostRecord(
                    nodeClass: configuration.nodeClass, samples: 0, queueWaitSeconds: claim.queueWaitSeconds,
                    fetchSeconds: 0, decodeSeconds: 0, inferSeconds: 0, cpuSeconds: 0, bytesFetched: 0,
                    binaryOps: 0, pricePerCoreHour: configuration.pricePerCoreHour))))
            }
            let (registered, model) = try phase(.model, [claim]) {
                let registered = try registry.resolve(claim) { name, version in
                    try database.run { try models.resolve(name: name, version: version, on: $0.connection) }
                }
                if let model = models.loadedModel(for: registered) { return (registered, model) }
                // Loading a model (mapping, hashing, repacking and timing its kernels) happens once per process and
                // model, whichever job comes first: it is the worker's start-up, not this job's work, so its CPU
                // is not on this job's bill (it is in the worker's busy core-seconds, bitfleet.worker_usage).
                let cpuStart = WorkerClock.threadCPU()
                let model = try models.model(for: registered)
                timer.exclude(cpuSeconds: WorkerClock.threadCPU() - cpuStart)
                return (registered, model)
            }
            timer.lap("model")

            let response = try phase(.fetch, [claim]) { try client.get(claim.inputURL) }
            timer.lap("fetch")

            let features = model.config.inputFeatures
            let (input, samples) = try phase(.decode, [claim]) {
                let input = try InputDecoder.decode(response.body, format: claim.inputFormat, contentType: response.contentType,
                                                    url: response.effectiveURL, features: features)
                return (input, try Self.quantize(input, scale: Float(model.config.inputScale), features: features))
            }
            timer.lap("decode")
            return .success(.decoded(Decoded(claim: claim, registered: registered, model: model, input: input, samples: samples,
                                             bytesFetched: response.bytesReceived, timer: timer, log: log)))
        } catch {
            return .failure(error)
        }
    }

    /// The second half: decoded jobs through their models, as few batches as there are models (and top-k values),
    /// then each job's result document and cost record. The CPU and wall time of a shared inference are divided
    /// among its jobs by samples. When the engine refuses a shared batch, each of its jobs runs alone, so only
    /// the one at fault fails.
    private func runModel(_ jobs: [Decoded]) -> [(JobClaim, Result<JobCompletion, JobFailure>)] {
        var outcomes: [(JobClaim, Result<JobCompletion, JobFailure>)] = []
        struct GroupKey: Hashable {
            var model: ObjectIdentifier
            var topK: Int
            /// Set for a job big enough on its own: it runs alone, from its own buffer (no copy into a shared one).
            var alone: Int?
        }
        var groups: [[Decoded]] = []
        var groupOf: [GroupKey: Int] = [:]
        for job in jobs {
            // the fault hook of the inference phase, job by job (an injected fault fails only its job)
            do throws(JobFailure) {
                try phase(.infer, [job.claim]) { () }
            } catch {
                outcomes.append((job.claim, .failure(error)))
                continue
            }
            let key = GroupKey(model: ObjectIdentifier(job.model), topK: min(job.claim.topK, job.model.config.classes.count),
                               alone: job.input.samples >= Self.samplesToRunAlone ? groups.count : nil)
            if let g = groupOf[key] { groups[g].append(job) } else { groupOf[key] = groups.count; groups.append([job]) }
        }
        for group in groups {
            outcomes += infer(group)
        }
        return outcomes
    }

    /// A job with at least this many samples fills the engine's micro-batches by itself: it is not copied into a
    /// shared batch.
    static let samplesToRunAlone = 1024

    /// One model, one batch: `jobs` share a model and top-k.
    private func infer(_ jobs: [Decoded]) -> [(JobClaim, Result<JobCompletion, JobFailure>)] {
        let model = jobs[0].model
        let topK = min(jobs[0].claim.topK, model.config.classes.count)
        let total = jobs.reduce(0) { $0 + $1.input.samples }
        let wallStart = WorkerClock.monotonic(), cpuStart = WorkerClock.threadCPU()
        let result: InferenceResult
        do throws(JobFailure) {
            result = try phase(.infer, []) {
                if jobs.count == 1 {
                    return try model.predict(samples: jobs[0].samples, count: total, topClasses: topK,
                                             threads: configuration.inferenceThreads)
                }
                var all: [UInt8] = []
                all.reserveCapacity(total * model.config.inputFeatures)
                for job in jobs { all.append(contentsOf: job.samples) }
                return try model.predict(samples: all, count: total, topClasses: topK, threads: configuration.inferenceThreads)
            }
        } catch {
            if jobs.count == 1 { return [(jobs[0].claim, .failure(error))] }
            logger.warning("a shared inference failed; running its jobs one by one", metadata: [
                "jobs": "\(jobs.count)", "error": "\(error)"])
            return jobs.flatMap { infer([$0]) }
        }
        let wall = WorkerClock.monotonic() - wallStart, cpu = max(0, WorkerClock.threadCPU() - cpuStart)
        var outcomes: [(JobClaim, Result<JobCompletion, JobFailure>)] = []
        var first = 0
        for var job in jobs {
            let range = first..<(first + job.input.samples)
            first = range.upperBound
            let share = total > 0 ? Double(range.count) / Double(total) : 1 / Double(jobs.count)
            job.timer.add("infer", seconds: wall * share, cpuSeconds: cpu * share)
            // the thread did other jobs' work since this one's decode: time its encoding alone
            job.timer.restart()
            do throws(JobFailure) {
                let output = try phase(.encode, [job.claim]) {
                    try ResultDocument(model: job.registered, input: job.input, ranked: result.ranked, samples: range).json()
                }
                job.timer.lap("encode")
                outcomes.append((job.claim, .success(completion(job, samples: range.count,
                    binaryOps: total > 0 ? result.stats.binaryOps / total * range.count : 0,
                    expertActivations: result.expertActivations(samples: range, expertCount: model.config.experts),
                    output: output))))
            } catch {
                outcomes.append((job.claim, .failure(error)))
            }
        }
        return outcomes
    }

    /// The job's cost record and result, its phases measured.
    private func completion(_ job: Decoded, samples: Int, binaryOps: Int, expertActivations: [Int],
                            output: String) -> JobCompletion {
        let timer = job.timer, claim = job.claim
        var cost = CostRecord(
            nodeClass: configuration.nodeClass, samples: samples, queueWaitSeconds: claim.queueWaitSeconds,
            fetchSeconds: timer["fetch"] + timer["model"], decodeSeconds: timer["decode"], inferSeconds: timer["infer"],
            cpuSeconds: 0, bytesFetched: job.bytesFetched, binaryOps: binaryOps,
            pricePerCoreHour: configuration.pricePerCoreHour)
        cost.fetchCPUSeconds = timer.cpu("model") + timer.cpu("fetch")
        cost.decodeCPUSeconds = timer.cpu("decode")
        cost.inferCPUSeconds = timer.cpu("infer")
        cost.encodeCPUSeconds = timer.cpu("encode")
        cost.cpuSeconds = cost.fetchCPUSeconds + cost.decodeCPUSeconds + cost.inferCPUSeconds + cost.encodeCPUSeconds
        cost.modelMemoryBytes = job.model.mappedBytes + job.model.privateBytes
        cost.pricePerGBHour = configuration.pricePerGBHour
        cost.expertActivations = expertActivations
        metrics.phase("queue_wait", seconds: claim.queueWaitSeconds)
        metrics.phase("fetch", seconds: cost.fetchSeconds)
        metrics.phase("decode", seconds: cost.decodeSeconds)
        metrics.phase("infer", seconds: cost.inferSeconds)
        job.log.debug("job done", metadata: ["samples": "\(samples)", "cpu_seconds": "\(cost.cpuSeconds)"])
        return JobCompletion(modelVersion: job.registered.version, samples: samples, output: output, cost: cost)
    }

    /// The built-in job kind that does nothing: `bitfleet.enqueue(model => 'bitfleet.noop', input_url => 'noop:')`
    /// measures the queue itself (claim, complete, meter) without fetch or inference.
    public static let noopModel = "bitfleet.noop"

    static func quantize(_ input: InputBatch, scale: Float, features: Int) throws -> [UInt8] {
        switch input.values {
        case .uint8(let values):
            return values
        case .float32(let values):
            do {
                return try InputQuantizer.quantize(values, scale: scale, features: features)
            } catch let error as InputQuantizer.OutOfRange {
                // JSON numbers are real values scaled by the model; 0–255 pixel values have a format of their own.
                var message = error.description
                if (input.format == .json || input.format == .ndjson), error.value >= 0, error.value <= 255,
                   error.value.rounded() == error.value {
                    message += " (JSON numbers are scaled by the model's input_scale \(scale); to send raw 8-bit "
                        + "values 0–255 use input_format '\(input.format == .ndjson ? "ndjson" : "json"):uint8')"
                }
                throw JobFailure(.permanent, phase: "decode", message)
            }
        }
    }

    // MARK: - Heartbeat and listener

    /// The control connection, once the worker is registered. A database that is down or restarting is waited for
    /// (with backoff, until `stop()`); a schema that is not migrated is an error that says what to run.
    private func connectAndRegister() throws -> PostgresConnection? {
        var backoff: Double?
        while !isStopping {
            do {
                let control = try connect()
                try JobQueue(connection: control, workerID: configuration.workerID).register(
                    hostname: WorkerConfiguration.hostName(), pid: Int(getpid()), concurrency: configuration.concurrency,
                    nodeClass: configuration.nodeClass, pricePerCoreHour: configuration.pricePerCoreHour)
                return control
            } catch let error as PostgresError where ["42P01", "3F000", "42883"].contains(error.sqlState ?? "") {
                throw PostgresError(kind: .server, sqlState: error.sqlState,
                                    message: "the bitfleet schema is missing or out of date (\(error.message)): run `bitfleet migrate` first")
            } catch let error as PostgresError where error.isTransient {
                backoff = WorkerStateMachine.reconnectBackoff(after: backoff)
                logger.warning("database not reachable; retrying", metadata: ["error": "\(error)", "retry_seconds": "\(backoff!)"])
                wake.wait(timeout: backoff!)
            }
        }
        return nil
    }

    /// Runs on the calling thread until every slot has stopped. Each beat: the drain deadline (give back what is
    /// left and return), lease renewal and lost-lease detection, the rescue of other workers' expired leases, the
    /// usage record, and now and then batch expiry and retention. A duty that fails does not stop the others.
    private func heartbeatLoop(_ initial: PostgresConnection) {
        var connection: PostgresConnection? = initial
        var usage = UsageMeter(cores: configuration.allocatedCores)
        defer { if let connection { try? recordUsage(&usage, on: JobQueue(connection: connection, workerID: configuration.workerID)) } }
        while finished.wait(timeout: .now() + configuration.heartbeatSeconds) == .timedOut {
            let queue: JobQueue
            do {
                if connection == nil || !(connection?.isConnected ?? false) {
                    connection = nil
                    connection = try connect()
                }
                queue = JobQueue(connection: connection!, workerID: configuration.workerID)
            } catch {
                logger.warning("heartbeat cannot connect", metadata: ["error": "\(error)"])
                continue
            }
            switch machine.withLock({ $0.heartbeat(now: WorkerClock.monotonic()) }) {
            case .releaseAndExit(let unfinished):
                giveBack(unfinished, on: queue)
                return
            case .renew(let attempts):
                duty("lease renewal") { try renewLeases(attempts, on: queue) }
            }
            duty("rescue") {
                let rescued = try queue.rescueExpiredLeases()
                if rescued > 0 {
                    logger.info("rescued jobs with expired leases", metadata: ["jobs": "\(rescued)"])
                    wake.signalAll()
                }
            }
            duty("usage") { try recordUsage(&usage, on: queue) }
            if machine.withLock({ $0.maintenanceDue(now: WorkerClock.monotonic()) }) {
                // Every worker does it now and then; SKIP LOCKED keeps them out of each other's way.
                duty("maintenance") {
                    let expired = try queue.expireBatches()
                    let pruned = try queue.pruneFinished(forAtMost: 2)
                    if expired > 0 || pruned > 0 {
                        logger.info("maintenance", metadata: ["expired": "\(expired)", "pruned": "\(pruned)"])
                    }
                }
            }
            if !(connection?.isConnected ?? false) { connection = nil }
        }
    }

    private func duty(_ name: String, _ body: () throws -> Void) {
        do { try body() } catch {
            logger.warning("heartbeat duty failed", metadata: ["duty": "\(name)", "error": "\(error)"])
        }
    }

    /// Renews the leases of the attempts in flight and marks the ones lost (their slot skips them, writes nothing).
    private func renewLeases(_ attempts: [AttemptID], on queue: JobQueue) throws {
        let held = try queue.extendLeases(attempts, leaseSeconds: configuration.leaseSeconds)
        let lost = machine.withLock { $0.leasesRenewed(requested: attempts, held: held) }
        for attempt in lost { logger.warning("lease lost", metadata: ["job": "\(attempt)"]) }
    }

    /// The grace period is over: unfinished jobs go back to the queue (once; what cannot be released now, say
    /// under a lock that outlasts lock_timeout, is rescued when its lease expires).
    private func giveBack(_ unfinished: [JobClaim], on queue: JobQueue) {
        do {
            let released = try queue.release(unfinished)
            logger.warning("grace period over; released unfinished jobs", metadata: ["jobs": "\(released)"])
        } catch {
            logger.warning("grace period over; unfinished jobs could not be released and run again when their leases expire",
                           metadata: ["jobs": "\(unfinished.count)", "error": "\(error)"])
        }
    }

    /// Writes the busy and idle core-seconds since the last heartbeat (`bitfleet.worker_usage`), so dashboards can
    /// show what idle capacity cost.
    private func recordUsage(_ usage: inout UsageMeter, on queue: JobQueue) throws {
        try queue.recordUsage(usage.next(), nodeClass: configuration.nodeClass, pricePerCoreHour: configuration.pricePerCoreHour)
    }

    private func listenLoop() {
        var connection: PostgresConnection?
        while !isStopping {
            do {
                if connection == nil {
                    let fresh = try connect("bitfleet-listener")
                    try fresh.listen("bitfleet_jobs")
                    connection = fresh
                    wake.signalAll()  // jobs may have arrived while we were not listening
                }
                if try !connection!.waitForNotifications(timeout: 1).isEmpty {
                    wake.signalAll()
                }
            } catch {
                logger.warning("listener lost its connection; polling until it is back", metadata: ["error": "\(error)"])
                connection = nil
                wake.wait(timeout: 2)
            }
        }
    }
}

/// The registry lookups of one claimed batch: the jobs of a batch share a model, so one statement per distinct
/// (model, version) instead of one per job. Only successful lookups are kept (an unknown model is looked up again
/// for each job that names it, and each fails with the registry's current list).
struct RegistryCache {
    private var known: [String: RegisteredModel] = [:]

    mutating func resolve(_ claim: JobClaim, lookup: (String, String?) throws -> RegisteredModel) rethrows -> RegisteredModel {
        let key = claim.model + "\u{0}" + (claim.modelVersion ?? "\u{1}")
        if let hit = known[key] { return hit }
        let registered = try lookup(claim.model, claim.modelVersion)
        known[key] = registered
        return registered
    }
}

/// Wakes idle slots when work arrives (NOTIFY), a lease is rescued, or the worker stops. A wake-up may be spurious
/// (a signal left over from a waiter that timed out): slots simply look at the queue again.
final class WakeSignal: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private let waiters = Mutex(0)

    func wait(timeout: Double) {
        waiters.withLock { $0 += 1 }
        _ = semaphore.wait(timeout: .now() + timeout)
        waiters.withLock { $0 = max(0, $0 - 1) }
    }

    func signalAll() {
        let count = waiters.withLock { $0 }
        for _ in 0..<count { semaphore.signal() }
    }
}
