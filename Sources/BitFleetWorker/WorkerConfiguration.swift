import BitFleetFetch
#if canImport(Glibc)
import Glibc
#endif

/// Everything a worker process is told by its operator (flags or environment).
public struct WorkerConfiguration: Sendable {
    /// libpq URL; nil uses libpq's PG* variables.
    public var databaseURL: String?
    /// Executor slots: jobs processed at the same time (each slot owns a database connection and an HTTP handle).
    public var concurrency: Int = 2
    /// How long a claim is valid without a heartbeat; a dead worker's jobs run again after about this long.
    public var leaseSeconds: Double = 30
    /// How often leases are renewed and expired leases rescued.
    public var heartbeatSeconds: Double = 5
    /// How long an idle slot sleeps before looking again when no notification arrives.
    public var pollSeconds: Double = 2
    /// Jobs claimed per statement by one slot; their completions are written together too.
    public var claimBatch = 8
    /// Longest time a finished job's result waits to be written with others.
    public var flushSeconds: Double = 0.05
    /// Do not LISTEN (for PgBouncer in transaction pooling mode): poll only.
    public var pollOnly = false
    /// Euros per core-hour of this node class, used for every cost row this worker writes.
    public var pricePerCoreHour: Double = 0.05
    /// Euros per GB-hour of memory of this node class: the model's memory × each job's wall time is charged at it.
    public var pricePerGBHour: Double = 0
    public var nodeClass = "default"
    /// Base directory for model URIs that are relative paths.
    public var modelDirectory: String?
    public var fetchPolicy = FetchPolicy()
    public var retryPolicy = RetryPolicy()
    /// On SIGTERM: stop claiming, let in-flight jobs finish for this long, then give them back to the queue.
    public var gracePeriodSeconds: Double = 30
    /// Exit once no job is queued, retrying or running (the demo and tests).
    public var exitWhenDrained = false
    /// Threads the engine may use for one job's inference.
    public var inferenceThreads = 1
    /// Cores this worker is priced for (idle cost is allocated minus used); nil = concurrency × inference threads.
    public var cores: Double?
    var allocatedCores: Double { cores ?? Double(concurrency * inferenceThreads) }
    /// How often a worker expires batches and prunes finished jobs (the retention is the database owner's setting,
    /// `bitfleet.settings.finished_job_retention`, not the worker's).
    public var maintenanceSeconds: Double = 60
    /// Session limits on every worker connection, so that a stray lock or an abandoned transaction cannot wedge
    /// claims, heartbeats or the drain: the longest a statement may run, wait for a lock, or a transaction idle.
    public var statementTimeoutSeconds: Double = 30
    public var lockTimeoutSeconds: Double = 5
    public var idleInTransactionTimeoutSeconds: Double = 60
    /// Faults to inject into chosen phases of chosen jobs (tests only).
    var faults: FaultInjection?
    /// Unique per process: host, pid and a random suffix.
    public var workerID: String

    public init(databaseURL: String? = nil) {
        self.databaseURL = databaseURL
        self.workerID = Self.makeWorkerID()
    }

    public static func makeWorkerID() -> String {
        "\(hostName())-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Throws a chosen error in a chosen phase of chosen jobs: how the tests put a failure into the phases that no real
/// input can reach on demand (inference, encoding). Never set outside tests.
struct FaultInjection: Sendable {
    let fault: @Sendable (_ claims: [JobClaim], _ phase: JobPhase) throws -> Void

    init(_ fault: @escaping @Sendable (_ claims: [JobClaim], _ phase: JobPhase) throws -> Void) {
        self.fault = fault
    }

    func inject(_ claims: [JobClaim], _ phase: JobPhase) throws {
        try fault(claims, phase)
    }
}
