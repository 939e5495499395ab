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
        let worker = Worker(configuration: fleet.configuration(), logger: quietLogger(),
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
        // which kernel paths this CPU offers, and which the loaded model runs
        #expect(lines.contains { $0.hasPrefix("bitfleet_cpu_kernels_info{") && $0.contains("portable") && $0.hasSuffix(" 1.0") }, "\(text)")
        #expect(lines.contains { $0.hasPrefix("bitfleet_model_kernels_info{") && $0.contains("model=\"tiny") && $0.hasSuffix(" 1.0") }, "\(text)")
    }
}

@Suite("Lost leases")
struct LostLeaseTests {
    @Test func aClaimedJobTakenOverBeforeItStartsIsSkipped() throws {
        let fleet = try FleetFixture()
        let slow = try fleet.client.enqueue(.init(model: "tiny", inputURL: fleet.http.url("stall/3")))
        let url = try fleet.serveNPY("l.npy", samples: FleetFixture.randomSamples(1, seed: 90))
        let taken = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        let registry = PrometheusCollectorRegistry()
        let worker = Worker(configuration: fleet.configuration {
            $0.exitWhenDrained = false
            $0.concurrency = 1
            $0.claimBatch = 2
            $0.heartbeatSeconds = 0.2
            $0.fetchPolicy.totalTimeout = 1.5
            $0.fetchPolicy.lowSpeedTime = 10
        }, logger: quietLogger(), metrics: WorkerMetrics(factory: WorkerMetrics.prometheusFactory(registry: registry)))
        let returned = DispatchSemaphore(value: 0)
        Thread { try? worker.run(); returned.signal() }.start()
        for _ in 0..<50 where try fleet.scalar("SELECT count(*) FROM bitfleet.jobs WHERE state = 'running'") != "2" {
            Thread.sleep(forTimeInterval: 0.05)
        }
        // Another worker takes the second job over while the first one stalls (as after a rescue).
        try fleet.connection.query(
            "UPDATE bitfleet.jobs SET lease_owner = 'thief', attempt = attempt + 1 WHERE id = $1", [taken])
        for _ in 0..<100 where try fleet.client.job(slow)?.state == "running" { Thread.sleep(forTimeInterval: 0.05) }
        Thread.sleep(forTimeInterval: 0.3)
        worker.stop()
        #expect(returned.wait(timeout: .now() + 10) == .success)
        #expect(try fleet.client.job(slow)?.state == "failed")
        #expect(try fleet.scalar("SELECT lease_owner FROM bitfleet.jobs WHERE id = $1", [taken]) == "thief")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results") == "0")
        #expect(registry.emitToString().contains("bitfleet_jobs_total{outcome=\"lease_lost\"} 1"))
    }
}
