#if canImport(Glibc)
import Glibc
#endif

/// The metered cost of one job, as written to `bitfleet.job_costs`.
public struct CostRecord: Sendable, Equatable {
    public var nodeClass: String
    public var samples: Int
    public var queueWaitSeconds: Double
    public var fetchSeconds: Double
    public var decodeSeconds: Double
    public var inferSeconds: Double
    public var cpuSeconds: Double
    public var bytesFetched: Int
    public var binaryOps: Int
    public var pricePerCoreHour: Double
    /// The model's weights in memory (mapped + private), held for the job's wall time.
    public var modelMemoryBytes: Int = 0
    public var pricePerGBHour: Double = 0
    /// Samples routed to each expert (each sample counts once per selected expert).
    public var expertActivations: [Int] = []
    /// Thread CPU seconds per phase (`bitfleet.job_costs.*_cpu_seconds`). A phase run for several jobs at once is
    /// shared among them (inference by samples). `cpuSeconds` is their sum; the write phase's CPU is known only
    /// after the statement that stores this record, and is added to the row then (`worker_write_time`).
    public var fetchCPUSeconds: Double = 0
    public var decodeCPUSeconds: Double = 0
    public var inferCPUSeconds: Double = 0
    public var encodeCPUSeconds: Double = 0

    public init(nodeClass: String, samples: Int, queueWaitSeconds: Double, fetchSeconds: Double, decodeSeconds: Double,
                inferSeconds: Double, cpuSeconds: Double, bytesFetched: Int, binaryOps: Int, pricePerCoreHour: Double) {
        self.nodeClass = nodeClass
        self.samples = samples
        self.queueWaitSeconds = queueWaitSeconds
        self.fetchSeconds = fetchSeconds
        self.decodeSeconds = decodeSeconds
        self.inferSeconds = inferSeconds
        self.cpuSeconds = cpuSeconds
        self.bytesFetched = bytesFetched
        self.binaryOps = binaryOps
        self.pricePerCoreHour = pricePerCoreHour
    }

    /// Core-seconds / 3600 × price per core-hour.
    public var cpuEuros: Double { cpuSeconds / 3600 * pricePerCoreHour }
    /// Model memory (GB, 10^9 bytes) × the job's wall time (fetch + decode + infer).
    public var memoryGBSeconds: Double { Double(modelMemoryBytes) / 1e9 * (fetchSeconds + decodeSeconds + inferSeconds) }
    public var memoryEuros: Double { memoryGBSeconds / 3600 * pricePerGBHour }
    public var euros: Double { cpuEuros + memoryEuros }
}

/// The worker's one clock helper: monotonic wall time, wall-clock time for database timestamps, and CPU time.
/// (Not named `Clock`, which would shadow the standard library's protocol.)
public enum WorkerClock {
    /// Monotonic seconds, for durations and deadlines.
    public static func monotonic() -> Double { read(CLOCK_MONOTONIC) }

    /// Seconds since the Unix epoch (for timestamps written to the database).
    public static func wall() -> Double { read(CLOCK_REALTIME) }

    /// CPU seconds this thread has used (user + system): what the job really cost, whatever else the machine did.
    public static func threadCPU() -> Double { read(CLOCK_THREAD_CPUTIME_ID) }

    /// CPU seconds of the whole process (all threads).
    public static func processCPU() -> Double { read(CLOCK_PROCESS_CPUTIME_ID) }

    private static func read(_ clock: clockid_t) -> Double {
        var spec = timespec()
        clock_gettime(clock, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}

/// Measures the phases of one job on the thread that runs it: wall time and thread CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`) of each, from one lap to the next.
struct PhaseTimer {
    private var wallStart = WorkerClock.monotonic()
    private var cpuStart = WorkerClock.threadCPU()
    private(set) var phases: [String: Double] = [:]
    private(set) var cpuPhases: [String: Double] = [:]

    /// Ends the current phase under `name` and starts the next.
    mutating func lap(_ name: String) {
        let now = WorkerClock.monotonic(), cpu = WorkerClock.threadCPU()
        phases[name, default: 0] += now - wallStart
        cpuPhases[name, default: 0] += max(0, cpu - cpuStart)
        wallStart = now
        cpuStart = cpu
    }

    /// Leaves `cpuSeconds` of the current phase off the job's bill (work the job merely triggered: a model load).
    mutating func exclude(cpuSeconds: Double) {
        cpuStart += max(0, cpuSeconds)
    }

    /// Records `seconds` (wall) and `cpuSeconds` under `name` measured elsewhere (a share of work done for several
    /// jobs at once); the current phase's clock is not touched.
    mutating func add(_ name: String, seconds: Double, cpuSeconds: Double) {
        phases[name, default: 0] += seconds
        cpuPhases[name, default: 0] += max(0, cpuSeconds)
    }

    /// Starts the next phase now, recording nothing for the time since the last lap (the thread was doing other
    /// jobs' work).
    mutating func restart() {
        wallStart = WorkerClock.monotonic()
        cpuStart = WorkerClock.threadCPU()
    }

    /// Wall seconds of a phase.
    subscript(name: String) -> Double { phases[name] ?? 0 }
    /// Thread CPU seconds of a phase.
    func cpu(_ name: String) -> Double { cpuPhases[name] ?? 0 }
}

/// Busy and idle core-seconds of the worker process between heartbeats (OpenCost-style: allocated cores × time,
/// of which the process CPU time is busy and the rest idle).
struct UsageMeter {
    struct Period: Equatable {
        var start: Double
        var end: Double
        var cores: Double
        var busy: Double
        var idle: Double
    }

    let cores: Double
    private var wallStart: Double
    private var cpuStart: Double

    init(cores: Double, wall: Double = WorkerClock.wall(), cpu: Double = WorkerClock.processCPU()) {
        self.cores = cores
        self.wallStart = wall
        self.cpuStart = cpu
    }

    /// Closes the period ending now and starts the next one.
    mutating func next(wall: Double = WorkerClock.wall(), cpu: Double = WorkerClock.processCPU()) -> Period {
        let seconds = max(0, wall - wallStart)
        let capacity = cores * seconds
        let busy = min(capacity, max(0, cpu - cpuStart))
        defer {
            wallStart = wall
            cpuStart = cpu
        }
        return Period(start: wallStart, end: wall, cores: cores, busy: busy, idle: capacity - busy)
    }
}
