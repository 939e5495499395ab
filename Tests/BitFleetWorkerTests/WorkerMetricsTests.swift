import BitFleetTestSupport
import BitFleetWorker
import Foundation
import Logging
import Prometheus
import Testing

@Suite("Worker metrics")
struct WorkerMetricsTests {
    @Test func aDrainedWorkerReportsOutcomesPhasesAndSamples() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("m.npy", samples: FleetFixture.randomSamples(3, seed: 80))
        _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: fleet.http.url("status/404")))
        let registry = PrometheusCollectorRegistry()
        var logger = Logger(label: "test.worker")
        logger.logLevel = .critical
        let worker = Worker(configuration: fleet.configuration(), logger: logger,
                            metrics: WorkerMetrics(factory: WorkerMetrics.prometheusFactory(registry: registry)))
        try worker.run()
        let text = registry.emitToString()
        let lines = text.split(separator: "\n").map(String.init)
        func value(_ prefix: String) -> Double? {
            lines.first { $0.hasPrefix(prefix + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect(value("bitfleet_jobs_total{outcome=\"succeeded\"}") == 2, "\(text)")
        #expect(value("bitfleet_jobs_total{outcome=\"dead\"}") == 1)
        #expect(value("bitfleet_samples_total") == 6)
        #expect(value("bitfleet_job_phase_seconds_count{phase=\"infer\"}") == 2)
        #expect(value("bitfleet_job_phase_seconds_count{phase=\"write\"}") == 2)
        #expect((value("bitfleet_claim_seconds_count") ?? 0) >= 1)
        #expect(value("bitfleet_busy_slots") == 0)
    }
}
