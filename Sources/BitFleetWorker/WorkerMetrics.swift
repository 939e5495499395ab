import CoreMetrics
import Metrics
import Prometheus
import Synchronization
import BitFleetEngine

/// The worker's live metrics, recorded through swift-metrics (so any backend works) and served by the
/// `HealthServer` at `/metrics` when the executable bootstraps the Prometheus backend.
///
/// | metric | type | labels | recorded by |
/// |---|---|---|---|
/// | `bitfleet_jobs_total` | counter | `outcome` = succeeded, failed, dead, lease_lost | `jobFinished(outcome:)` |
/// | `bitfleet_job_phase_seconds` | histogram | `phase` = queue_wait, fetch, decode, infer, write | `phase(_:seconds:)` |
/// | `bitfleet_claim_seconds` | histogram | — | `claim(seconds:jobs:)` |
/// | `bitfleet_claim_jobs` | histogram | — (jobs returned per claim statement) | `claim(seconds:jobs:)` |
/// | `bitfleet_claimed_jobs_total` | counter | — | `claim(seconds:jobs:)` |
/// | `bitfleet_samples_total` | counter | — (samples/s = `rate(bitfleet_samples_total[1m])`) | `samples(_:)` |
/// | `bitfleet_busy_slots` | gauge | — | `busySlots(_:)` |
/// | `bitfleet_cpu_kernels_info` | gauge (1) | `xnor`, `stem` = the kernel paths this CPU supports | `init` |
/// | `bitfleet_model_kernels_info` | gauge (1) | `model`, `xnor`, `stem`, `stem_small_batch` = the paths a loaded model uses | `modelKernels(...)` |
///
/// Every method is cheap and thread-safe; call them from any slot thread.
public final class WorkerMetrics: Sendable {
    public static let outcomes = ["succeeded", "failed", "dead", "lease_lost"]
    public static let phases = ["queue_wait", "fetch", "decode", "infer", "write"]

    public static let jobsLabel = "bitfleet_jobs_total"
    public static let phaseLabel = "bitfleet_job_phase_seconds"
    public static let claimSecondsLabel = "bitfleet_claim_seconds"
    public static let claimJobsLabel = "bitfleet_claim_jobs"
    public static let claimedJobsLabel = "bitfleet_claimed_jobs_total"
    public static let samplesLabel = "bitfleet_samples_total"
    public static let busySlotsLabel = "bitfleet_busy_slots"
    public static let cpuKernelsLabel = "bitfleet_cpu_kernels_info"
    public static let modelKernelsLabel = "bitfleet_model_kernels_info"

    private let factory: any MetricsFactory
    private let outcomeCounters: [String: CoreMetrics.Counter]
    private let otherOutcomes = Mutex<[String: CoreMetrics.Counter]>([:])
    private let phaseTimers: [String: CoreMetrics.Timer]
    private let otherPhases = Mutex<[String: CoreMetrics.Timer]>([:])
    private let claimTimer: CoreMetrics.Timer
    private let claimSize: CoreMetrics.Recorder
    private let claimedJobs: CoreMetrics.Counter
    private let samplesCounter: CoreMetrics.Counter
    private let busy: CoreMetrics.Gauge

    /// - Parameter factory: the metrics backend; the default is the one `MetricsSystem.bootstrap` installed
    ///   (a no-op backend if none was). Tests pass their own `PrometheusMetricsFactory`.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        outcomeCounters = Dictionary(uniqueKeysWithValues: Self.outcomes.map {
            ($0, CoreMetrics.Counter(label: Self.jobsLabel, dimensions: [("outcome", $0)], factory: factory))
        })
        phaseTimers = Dictionary(uniqueKeysWithValues: Self.phases.map {
            ($0, CoreMetrics.Timer(label: Self.phaseLabel, dimensions: [("phase", $0)], factory: factory))
        })
        claimTimer = CoreMetrics.Timer(label: Self.claimSecondsLabel, dimensions: [], factory: factory)
        claimSize = CoreMetrics.Recorder(label: Self.claimJobsLabel, dimensions: [], aggregate: true, factory: factory)
        claimedJobs = CoreMetrics.Counter(label: Self.claimedJobsLabel, dimensions: [], factory: factory)
        samplesCounter = CoreMetrics.Counter(label: Self.samplesLabel, dimensions: [], factory: factory)
        busy = CoreMetrics.Gauge(label: Self.busySlotsLabel, dimensions: [], factory: factory)
        let cpu = KernelCapabilities.running
        CoreMetrics.Gauge(label: Self.cpuKernelsLabel, dimensions: [
            ("xnor", cpu.xnorPaths.joined(separator: ",")), ("stem", cpu.stemKernels.joined(separator: ",")),
        ], factory: factory).record(1)
    }

    /// A model was loaded: which kernel paths it runs on this CPU (an info metric, value 1).
    public func modelKernels(model: String, xnor: String, stem: String, stemSmallBatch: String, conv: String? = nil) {
        var dimensions = [("model", model), ("xnor", xnor), ("stem", stem), ("stem_small_batch", stemSmallBatch)]
        if let conv { dimensions.append(("conv", conv)) }
        CoreMetrics.Gauge(label: Self.modelKernelsLabel, dimensions: dimensions, factory: factory).record(1)
    }

    /// A job attempt ended: `succeeded` (result written), `failed` (will retry), `dead` (no more attempts),
    /// `lease_lost` (another worker owns it now; nothing written).
    public func jobFinished(outcome: String) {
        if let counter = outcomeCounters[outcome] {
            counter.increment()
            return
        }
        let counter = otherOutcomes.withLock { cache in
            if let existing = cache[outcome] { return existing }
            let made = CoreMetrics.Counter(label: Self.jobsLabel, dimensions: [("outcome", outcome)], factory: factory)
            cache[outcome] = made
            return made
        }
        counter.increment()
    }

    /// Wall time of one phase of one job: `queue_wait`, `fetch`, `decode`, `infer` or `write`.
    public func phase(_ name: String, seconds: Double) {
        guard seconds.isFinite, seconds >= 0 else { return }
        let timer = phaseTimers[name] ?? otherPhases.withLock { cache in
            if let existing = cache[name] { return existing }
            let made = CoreMetrics.Timer(label: Self.phaseLabel, dimensions: [("phase", name)], factory: factory)
            cache[name] = made
            return made
        }
        timer.recordSeconds(seconds)
    }

    /// One claim statement: how long it took and how many jobs it returned (0 when the queue was empty).
    public func claim(seconds: Double, jobs: Int) {
        if seconds.isFinite, seconds >= 0 { claimTimer.recordSeconds(seconds) }
        claimSize.record(jobs)
        if jobs > 0 { claimedJobs.increment(by: jobs) }
    }

    /// Samples (inferences) written with succeeded jobs.
    public func samples(_ n: Int) {
        if n > 0 { samplesCounter.increment(by: n) }
    }

    /// Slots working on a job right now (0…concurrency).
    public func busySlots(_ n: Int) {
        busy.record(n)
    }

    // MARK: - Prometheus backend

    /// Histogram buckets, in seconds, of the phase and claim histograms.
    public static let phaseBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                1, 2.5, 5, 10, 30, 60, 120]
    public static let claimBuckets: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                2.5, 5]
    public static let claimJobsBuckets: [Double] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]

    /// A Prometheus factory over `registry` with the buckets above; bootstrap `MetricsSystem` with it once in the
    /// executable, and serve `registry.emitToString()` at `/metrics`.
    public static func prometheusFactory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        let durations = { (seconds: [Double]) in seconds.map { Duration.nanoseconds(Int64(($0 * 1e9).rounded())) } }
        factory.durationHistogramBuckets[phaseLabel] = durations(phaseBuckets)
        factory.durationHistogramBuckets[claimSecondsLabel] = durations(claimBuckets)
        factory.valueHistogramBuckets[claimJobsLabel] = claimJobsBuckets
        return factory
    }
}
