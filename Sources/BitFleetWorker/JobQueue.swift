import BitFleetPostgres

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
public struct JobQueue {
    public let connection: PostgresConnection
    public let workerID: String

    public init(connection: PostgresConnection, workerID: String) {
        self.connection = connection
        self.workerID = workerID
    }

    /// Claims up to `limit` due jobs with `FOR UPDATE SKIP LOCKED`, highest priority first, under a lease of
    /// `leaseSeconds`, and starts a new attempt on each.
    public func claim(limit: Int, leaseSeconds: Double) throws -> [JobClaim] {
        let rows = try connection.query("""
            WITH due AS (
                SELECT id FROM bitfleet.jobs
                WHERE state IN ('queued', 'failed') AND run_after <= now()
                ORDER BY priority DESC, run_after, id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            )
            UPDATE bitfleet.jobs j
            SET state = 'running', attempt = j.attempt + 1, lease_owner = $1,
                lease_expires_at = now() + make_interval(secs => $3), started_at = coalesce(j.started_at, now())
            FROM due WHERE j.id = due.id
            RETURNING j.id, j.attempt, j.max_attempts, j.batch_id, j.custom_id, j.model, j.model_version, j.input_url,
                      j.input_format, j.top_k, j.tenant, extract(epoch FROM now() - j.run_after)::float8 AS queue_wait
            """, [workerID, limit, leaseSeconds])
        return try rows.map { row in
            JobClaim(
                id: try row.int("id"), attempt: try row.int("attempt"), maxAttempts: try row.int("max_attempts"),
                batchID: try row.optionalInt("batch_id"), customID: try row.optionalString("custom_id"),
                model: try row.string("model"), modelVersion: try row.optionalString("model_version"),
                inputURL: try row.string("input_url"), inputFormat: try row.optionalString("input_format"),
                topK: try row.int("top_k"), tenant: try row.optionalString("tenant"),
                queueWaitSeconds: max(0, try row.double("queue_wait")))
        }
    }

    /// Writes the result, the cost row and `succeeded` in one statement, only if this attempt still holds the lease.
    /// Returns false when the lease was lost (nothing was written).
    public func complete(_ claim: JobClaim, _ completion: JobCompletion) throws -> Bool {
        try complete([(claim, completion)]) == [claim.id]
    }

    /// Completes many jobs in one statement (arrays, unnested): for each, the result, the cost row and `succeeded`,
    /// each fenced by its own `(id, attempt)` and this worker's lease. Returns the ids written; a job whose lease
    /// was lost is absent and nothing of it was written.
    public func complete(_ items: [(claim: JobClaim, completion: JobCompletion)]) throws -> Set<Int> {
        guard !items.isEmpty else { return [] }
        let costs = items.map(\.completion.cost)
        let rows = try connection.query("""
            WITH input AS (
                SELECT * FROM unnest($2::bigint[], $3::int[], $4::text[], $5::int[], $6::text[], $7::text[],
                                     $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::float8[],
                                     $13::bigint[], $14::bigint[], $15::float8[], $16::float8[], $17::bigint[],
                                     $18::float8[], $19::float8[], $20::text[])
                    AS t(id, attempt, model_version, samples, output, node_class, queue_wait_s, fetch_s, decode_s,
                         infer_s, cpu_s, bytes, ops, price, euros, memory_bytes, memory_gb_s, price_gb, experts)
            ), done AS (
                UPDATE bitfleet.jobs j
                SET state = 'succeeded', finished_at = now(), lease_owner = NULL, lease_expires_at = NULL, last_error = NULL
                FROM input
                WHERE j.id = input.id AND j.attempt = input.attempt AND j.lease_owner = $1 AND j.state = 'running'
                RETURNING j.id, j.batch_id, j.model, j.tenant
            ), result AS (
                INSERT INTO bitfleet.results (job_id, attempt, model, model_version, samples, output)
                SELECT done.id, input.attempt, done.model, input.model_version, input.samples, input.output::jsonb
                FROM done JOIN input ON input.id = done.id
                RETURNING job_id
            )
            INSERT INTO bitfleet.job_costs (job_id, batch_id, attempt, model, model_version, tenant, worker_id, node_class,
                samples, queue_wait_seconds, fetch_seconds, decode_seconds, infer_seconds, cpu_seconds, bytes_fetched,
                binary_ops, price_per_core_hour, euros, model_memory_bytes, memory_gb_seconds, price_per_gb_hour,
                expert_activations)
            SELECT done.id, done.batch_id, input.attempt, done.model, input.model_version, done.tenant, $1,
                   input.node_class, input.samples, input.queue_wait_s, input.fetch_s, input.decode_s, input.infer_s, input.cpu_s,
                   input.bytes, input.ops, input.price, input.euros, input.memory_bytes, input.memory_gb_s, input.price_gb,
                   string_to_array(nullif(input.experts, ''), ',')::int[]
            FROM done JOIN result ON result.job_id = done.id JOIN input ON input.id = done.id
            RETURNING job_id
            """, [
                workerID, items.map(\.claim.id), items.map(\.claim.attempt), items.map(\.completion.modelVersion),
                items.map(\.completion.samples), items.map(\.completion.output), costs.map(\.nodeClass),
                costs.map(\.queueWaitSeconds), costs.map(\.fetchSeconds), costs.map(\.decodeSeconds),
                costs.map(\.inferSeconds), costs.map(\.cpuSeconds), costs.map(\.bytesFetched), costs.map(\.binaryOps),
                costs.map(\.pricePerCoreHour), costs.map(\.euros), costs.map(\.modelMemoryBytes),
                costs.map(\.memoryGBSeconds), costs.map(\.pricePerGBHour),
                costs.map { $0.expertActivations.isEmpty ? "" : $0.expertActivations.map(String.init).joined(separator: ",") },
            ])
        return Set(try rows.map { try $0.int("job_id") })
    }

    /// Records how long the completing statement took (it cannot measure itself), shared evenly by its jobs.
    public func recordWriteTime(jobIDs: Set<Int>, seconds: Double) throws {
        guard !jobIDs.isEmpty else { return }
        try connection.query("UPDATE bitfleet.job_costs SET write_seconds = $2 WHERE job_id = ANY($1::bigint[])",
                             [Array(jobIDs), seconds / Double(jobIDs.count)])
    }

    /// Ends a failed attempt: `failed` (runs again after the delay) or `dead`, appending to the error history.
    /// Fenced like `complete`; returns the state written, or nil when the lease was lost.
    @discardableResult
    public func fail(_ claim: JobClaim, _ failure: JobFailure, decision: RetryPolicy.Decision) throws -> String? {
        let (state, delay): (String, Double) = switch decision {
        case .retry(let delay): ("failed", delay)
        case .dead: ("dead", 0)
        }
        let rows = try connection.query("""
            UPDATE bitfleet.jobs
            SET state = $4::bitfleet.job_state, run_after = now() + make_interval(secs => $5),
                lease_owner = NULL, lease_expires_at = NULL, last_error = $6,
                finished_at = CASE WHEN $4 = 'dead' THEN now() END,
                errors = errors || jsonb_build_object('attempt', $2::int, 'at', now(), 'worker', $3::text,
                                                      'class', $7::text, 'phase', $8::text, 'error', $6::text)
            WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'running'
            RETURNING state
            """, [claim.id, claim.attempt, workerID, state, delay, failure.description, failure.errorClass.rawValue, failure.phase])
        return rows.first.flatMap { $0["state"] }
    }

    /// Extends the leases this worker holds on `jobIDs`; returns the ids still held.
    public func extendLeases(jobIDs: [Int], leaseSeconds: Double) throws -> Set<Int> {
        guard !jobIDs.isEmpty else { return [] }
        let rows = try connection.query("""
            UPDATE bitfleet.jobs SET lease_expires_at = now() + make_interval(secs => $3)
            WHERE id = ANY($2::bigint[]) AND lease_owner = $1 AND state = 'running'
            RETURNING id
            """, [workerID, jobIDs, leaseSeconds])
        return Set(try rows.map { try $0.int("id") })
    }

    /// Returns jobs whose lease expired (their worker died or hung) to the queue, or to `dead` when out of attempts.
    /// `run_after` keeps its old value, so a rescued job runs before work that was queued after it.
    /// Any worker may run this; returns how many jobs were rescued.
    @discardableResult
    public func rescueExpiredLeases() throws -> Int {
        let rows = try connection.query("""
            WITH expired AS (
                SELECT id FROM bitfleet.jobs
                WHERE state = 'running' AND lease_expires_at < now()
                FOR UPDATE SKIP LOCKED
            )
            UPDATE bitfleet.jobs j
            SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead'::bitfleet.job_state ELSE 'failed' END,
                finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
                last_error = 'lease expired: worker ' || j.lease_owner || ' stopped renewing it',
                errors = j.errors || jsonb_build_object('attempt', j.attempt, 'at', now(), 'worker', j.lease_owner,
                                                        'class', 'transient', 'phase', 'lease',
                                                        'error', 'lease expired'),
                lease_owner = NULL, lease_expires_at = NULL
            FROM expired WHERE j.id = expired.id
            RETURNING j.id
            """)
        return rows.count
    }

    /// Cancels the unstarted items of batches past their expiry window; returns how many.
    @discardableResult
    public func expireBatches() throws -> Int {
        try connection.query("SELECT bitfleet.expire_batches() AS n")[0].int("n")
    }

    /// Deletes finished jobs (and their results; cost rows stay) older than `keepDays`, `maxRows` per statement,
    /// repeating while there is more for up to `seconds`. Returns how many were deleted.
    @discardableResult
    public func pruneFinished(keepDays: Double, maxRows: Int = 10_000, forAtMost seconds: Double = 0) throws -> Int {
        let deadline = Clock.now() + seconds
        var total = 0
        while true {
            let deleted = try connection.query(
                "SELECT bitfleet.prune_finished(make_interval(secs => $1::float8 * 86400), $2) AS n",
                [keepDays, maxRows])[0].int("n")
            total += deleted
            if deleted < maxRows || Clock.now() >= deadline { return total }
        }
    }

    /// Gives back jobs this worker claimed but will not run (shutdown): they run again at once, ahead of newer work,
    /// and the attempt is not counted.
    public func release(_ claim: JobClaim) throws {
        try connection.query("""
            UPDATE bitfleet.jobs
            SET state = CASE WHEN attempt > 1 THEN 'failed'::bitfleet.job_state ELSE 'queued' END,
                attempt = attempt - 1, lease_owner = NULL, lease_expires_at = NULL
            WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'running'
            """, [claim.id, claim.attempt, workerID])
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
