import BitFleetPostgres
import BitFleetTestSupport
import BitFleetWorker
import Foundation
import Testing

/// Per-job phase CPU seconds (`bitfleet.job_costs.{fetch,decode,infer,encode,write}_cpu_seconds`, migration 0008):
/// filled by real workers, never negative, and adding up to the job's metered `cpu_seconds`.
@Suite("Phase CPU seconds: real Postgres, real HTTP, real engine", .serialized)
struct PhaseCPUTests {
    static let phases = ["fetch", "decode", "infer", "encode", "write"]

    /// Each job's five phases are filled and non-negative; their sum is its metered CPU seconds and its euros follow
    /// from that sum. Jobs of different sizes, claimed together (their inference and write are shared among them).
    @Test func everyJobHasItsPhasesAndTheySumToItsMeteredCPU() throws {
        let fleet = try FleetFixture()
        var ids: [Int] = []
        for (index, count) in [3, 40, 1, 17, 64, 5].enumerated() {
            let url = try fleet.serveNPY("p\(index).npy", samples: FleetFixture.randomSamples(count, seed: UInt64(100 + index)))
            ids.append(try fleet.client.enqueue(.init(model: "tiny", inputURL: url)))
        }
        // One JSON input too (a decoder of its own).
        let json = "[" + FleetFixture.randomSamples(4, seed: 99).map { "[" + $0.map(String.init).joined(separator: ",") + "]" }
            .joined(separator: ",") + "]"
        var request = FleetClient.JobRequest(model: "tiny", inputURL: try fleet.serve("p.json", bytes: Data(json.utf8)))
        request.inputFormat = "json:uint8"
        ids.append(try fleet.client.enqueue(request))

        let worker = try fleet.drain { $0.concurrency = 1; $0.claimBatch = 8 }
        #expect(worker.statistics.succeeded == ids.count)

        let rows = try fleet.connection.query("SELECT * FROM bitfleet.job_costs ORDER BY job_id")
        #expect(rows.count == ids.count)
        for row in rows {
            let job = try row.int("job_id")
            var sum = 0.0
            for phase in Self.phases {
                let value = try #require(try row.optionalDouble("\(phase)_cpu_seconds"), "job \(job): \(phase)_cpu_seconds is NULL")
                #expect(value >= 0, "job \(job): \(phase)_cpu_seconds = \(value)")
                #expect(value < 5, "job \(job): \(phase)_cpu_seconds = \(value)")
                sum += value
            }
            let cpu = try row.double("cpu_seconds")
            #expect(cpu > 0)
            #expect(abs(sum - cpu) <= 1e-9 * max(1, cpu), "job \(job): phases sum to \(sum), cpu_seconds is \(cpu)")
            // The euros follow the metered CPU seconds (write included) and the memory side.
            #expect(abs(try row.double("cpu_euros") - cpu / 3600 * 0.08) < 1e-15)
            #expect(abs(try row.double("euros") - row.double("cpu_euros") - row.double("memory_euros")) < 1e-15)
            // Work was measured where work was done.
            #expect(try row.double("infer_cpu_seconds") > 0, "job \(job)")
            #expect(try row.double("fetch_cpu_seconds") > 0, "job \(job)")
        }
        let total = try #require(Double(try fleet.scalar("SELECT sum(cpu_seconds) FROM bitfleet.job_costs") ?? ""))
        let phases = try #require(Double(try fleet.scalar("""
            SELECT sum(fetch_cpu_seconds + decode_cpu_seconds + infer_cpu_seconds + encode_cpu_seconds + write_cpu_seconds)
            FROM bitfleet.job_costs
            """) ?? ""))
        #expect(abs(total - phases) <= 1e-9 * max(1, total))
    }

    /// The write share is recorded once, only by the worker that wrote the rows, and it moves cpu_seconds and
    /// euros by exactly its share: known numbers through the worker's own functions.
    @Test func theWriteShareIsAddedOnceByTheWriterOnly() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("w.npy", samples: FleetFixture.randomSamples(1, seed: 5))
        for _ in 0..<2 { _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: url)) }
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "writer")
        let claims = try queue.claim(limit: 2, leaseSeconds: 30)
        #expect(claims.count == 2)
        var cost = CostRecord(nodeClass: "t", samples: 1, queueWaitSeconds: 0, fetchSeconds: 0.1, decodeSeconds: 0.1,
                              inferSeconds: 0.1, cpuSeconds: 0.010, bytesFetched: 1, binaryOps: 1, pricePerCoreHour: 3.6)
        cost.fetchCPUSeconds = 0.001
        cost.decodeCPUSeconds = 0.002
        cost.inferCPUSeconds = 0.003
        cost.encodeCPUSeconds = 0.004
        let completion = JobCompletion(modelVersion: "1", samples: 1, output: "{\"predictions\": []}", cost: cost)
        let written = try queue.complete(claims.map { ($0, completion) })
        #expect(written == Set(claims.map(\.id)))

        // Another worker cannot record a write share on these rows.
        try JobQueue(connection: try fleet.database.connect(), workerID: "other")
            .recordWriteTime(jobIDs: written, seconds: 9, cpuSeconds: 9)
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs WHERE write_cpu_seconds IS NOT NULL") == "0")

        try queue.recordWriteTime(jobIDs: written, seconds: 0.5, cpuSeconds: 0.006)
        try queue.recordWriteTime(jobIDs: written, seconds: 7, cpuSeconds: 7)   // once only: ignored
        for row in try fleet.connection.query("SELECT * FROM bitfleet.job_costs") {
            #expect(abs(try row.double("write_cpu_seconds") - 0.003) < 1e-12)
            #expect(abs(try row.double("write_seconds") - 0.25) < 1e-12)
            #expect(abs(try row.double("fetch_cpu_seconds") - 0.001) < 1e-12)
            #expect(abs(try row.double("decode_cpu_seconds") - 0.002) < 1e-12)
            #expect(abs(try row.double("infer_cpu_seconds") - 0.003) < 1e-12)
            #expect(abs(try row.double("encode_cpu_seconds") - 0.004) < 1e-12)
            #expect(abs(try row.double("cpu_seconds") - 0.013) < 1e-12)
            // 0.013 core-seconds at 3.6 €/core-hour
            #expect(abs(try row.double("euros") - 0.013 / 3600 * 3.6) < 1e-15)
            #expect(abs(try row.double("cpu_euros") - 0.013 / 3600 * 3.6) < 1e-15)
        }
    }
}
