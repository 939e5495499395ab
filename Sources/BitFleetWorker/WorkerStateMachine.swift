import BitFleetEngine
import BitFleetFetch
import BitFleetPostgres

/// The phase of a job (or of the slot itself) in which an error happened.
public enum JobPhase: String, Sendable, CaseIterable {
    case model, fetch, decode, infer, encode, write
    /// The slot's own statements (claim, heartbeat, release): no one job is at fault.
    case database
}

/// What an error means for the job in hand and for the slot.
public enum ErrorDisposition: Sendable, Equatable {
    /// The database connection is gone or the statement may pass on a second try (lost connection, server restart,
    /// serialization failure, lock or statement timeout): reconnect if need be and run the same statement again.
    /// No job is failed for it, and the leases of the jobs in hand keep being renewed meanwhile.
    case reconnect
    /// This attempt failed; a later one may succeed (network trouble, 5xx, a model file that cannot be read now).
    case retry
    /// The job itself is at fault and would fail the same way again (bad input, 4xx, a refused address, a model
    /// whose checksum does not match, a result Postgres refuses to store): it ends `dead` with this cause.
    case permanent
}

/// The one place that decides what an error means (reconnect vs retry vs permanent), for every phase.
public enum ErrorClassifier {
    /// SQLSTATEs of a statement that may pass when run again on the same (or a fresh) connection.
    static let retryStatementStates: Set<String> = [
        "40001", "40P01",  // serialization failure, deadlock
        "55P03",           // lock_not_available (lock_timeout)
        "57014",           // query_canceled (statement_timeout)
    ]

    public static func classify(_ error: any Error, phase: JobPhase) -> ErrorDisposition {
        switch error {
        case let failure as JobFailure:
            return failure.retryable ? .retry : .permanent
        case let error as PostgresError:
            if error.isTransient || error.sqlState.map(retryStatementStates.contains) == true { return .reconnect }
            // A value the server refuses (invalid JSON, a check constraint, a character it cannot store) is the
            // job's own fault when its result is written; elsewhere it is the fleet's (a grant, a missing object),
            // which a later attempt may not meet.
            return phase == .write || error.kind == .decoding ? .permanent : .retry
        case let error as FetchError:
            return error.isRetryable ? .retry : .permanent
        case is DecodeError, is InputQuantizer.OutOfRange:
            return .permanent
        case let error as ModelError:
            // Files that cannot be read now may be readable later; a checksum, config or format fault stays.
            return error.kind == .io ? .retry : .permanent
        default:
            // Unknown errors: a fault of the job's own data after it was fetched, else possibly passing.
            switch phase {
            case .decode, .infer, .encode, .write: return .permanent
            case .model, .fetch, .database: return .retry
            }
        }
    }
}

/// What a worker decides, as a pure value: which claimed jobs to run, skip or give back, when to write finished
/// results, which leases to renew and which were lost, when the drain deadline has passed, when maintenance is due.
/// Time is passed in (`now`, monotonic seconds), so every decision is tested without a clock, a database or a sleep.
/// The worker holds one in a `Mutex` and does the I/O each decision asks for.
///
/// Leases are keyed by attempt (`AttemptID`): a slot that holds attempt 1 of a job can never renew, skip or drop
/// the lease of attempt 2 of the same job that another slot (or worker) runs.
struct WorkerStateMachine: Sendable {
    struct Settings: Sendable, Equatable {
        /// Longest time a finished job's result waits to be written with others.
        var flushSeconds: Double = 0.05
        /// After `stop`, how long in-flight jobs may finish before they are given back.
        var gracePeriodSeconds: Double = 30
        /// How often expiry and retention run.
        var maintenanceSeconds: Double = 60
        /// Decoded samples of a claimed batch run through the model together, up to this many at once.
        var maxInferenceSamples: Int = 4096
    }

    let settings: Settings
    private(set) var stopRequestedAt: Double?
    /// Attempts claimed by this worker and not yet finished (written, failed, released or skipped).
    private(set) var inFlight: [AttemptID: JobClaim] = [:]
    /// Attempts the heartbeat found no longer leased to this worker.
    private(set) var lostLeases: Set<AttemptID> = []
    private(set) var nextMaintenance: Double?

    init(settings: Settings) {
        self.settings = settings
    }

    // MARK: Stopping

    var isStopping: Bool { stopRequestedAt != nil }

    /// Returns true the first time (the caller logs "draining").
    mutating func stop(now: Double) -> Bool {
        guard stopRequestedAt == nil else { return false }
        stopRequestedAt = now
        return true
    }

    /// The moment unfinished jobs are given back: the stop request plus the grace period.
    var drainDeadline: Double? { stopRequestedAt.map { $0 + settings.gracePeriodSeconds } }

    func drainDeadlinePassed(now: Double) -> Bool { drainDeadline.map { now >= $0 } ?? false }

    // MARK: The claim loop

    /// A slot claimed these attempts: their leases are renewed from now on.
    mutating func claimed(_ claims: [JobClaim]) {
        for claim in claims { inFlight[claim.key] = claim }
    }

    enum StartDecision: Equatable {
        /// Run it.
        case run
        /// Its lease was taken over while it waited in the batch (this worker was cut off): someone else runs it.
        case skipLeaseLost
        /// The worker is stopping: write what is finished, then give this one and the rest of the batch back.
        case releaseRest
    }

    /// Whether to start the next claimed job of a batch. Skipping finishes the attempt here.
    mutating func beforeStarting(_ claim: JobClaim) -> StartDecision {
        if isStopping { return .releaseRest }
        if lostLeases.remove(claim.key) != nil {
            inFlight.removeValue(forKey: claim.key)
            return .skipLeaseLost
        }
        return .run
    }

    /// Whether finished results should be written now: when the batch has no more jobs to run, when the oldest has
    /// waited `flushSeconds` for company, or when the worker is stopping.
    func shouldFlush(pending: Int, oldestPendingAt: Double?, remaining: Int, now: Double) -> Bool {
        guard pending > 0 else { return false }
        if remaining == 0 || isStopping { return true }
        guard let oldestPendingAt else { return true }
        return now - oldestPendingAt >= settings.flushSeconds
    }

    /// Whether the decoded jobs waiting for the model should run now, as one batch: when the claimed batch has no
    /// more jobs to fetch, when the worker is stopping, when they hold `maxInferenceSamples` samples, or when the
    /// oldest has waited `flushSeconds` for company (a slow fetch does not hold back the jobs already decoded).
    func shouldInfer(readySamples: Int, oldestReadyAt: Double?, remaining: Int, now: Double) -> Bool {
        guard readySamples > 0 else { return false }
        if remaining == 0 || isStopping || readySamples >= settings.maxInferenceSamples { return true }
        guard let oldestReadyAt else { return true }
        return now - oldestReadyAt >= settings.flushSeconds
    }

    /// These attempts' outcomes were written (or given up): stop renewing their leases.
    mutating func finished<S: Sequence>(_ attempts: S) where S.Element == AttemptID {
        for attempt in attempts {
            inFlight.removeValue(forKey: attempt)
            lostLeases.remove(attempt)
        }
    }

    // MARK: The heartbeat

    enum HeartbeatDecision: Equatable {
        /// Renew these leases (possibly none: the heartbeat still runs).
        case renew([AttemptID])
        /// The grace period is over: give these back and stop.
        case releaseAndExit([JobClaim])
    }

    func heartbeat(now: Double) -> HeartbeatDecision {
        if drainDeadlinePassed(now: now) {
            return .releaseAndExit(inFlight.values.sorted { $0.key < $1.key })
        }
        return .renew(inFlight.keys.sorted())
    }

    /// The renewal of `requested` came back with `held`: records and returns the attempts that were lost and are
    /// still in flight (one may have finished between the request and the answer: that one is not lost).
    mutating func leasesRenewed(requested: [AttemptID], held: Set<AttemptID>) -> [AttemptID] {
        let lost = requested.filter { !held.contains($0) && inFlight[$0] != nil }
        lostLeases.formUnion(lost)
        return lost
    }

    /// Whether expiry and retention are due now; if so, schedules the next run.
    mutating func maintenanceDue(now: Double) -> Bool {
        guard now >= (nextMaintenance ?? now) else { return false }
        nextMaintenance = now + settings.maintenanceSeconds
        return true
    }

    // MARK: Retries

    /// What to write for a failed attempt.
    static func decision(for failure: JobFailure, claim: JobClaim, policy: RetryPolicy,
                         random: Double = Double.random(in: 0..<1)) -> RetryPolicy.Decision {
        policy.decide(attempt: claim.attempt, maxAttempts: claim.maxAttempts, retryable: failure.retryable, random: random)
    }

    /// Backoff of a slot that reconnects: doubles from 0.5 s up to 10 s.
    static func reconnectBackoff(after previous: Double?) -> Double {
        guard let previous else { return 0.5 }
        return min(previous * 2, 10)
    }
}
