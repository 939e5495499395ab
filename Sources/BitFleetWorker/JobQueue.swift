import BitFleetPostgres

/// One attempt at a job: what a lease belongs to. Two attempts of the same job are different leases, so a slot
/// that still holds a stale attempt can never renew, skip or release the live one.
public struct AttemptID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var job: Int
    public var attempt: Int

    public init(job: Int, attempt: Int) {
        self.job = job
        self.attempt = attempt
    }

    public static func < (a: AttemptID, b: AttemptID) -> Bool { (a.job, a.attempt) < (b.job, b.attempt) }
    public var description: String { "\(job)#\(attempt)" }
}

/// A job a worker holds under a lease. Every write about it is fenced by `(id, attempt, owner)`.
public struct JobClaim: Sendable, Equatable {
    public var id: Int
    public var attempt: Int
    public var maxAttempts: Int
    public var batchID: Int?
    public var customID: String?
    public var model: String
    public var modelVersion: String?
    public var inputURL: String
    public var inputFormat: String?
    public var topK: Int
    public var tenant: String?
    /// Seconds between the job becoming due and this claim.
    public var queueWaitSeconds: Double

    /// The attempt this claim started: the key of its lease.
    public var key: AttemptID { AttemptID(job: id, attempt: attempt) }
}

/// What a succeeded attempt writes, all in one transaction.
public struct JobCompletion: Sendable {
    public var modelVersion: String
    public var samples: Int
    /// The result document (JSON text).
    public var output: String
    public var cost: CostRecord

    public init(modelVersion: String, samples: Int, output: String, cost: CostRecord) {
        self.modelVersion = modelVersion
        self.samples = samples
        self.output = output
        self.cost = cost
    }
}

/// The queue's SQL, run on a connection owned by the calling thread. Knows jobs and leases, nothing of models.
///
/// Every write goes through the fenced `bitfleet.worker_*` functions (Migrations/0006_worker_functions.sql): the
/// worker role has no direct write on the queue's tables.
public struct JobQueue {
    public let connection: PostgresConnection
    public let workerID: String

    public init(connection: PostgresConnection, workerID: String) {
        self.connection = connection
        self.workerID = workerID
    }

    /// Session limits, so that a stray lock or a forgotten transaction cannot wedge claims, heartbeats or the drain:
    /// a statement waits at most `lockTimeout` for a lock and runs at most `statementTimeout`.
    public func limitSession(statementTimeout: Double, lockTimeout: Double, idleInTransactionTimeout: Double) throws {
        func ms(_ seconds: Double) -> String { String(max(1, Int((seconds * 1000).rounded()))) }
        try connection.query("""
            SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false),
                   set_config('idle_in_transaction_session_timeout', $3, false)
            """, [ms(statementTimeout), ms(lockTimeout), ms(idleInTransactionTimeout)])
    }

    /// Claims up to `limit` due jobs with `FOR UPDATE SKIP LOCKED`, highest priority first, under a lease of
    /// `leaseSeconds`, and starts a new attempt on each. Jobs of cancelled or expired batches are never claimed.
    public func claim(limit: Int, leaseSeconds: Double) throws -> [JobClaim] {
        let rows = try connection.query("SELECT * FROM bitfleet.worker_claim($1, $2, $3)", [workerID, limit, leaseSeconds])
        return try rows.map { row in
            JobClaim(
                id: try row.int("id"), attempt: try row.int("attempt"), maxAttempts: try row.int("max_attempts"),
                batchID: try row.optionalInt("batch_id"), customID: try row.optionalString("custom_id"),
                model: try row.string("model"), modelVersion: try row.optionalString("model_version"),
                inputURL: try row.string("input_url"), inputFormat: try row.optionalString("input_format"),
                topK: try row.int("top_k"), tenant: try row.optionalString("tenant"),
                queueWaitSeconds: max(0, try row.double("queue_wait_seconds")))
        }
    }

    /// Writes the result, the cost row and `succeeded` in one statement, only if this attempt still holds the lease.
    /// Returns false when the lease was lost (nothing was written).
    public func complete(_ claim: JobClaim, _ completion: JobCompletion) throws -> Bool {
        try complete([(claim, completion)]) == [claim.id]
    }

    /// Completes many jobs in one statement: for each, the result, the cost row and `succeeded`, each fenced by its
    /// own `(id, attempt)` and this worker's lease. Returns the ids written; a job whose lease was lost is absent and
    /// nothing of it was written. One value Postgres refuses fails the whole statement (nothing is written).
    public func complete(_ items: [(claim: JobClaim, completion: JobCompletion)]) throws -> Set<Int> {
        guard !items.isEmpty else { return [] }
        let costs = items.map(\.completion.cost)
        let rows = try connection.query("""
            SELECT bitfleet.worker_complete($1, $2::bigint[], $3::int[], $4::text[], $5::int[], $6::text[], $7::text[],
                $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::bigint[], $14::bigint[],
                $15::float8[], $16::bigint[], $17::float8[], $18::float8[], $19::text[], $20::float8[], $21::float8[],
                $22::float8[], $23::float8[]) AS job_id
            """, [
                workerID, items.map(\.claim.id), items.map(\.claim.attempt), items.map(\.completion.modelVersion),
                items.map(\.completion.samples), items.map(\.completion.output), costs.map(\.nodeClass),
                costs.map(\.queueWaitSeconds), costs.map(\.fetchSeconds), costs.map(\.decodeSeconds),
                costs.map(\.inferSeconds), costs.map(\.cpuSeconds), costs.map(\.bytesFetched), costs.map(\.binaryOps),
                costs.map(\.pricePerCoreHour), costs.map(\.modelMemoryBytes), costs.map(\.memoryGBSeconds),
                costs.map(\.pricePerGBHour),
                costs.map { $0.expertActivations.isEmpty ? "" : $0.expertActivations.map(String.init).joined(separator: ",") },
                costs.map(\.fetchCPUSeconds), costs.map(\.decodeCPUSeconds), costs.map(\.inferCPUSeconds),
                costs.map(\.encodeCPUSeconds),
            ])
        return Set(try rows.map { try $0.int("job_id") })
    }

    /// Records how long the completing statement took and the CPU seconds this thread spent on it (it cannot
    /// measure itself), shared evenly by its jobs; each job's `cpu_seconds` and euros grow by its CPU share.
    public func recordWriteTime(jobIDs: Set<Int>, seconds: Double, cpuSeconds: Double) throws {
        guard !jobIDs.isEmpty else { return }
        try connection.query("SELECT bitfleet.worker_write_time($1, $2::bigint[], $3, $4)",
                             [workerID, Array(jobIDs), seconds, cpuSeconds])
    }

    /// Ends a failed attempt: `failed` (runs again after the delay), `dead`, or `cancelled` when its batch was
    /// cancelled or expired (never retried), appending to the error history. Fenced like `complete`; returns the
    /// state written, or nil when the lease was lost.
    @discardableResult
    public func fail(_ claim: JobClaim, _ failure: JobFailure, decision: RetryPolicy.Decision) throws -> String? {
        let delay: Double? = switch decision {
        case .retry(let delay): delay
        case .dead: nil
        }
        let rows = try connection.query(
            "SELECT bitfleet.worker_fail($1, $2, $3, $4, $5, $6, $7) AS state",
            [workerID, claim.id, claim.attempt, delay, failure.description, failure.errorClass.rawValue, failure.phase])
        return rows.first.flatMap { $0["state"] }
    }

    /// Extends the leases this worker holds on these attempts; returns the attempts still held. Also this worker's
    /// heartbeat.
    public func extendLeases(_ attempts: [AttemptID], leaseSeconds: Double) throws -> Set<AttemptID> {
        let rows = try connection.query(
            "SELECT job_id, attempt FROM bitfleet.worker_heartbeat($1, $2::bigint[], $3::int[], $4)",
            [workerID, attempts.map(\.job), attempts.map(\.attempt), leaseSeconds])
        return Set(try rows.map { AttemptID(job: try $0.int("job_id"), attempt: try $0.int("attempt")) })
    }

    /// Returns jobs whose lease expired (their worker died or hung) to the queue, to `dead` when out of attempts,
    /// or to `cancelled` when their batch was cancelled or expired. Any worker may run this; returns how many.
    @discardableResult
    public func rescueExpiredLeases() throws -> Int {
        try connection.query("SELECT bitfleet.worker_rescue() AS n")[0].int("n")
    }

    /// Cancels the unstarted items of batches past their expiry window; returns how many.
    @discardableResult
    public func expireBatches() throws -> Int {
        try connection.query("SELECT bitfleet.expire_batches() AS n")[0].int("n")
    }

    /// Deletes finished jobs (and their results; cost rows stay) older than the retention the database owner set
    /// (`bitfleet.settings.finished_job_retention`), `maxRows` per statement, repeating while there is more for up to
    /// `seconds`. Returns how many were deleted.
    @discardableResult
    public func pruneFinished(maxRows: Int = 10_000, forAtMost seconds: Double = 0) throws -> Int {
        let deadline = WorkerClock.monotonic() + seconds
        var total = 0
        while true {
            let deleted = try connection.query("SELECT bitfleet.worker_prune($1) AS n", [maxRows])[0].int("n")
            total += deleted
            if deleted < maxRows || WorkerClock.monotonic() >= deadline { return total }
        }
    }

    /// Gives back jobs this worker claimed but will not run (shutdown): they run again at once, ahead of newer work,
    /// and the attempt is not counted (those of a cancelled or expired batch end `cancelled`). Returns how many.
    @discardableResult
    public func release(_ claims: [JobClaim]) throws -> Int {
        guard !claims.isEmpty else { return 0 }
        return try connection.query("SELECT bitfleet.worker_release($1, $2::bigint[], $3::int[]) AS n",
                                    [workerID, claims.map(\.id), claims.map(\.attempt)])[0].int("n")
    }

    public func release(_ claim: JobClaim) throws {
        try release([claim])
    }

    /// Registers (or re-registers) this worker in `bitfleet.workers`.
    public func register(hostname: String, pid: Int, concurrency: Int, nodeClass: String, pricePerCoreHour: Double) throws {
        try connection.query("SELECT bitfleet.worker_register($1, $2, $3, $4, $5, $6)",
                             [workerID, hostname, pid, concurrency, nodeClass, pricePerCoreHour])
    }

    /// Marks this worker stopped.
    public func stopped() throws {
        try connection.query("SELECT bitfleet.worker_stopped($1)", [workerID])
    }

    /// Busy and idle core-seconds of one heartbeat interval (`bitfleet.worker_usage`).
    func recordUsage(_ period: UsageMeter.Period, nodeClass: String, pricePerCoreHour: Double) throws {
        try connection.query("SELECT bitfleet.worker_usage($1, $2, $3, $4, $5, $6, $7, $8)",
                             [workerID, nodeClass, period.start, period.end, period.cores, period.busy, period.idle,
                              pricePerCoreHour])
    }

    /// True when no job is due, waiting for a retry, or running: the queue has drained.
    public func isDrained() throws -> Bool {
        let rows = try connection.query(
            // Two probes, each matching a partial index (jobs_claimable, jobs_leases): no scan of finished rows.
            """
            SELECT NOT EXISTS (SELECT 1 FROM bitfleet.jobs WHERE state IN ('queued', 'failed'))
               AND NOT EXISTS (SELECT 1 FROM bitfleet.jobs WHERE state = 'running') AS drained
            """)
        return try rows.first?.bool("drained") ?? true
    }
}
