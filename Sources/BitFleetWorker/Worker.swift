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
    private let state = Mutex(State())
    private let wake = WakeSignal()
    private let finished = DispatchGroup()

    struct State {
        var stopping = false
        var stopRequestedAt: Double?
        var inFlight: [Int: JobClaim] = [:]
        /// Jobs the heartbeat found no longer leased to this worker: not started if still waiting in a claimed batch.
        var lostLeases: Set<Int> = []
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
        self.models = ModelStore(baseDirectory: configuration.modelDirectory)
    }

    public var statistics: Statistics {
        state.withLock { Statistics(succeeded: $0.succeeded, failed: $0.failed, samples: $0.samples) }
    }

    /// True while every slot is connected and the worker is not draining (the readiness probe).
    public var isReady: Bool {
        state.withLock { !$0.stopping && $0.readySlots == configuration.concurrency }
    }

    /// Stops claiming; in-flight jobs finish within the grace period or are given back to the queue.
    public func stop() {
        let first = state.withLock { state -> Bool in
            defer { state.stopping = true }
            if state.stopRequestedAt == nil { state.stopRequestedAt = Clock.now() }
            return !state.stopping
        }
        if first { logger.info("draining", metadata: ["grace_seconds": "\(configuration.gracePeriodSeconds)"]) }
        wake.signalAll()
    }

    var isStopping: Bool { state.withLock { $0.stopping } }

    /// Runs until `stop()` (or until the queue drains with `exitWhenDrained`), then returns.
    public func run() throws {
        HTTPFetcher.globalInit()
        // A fetch policy that cannot work (an unparsable allowlist entry, say) is a configuration error: say so now,
        // not in every slot's loop.
        _ = try HTTPClient(policy: configuration.fetchPolicy)
        guard let control = try connectAndRegister() else { return }
        logger.info("worker started", metadata: [
            "worker": "\(configuration.workerID)", "concurrency": "\(configuration.concurrency)",
            "lease_seconds": "\(configuration.leaseSeconds)", "node_class": "\(configuration.nodeClass)",
        ])
        for slot in 0..<configuration.concurrency {
            spawn(name: "bitfleet-slot-\(slot)") { self.slotLoop(slot) }
        }
        if !configuration.pollOnly {
            spawn(name: "bitfleet-listener") { self.listenLoop() }
        }
        // Returns once every slot has stopped, or when the grace period ran out and unfinished jobs were released.
        heartbeatLoop(control)
        try? control.query("UPDATE bitfleet.workers SET stopped_at = now(), heartbeat_at = now() WHERE id = $1",
                           [configuration.workerID])
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

    // MARK: - Slots

    private func slotLoop(_ slot: Int) {
        var connection: PostgresConnection?
        var client: HTTPClient?
        var backoff = 0.5
        var ready = false
        defer { if ready { state.withLock { $0.readySlots -= 1 } } }
        while !isStopping {
            do {
                if connection == nil || !(connection?.isConnected ?? false) {
                    if ready { state.withLock { $0.readySlots -= 1 }; ready = false }
                    connection = nil
                    connection = try PostgresConnection(url: configuration.databaseURL, applicationName: "bitfleet-worker")
                    state.withLock { $0.readySlots += 1 }
                    ready = true
                    backoff = 0.5
                }
                if client == nil { client = try HTTPClient(policy: configuration.fetchPolicy) }
                let queue = JobQueue(connection: connection!, workerID: configuration.workerID)
                let claimStart = Clock.now()
                let claims = try queue.claim(limit: configuration.claimBatch, leaseSeconds: configuration.leaseSeconds)
                metrics.claim(seconds: Clock.now() - claimStart, jobs: claims.count)
                if claims.isEmpty {
                    if configuration.exitWhenDrained, try queue.isDrained() {
                        logger.info("queue drained")
                        stop()
                        break
                    }
                    wake.wait(timeout: configuration.pollSeconds)
                    continue
                }
                try runClaimed(claims, queue: queue, client: client!)
            } catch {
                // Database trouble: the job in hand (if any) keeps its lease until it expires and is rescued.
                logger.warning("slot error, reconnecting", metadata: ["slot": "\(slot)", "error": "\(error)"])
                connection = nil
                wake.wait(timeout: backoff)
                backoff = min(backoff * 2, 10)
            }
        }
    }

    /// Runs a claimed batch: each job in turn, completions written together (one statement per flush), jobs not
    /// started when the worker stops are given back at once.
    private func runClaimed(_ claims: [JobClaim], queue: JobQueue, client: HTTPClient) throws {
        metrics.busySlots(state.withLock { state in
            for claim in claims { state.inFlight[claim.id] = claim }
            state.busySlots += 1
            return state.busySlots
        })
        defer {
            metrics.busySlots(state.withLock { state in
                for claim in claims { state.inFlight.removeValue(forKey: claim.id) }
                state.busySlots -= 1
                return state.busySlots
            })
        }
        var pending: [(claim: JobClaim, completion: JobCompletion)] = []
        var oldestPending = 0.0
        func flush() throws {
            guard !pending.isEmpty else { return }
            let start = Clock.now()
            let written = try queue.complete(pending)
            let seconds = Clock.now() - start
            try queue.recordWriteTime(jobIDs: written, seconds: seconds)
            let samples = pending.filter { written.contains($0.claim.id) }.reduce(0) { $0 + $1.completion.samples }
            state.withLock {
                $0.succeeded += written.count
                $0.samples += samples
            }
            for item in pending {
                guard written.contains(item.claim.id) else {
                    metrics.jobFinished(outcome: "lease_lost")
                    logger.warning("lease lost before the result was written; nothing written", metadata: ["job": "\(item.claim.id)"])
                    continue
                }
                metrics.jobFinished(outcome: "succeeded")
                metrics.samples(item.completion.samples)
                metrics.phase("write", seconds: seconds / Double(written.count))
            }
            finish(pending.map(\.claim.id))
            pending.removeAll(keepingCapacity: true)
        }
        for (index, claim) in claims.enumerated() {
            if isStopping {
                try flush()
                for unstarted in claims[index...] {
                    try queue.release(unstarted)
                    finish([unstarted.id])
                }
                return
            }
            if state.withLock({ $0.lostLeases.remove(claim.id) != nil }) {
                // Taken over while it waited in this batch (e.g. this worker was cut off): someone else runs it.
                logger.warning("lease lost before the job started; skipped", metadata: ["job": "\(claim.id)"])
                metrics.jobFinished(outcome: "lease_lost")
                finish([claim.id])
                continue
            }
            if let completion = try process(claim, queue: queue, client: client) {
                if pending.isEmpty { oldestPending = Clock.now() }
                pending.append((claim, completion))
            }
            // Results wait at most `flushSeconds` for company, so a slow batch does not hold finished work back.
            if Clock.now() - oldestPending > configuration.flushSeconds { try flush() }
        }
        try flush()
    }

    /// Stops renewing the leases of jobs whose outcome has been written.
    private func finish(_ ids: [Int]) {
        state.withLock { state in
            for id in ids {
                state.inFlight.removeValue(forKey: id)
                state.lostLeases.remove(id)
            }
        }
    }

    /// Runs one attempt. Returns what to write when it succeeded; a failure is recorded on the job here.
    /// Database errors propagate to the slot loop (the job keeps its lease until it expires and is rescued).
    private func process(_ claim: JobClaim, queue: JobQueue, client: HTTPClient) throws -> JobCompletion? {
        var log = logger
        log[metadataKey: "job"] = "\(claim.id)"
        if let batch = claim.batchID { log[metadataKey: "batch"] = "\(batch)" }

        var timer = PhaseTimer()
        do {
            if claim.model == Self.noopModel {
                // Queue overhead alone: no fetch, no model; still metered and written like any job.
                return JobCompletion(modelVersion: "builtin", samples: 0, output: "{\"noop\": true}", cost: CostRecord(
                    nodeClass: configuration.nodeClass, samples: 0, queueWaitSeconds: claim.queueWaitSeconds,
                    fetchSeconds: 0, decodeSeconds: 0, inferSeconds: 0, cpuSeconds: timer.cpuSeconds, bytesFetched: 0,
                    binaryOps: 0, pricePerCoreHour: configuration.pricePerCoreHour))
            }
            let registered = try models.resolve(name: claim.model, version: claim.modelVersion, on: queue.connection)
            let model = try models.model(for: registered)
            timer.lap("model")

            let response: FetchResponse
            do { response = try client.get(claim.inputURL) } catch {
                throw JobFailure(error.isRetryable ? .transient : .permanent, phase: "fetch", error.description)
            }
            timer.lap("fetch")

            let features = model.config.inputFeatures
            let input: InputBatch
            let samples: [UInt8]
            do {
                input = try InputDecoder.decode(response.body, format: claim.inputFormat, contentType: response.contentType,
                                                url: response.effectiveURL, features: features)
                samples = try Self.quantize(input, scale: Float(model.config.inputScale), features: features)
            } catch let error as JobFailure {
                throw error
            } catch {
                throw JobFailure(.permanent, phase: "decode", "\(error)")
            }
            timer.lap("decode")

            let result: InferenceResult
            do {
                result = try model.predict(samples: samples, count: input.samples,
                                           topClasses: min(claim.topK, model.config.classes.count),
                                           threads: configuration.inferenceThreads)
            } catch {
                throw JobFailure(.permanent, phase: "infer", "\(error)")
            }
            timer.lap("infer")

            let output = try ResultDocument(model: registered, input: input, result: result).json()
            var cost = CostRecord(
                nodeClass: configuration.nodeClass, samples: input.samples, queueWaitSeconds: claim.queueWaitSeconds,
                fetchSeconds: timer["fetch"] + timer["model"], decodeSeconds: timer["decode"], inferSeconds: timer["infer"],
                cpuSeconds: timer.cpuSeconds, bytesFetched: response.bytesReceived, binaryOps: result.stats.binaryOps,
                pricePerCoreHour: configuration.pricePerCoreHour)
            cost.modelMemoryBytes = model.mappedBytes + model.privateBytes
            cost.pricePerGBHour = configuration.pricePerGBHour
            cost.expertActivations = result.stats.expertActivations
            metrics.phase("queue_wait", seconds: claim.queueWaitSeconds)
            metrics.phase("fetch", seconds: cost.fetchSeconds)
            metrics.phase("decode", seconds: cost.decodeSeconds)
            metrics.phase("infer", seconds: cost.inferSeconds)
            log.debug("job done", metadata: ["samples": "\(input.samples)", "cpu_seconds": "\(cost.cpuSeconds)"])
            return JobCompletion(modelVersion: registered.version, samples: input.samples, output: output, cost: cost)
        } catch let failure as JobFailure {
            let decision = configuration.retryPolicy.decide(attempt: claim.attempt, maxAttempts: claim.maxAttempts,
                                                            retryable: failure.retryable)
            let written = try queue.fail(claim, failure, decision: decision)
            finish([claim.id])
            metrics.jobFinished(outcome: written ?? "lease_lost")
            state.withLock { $0.failed += 1 }
            log.warning("job attempt failed", metadata: [
                "attempt": "\(claim.attempt)", "state": "\(written ?? "lease lost")", "error": "\(failure)",
            ])
            return nil
        }
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
            } catch {
                throw JobFailure(.permanent, phase: "decode", "\(error)")
            }
        }
    }

    // MARK: - Heartbeat and listener

    /// The control connection, once the worker is registered. A database that is down or restarting is waited for
    /// (with backoff, until `stop()`); a schema that is not migrated is an error that says what to run.
    private func connectAndRegister() throws -> PostgresConnection? {
        var backoff = 0.5
        while !isStopping {
            do {
                let control = try PostgresConnection(url: configuration.databaseURL, applicationName: "bitfleet-worker")
                try register(on: control)
                return control
            } catch let error as PostgresError where error.sqlState == "42P01" || error.sqlState == "3F000" {
                throw PostgresError(kind: .server, sqlState: error.sqlState,
                                    message: "the bitfleet schema is missing or out of date (\(error.message)): run `bitfleet migrate` first")
            } catch let error as PostgresError where error.isTransient {
                logger.warning("database not reachable; retrying", metadata: ["error": "\(error)", "retry_seconds": "\(backoff)"])
                wake.wait(timeout: backoff)
                backoff = min(backoff * 2, 10)
            }
        }
        return nil
    }

    private func register(on connection: PostgresConnection) throws {
        try connection.query("""
            INSERT INTO bitfleet.workers (id, hostname, pid, concurrency, node_class, price_per_core_hour)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL
            """, [configuration.workerID, WorkerConfiguration.hostName(), Int(getpid()), configuration.concurrency,
                  configuration.nodeClass, configuration.pricePerCoreHour])
    }

    /// Runs on the calling thread until every slot has stopped: renews leases, rescues expired ones, and when the
    /// grace period after `stop()` runs out, gives unfinished jobs back to the queue.
    private func heartbeatLoop(_ initial: PostgresConnection) {
        var connection: PostgresConnection? = initial
        var usage = UsageMeter(cores: configuration.allocatedCores)
        var nextMaintenance = Clock.now()
        defer { if let connection { try? recordUsage(&usage, on: connection) } }
        while finished.wait(timeout: .now() + configuration.heartbeatSeconds) == .timedOut {
            do {
                if connection == nil || !(connection?.isConnected ?? false) {
                    connection = nil
                    connection = try PostgresConnection(url: configuration.databaseURL, applicationName: "bitfleet-worker")
                }
                let queue = JobQueue(connection: connection!, workerID: configuration.workerID)
                let (inFlight, stopAt) = state.withLock { ($0.inFlight, $0.stopRequestedAt) }
                if let stopAt, Clock.now() - stopAt > configuration.gracePeriodSeconds {
                    for claim in inFlight.values { try queue.release(claim) }
                    logger.warning("grace period over; released unfinished jobs", metadata: ["jobs": "\(inFlight.count)"])
                    return
                }
                let held = try queue.extendLeases(jobIDs: Array(inFlight.keys), leaseSeconds: configuration.leaseSeconds)
                let lost = Set(inFlight.keys).subtracting(held)
                if !lost.isEmpty {
                    // Only jobs still in flight now: one may have finished between the read and the renewal.
                    let stillInFlight = state.withLock { state in
                        let current = lost.filter { state.inFlight[$0] != nil }
                        state.lostLeases.formUnion(current)
                        return current
                    }
                    for job in stillInFlight.sorted() { logger.warning("lease lost", metadata: ["job": "\(job)"]) }
                }
                let rescued = try queue.rescueExpiredLeases()
                if rescued > 0 {
                    logger.info("rescued jobs with expired leases", metadata: ["jobs": "\(rescued)"])
                    wake.signalAll()
                }
                try connection!.query("UPDATE bitfleet.workers SET heartbeat_at = now() WHERE id = $1", [configuration.workerID])
                try recordUsage(&usage, on: connection!)
                if Clock.now() >= nextMaintenance {
                    // Every worker does it now and then; SKIP LOCKED keeps them out of each other's way.
                    nextMaintenance = Clock.now() + configuration.maintenanceSeconds
                    let expired = try queue.expireBatches()
                    let pruned = configuration.retentionDays.map { try? queue.pruneFinished(keepDays: $0, forAtMost: 2) } ?? nil
                    if expired > 0 || (pruned ?? 0) > 0 {
                        logger.info("maintenance", metadata: ["expired": "\(expired)", "pruned": "\(pruned ?? 0)"])
                    }
                }
            } catch {
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
                connection = nil
            }
        }
    }

    /// Writes the busy and idle core-seconds since the last heartbeat (`bitfleet.worker_usage`), so dashboards can
    /// show what idle capacity cost.
    private func recordUsage(_ usage: inout UsageMeter, on connection: PostgresConnection) throws {
        let period = usage.next()
        try connection.query("""
            INSERT INTO bitfleet.worker_usage (worker_id, node_class, period_start, period_end, cores, busy_core_seconds,
                                               idle_core_seconds, price_per_core_hour)
            VALUES ($1, $2, to_timestamp($3), to_timestamp($4), $5, $6, $7, $8)
            """, [configuration.workerID, configuration.nodeClass, period.start, period.end, period.cores, period.busy,
                  period.idle, configuration.pricePerCoreHour])
    }

    private func listenLoop() {
        var connection: PostgresConnection?
        while !isStopping {
            do {
                if connection == nil {
                    let fresh = try PostgresConnection(url: configuration.databaseURL, applicationName: "bitfleet-listener")
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
