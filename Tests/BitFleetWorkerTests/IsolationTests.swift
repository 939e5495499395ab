@testable import BitFleetWorker
import BitFleetEngine
import BitFleetPostgres
import BitFleetTestSupport
import Foundation
import Synchronization
import Testing

/// One bad job never hurts another: a poisoned job in the same claim batch as seven good ones, for a failure in each
/// phase. Every good job succeeds on its first (and only) attempt; the bad one ends dead with its real cause.
@Suite("Isolation: one bad job in a claim batch", .serialized)
struct IsolationTests {
    struct InjectedFault: Error, CustomStringConvertible {
        var description: String
    }

    enum Poison: String, CaseIterable, CustomTestStringConvertible {
        case model, fetch, decode, infer, encode, write, writeInjected
        var testDescription: String { rawValue }
    }

    /// Seven good jobs (max_attempts 1) around one bad job (max_attempts 5), claimed together by one slot.
    @Test(arguments: Poison.allCases)
    func aPoisonedJobFailsAloneAndTheOthersSucceedOnTheirFirstAttempt(_ poison: Poison) throws {
        let fleet = try FleetFixture()
        let good = try fleet.serveNPY("good.npy", samples: FleetFixture.randomSamples(2, seed: 90))
        let row = (0..<FleetFixture.features).map { _ in "0.5" }.joined(separator: ",")
        var bad = FleetClient.JobRequest(model: "tiny", inputURL: good)
        bad.maxAttempts = 5
        let cause: String
        switch poison {
        case .model:
            bad.model = "no-such-model"
            cause = "unknown model \"no-such-model\""
        case .fetch:
            bad.inputURL = fleet.http.url("status/404")
            cause = "HTTP 404"
        case .decode:
            bad.inputURL = try fleet.serve("bad.npy", bytes: Data("not an npy file".utf8))
            bad.inputFormat = "npy"
            cause = "npy"
        case .infer, .encode, .writeInjected:
            bad.inputURL = fleet.http.url("good.npy?poison")
            cause = "injected \(poison.rawValue) fault"
        case .write:
            // A real result Postgres refuses to store: jsonb cannot hold a NUL character, and the custom_id of an
            // NDJSON sample goes into the result document as it is.
            bad.inputURL = try fleet.serve("nul.ndjson", bytes: Data("{\"custom_id\": \"a\\u0000b\", \"input\": [\(row)]}\n".utf8))
            cause = "the result could not be stored"
        }
        var ids: [Int] = []
        for index in 0..<8 {
            if index == 3 {
                ids.append(try fleet.client.enqueue(bad))
            } else {
                var request = FleetClient.JobRequest(model: "tiny", inputURL: good)
                request.maxAttempts = 1
                ids.append(try fleet.client.enqueue(request))
            }
        }
        let badID = ids[3]
        let phase: JobPhase? = switch poison {
        case .infer: .infer
        case .encode: .encode
        case .writeInjected: .write
        default: nil
        }
        let worker = try fleet.drain {
            $0.concurrency = 1
            $0.claimBatch = 8
            $0.flushSeconds = 60  // all eight results are written together
            if let phase {
                $0.faults = FaultInjection { claims, current in
                    guard current == phase, claims.contains(where: { $0.inputURL.hasSuffix("?poison") }) else { return }
                    if phase == .write {
                        throw PostgresError(kind: .server, sqlState: "23514", message: "injected writeInjected fault")
                    }
                    throw InjectedFault(description: "injected \(poison.rawValue) fault")
                }
            }
        }
        for id in ids where id != badID {
            let job = try #require(try fleet.client.job(id))
            #expect(job.state == "succeeded", "\(poison): job \(id) \(job.state) \(job.lastError ?? "")")
            #expect(job.attempt == 1)
            #expect(job.output != nil)
        }
        let job = try #require(try fleet.client.job(badID))
        #expect(job.state == "dead", "\(poison): \(job.state) \(job.lastError ?? "")")
        #expect(job.attempt == 1, "\(poison): a permanent error is not retried")
        #expect(job.lastError?.contains(cause) == true, "\(poison): \(job.lastError ?? "no error")")
        #expect(job.output == nil)
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results") == "7")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs") == "7")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs WHERE write_seconds IS NULL") == "0")
        #expect(worker.statistics.succeeded == 7)
    }

    /// The batched write loses its connection: the slot reconnects and writes again; no lease is abandoned, and
    /// every job succeeds on its first and only attempt.
    @Test func aConnectionLostDuringTheBatchedWriteReconnectsAndLosesNothing() throws {
        let fleet = try FleetFixture()
        let good = try fleet.serveNPY("good.npy", samples: FleetFixture.randomSamples(2, seed: 91))
        var ids: [Int] = []
        for _ in 0..<8 {
            var request = FleetClient.JobRequest(model: "tiny", inputURL: good)
            request.maxAttempts = 1
            ids.append(try fleet.client.enqueue(request))
        }
        let terminated = Mutex(0)
        let url = fleet.database.url
        _ = try fleet.drain {
            $0.concurrency = 1
            $0.claimBatch = 8
            $0.flushSeconds = 60
            $0.leaseSeconds = 3
            $0.faults = FaultInjection { _, phase in
                guard phase == .write, terminated.withLock({ $0 }) == 0 else { return }
                let admin = try PostgresConnection(url: url)
                let count = try admin.query("""
                    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                    WHERE datname = current_database() AND application_name = 'bitfleet-worker'
                    """).count
                terminated.withLock { $0 = count }
            }
        }
        #expect(terminated.withLock { $0 } > 0)
        for id in ids {
            let job = try #require(try fleet.client.job(id))
            #expect(job.state == "succeeded", "job \(id): \(job.state) \(job.lastError ?? "")")
            #expect(job.attempt == 1)
        }
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results") == "8")
    }

    @Test func rawEightBitValuesInJSONAndNDJSON() throws {
        let fleet = try FleetFixture()
        let samples = FleetFixture.randomSamples(3, seed: 92)
        let json = "[" + samples.map { "[" + $0.map(String.init).joined(separator: ",") + "]" }.joined(separator: ",") + "]"
        let ndjson = samples.enumerated().map { "{\"custom_id\": \"s\($0.offset)\", \"input\": [" + $0.element.map(String.init).joined(separator: ",") + "]}" }
            .joined(separator: "\n") + "\n"
        var fromJSON = FleetClient.JobRequest(model: "tiny", inputURL: try fleet.serve("pixels.json", bytes: Data(json.utf8)))
        fromJSON.inputFormat = "json:uint8"
        var fromNDJSON = FleetClient.JobRequest(model: "tiny", inputURL: try fleet.serve("pixels.ndjson", bytes: Data(ndjson.utf8)))
        fromNDJSON.inputFormat = "ndjson:uint8"
        let plain = FleetClient.JobRequest(model: "tiny", inputURL: try fleet.serve("plain.json", bytes: Data(json.utf8)))
        let ids = [try fleet.client.enqueue(fromJSON), try fleet.client.enqueue(fromNDJSON), try fleet.client.enqueue(plain)]
        _ = try fleet.drain()
        let expected = try fleet.model.predict(samples: samples.flatMap { $0 }, count: samples.count, topClasses: 3)
        for id in ids.prefix(2) {
            let job = try #require(try fleet.client.job(id))
            #expect(job.state == "succeeded", "\(job.lastError ?? "")")
            let output = try JSONSerialization.jsonObject(with: Data(try #require(job.output).utf8)) as? [String: Any]
            let predictions = try #require(output?["predictions"] as? [[String: Any]])
            #expect(predictions.map { (($0["top"] as? [[String: Any]])?.first?["class"] as? Int) } == expected.predictions.map { $0.first?.index })
        }
        // The same integers as plain JSON are scaled: refused, and the error says which format to use.
        let refused = try #require(try fleet.client.job(ids[2]))
        #expect(refused.state == "dead")
        #expect(refused.lastError?.contains("input_format 'json:uint8'") == true, "\(refused.lastError ?? "")")
    }
}

/// Cancelled and expired batches stop: no further attempt, no rescue into another attempt, no second bill.
@Suite("Stopped batches", .serialized)
struct StoppedBatchTests {
    @Test func aRetryableFailureAfterCancelEndsCancelledWithNoFurtherAttempt() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("c.npy", samples: FleetFixture.randomSamples(1, seed: 93))
        let batch = try fleet.client.createBatch(model: "tiny", items: (0..<2).map { .init(inputURL: url, customID: "c\($0)") })
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "w")
        let claims = try queue.claim(limit: 2, leaseSeconds: 30)
        #expect(claims.count == 2)
        #expect(try fleet.client.cancelBatch(batch) == 0)  // both running: they may finish
        let state = try queue.fail(claims[0], JobFailure(.transient, phase: "fetch", "HTTP 503"), decision: .retry(delay: 0))
        #expect(state == "cancelled")
        let job = try #require(try fleet.client.job(claims[0].id))
        #expect(job.state == "cancelled")
        #expect(job.lastError == "fetch: HTTP 503 (not retried: batch cancelled)")
        #expect(try fleet.scalar("SELECT jsonb_array_length(errors) FROM bitfleet.jobs WHERE id = $1", [claims[0].id]) == "1")
        // A permanent failure stays dead with its cause; a running job may still finish and is billed once.
        #expect(try queue.claim(limit: 10, leaseSeconds: 30).isEmpty)
        let completion = JobCompletion(modelVersion: "1", samples: 1, output: "{\"predictions\": []}", cost: CostRecord(
            nodeClass: "t", samples: 1, queueWaitSeconds: 0, fetchSeconds: 0, decodeSeconds: 0, inferSeconds: 0,
            cpuSeconds: 0.001, bytesFetched: 1, binaryOps: 1, pricePerCoreHour: 1))
        #expect(try queue.complete(claims[1], completion))
        #expect(try fleet.client.batchProgress(batch)?.status == "cancelled")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs") == "1")
    }

    @Test func aWorkerFailingAJobOfACancelledBatchDoesNotRetryIt() throws {
        let fleet = try FleetFixture()
        let batch = try fleet.client.createBatch(model: "tiny", items: [.init(inputURL: fleet.http.url("status/503"), customID: "x")])
        let admin = fleet.database.url
        _ = try fleet.drain {
            $0.faults = FaultInjection { claims, phase in
                guard phase == .fetch, let id = claims.first?.batchID else { return }
                _ = try PostgresConnection(url: admin).query("SELECT bitfleet.cancel_batch($1)", [id])
            }
        }
        let job = try #require(try fleet.client.batchResults(batch).first)
        #expect(job.state == "cancelled")
        #expect(job.attempt == 1)
        #expect(job.lastError?.contains("HTTP 503") == true)
        #expect(job.lastError?.contains("not retried: batch cancelled") == true)
    }

    @Test func anExpiredLeaseOfAnExpiredBatchIsNotRescuedIntoAnotherAttempt() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("e.npy", samples: FleetFixture.randomSamples(1, seed: 94))
        let batch = try fleet.client.createBatch(model: "tiny", items: [.init(inputURL: url, customID: "e")])
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "dies")
        let claim = try #require(try queue.claim(limit: 1, leaseSeconds: 0.2).first)
        try fleet.connection.query("UPDATE bitfleet.batches SET expires_at = now() - interval '1 second' WHERE id = $1", [batch])
        Thread.sleep(forTimeInterval: 0.4)
        #expect(try queue.rescueExpiredLeases() == 1)
        let job = try #require(try fleet.client.job(claim.id))
        #expect(job.state == "cancelled")
        #expect(job.lastError == "batch expired")
        #expect(job.attempt == 1)
        #expect(try queue.claim(limit: 10, leaseSeconds: 30).isEmpty)
        #expect(try fleet.client.batchProgress(batch)?.status == "expired")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs") == "0")
    }

    @Test func aCancelledBatchsRescuedJobEndsCancelled() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("r.npy", samples: FleetFixture.randomSamples(1, seed: 95))
        let batch = try fleet.client.createBatch(model: "tiny", items: [.init(inputURL: url, customID: "r")])
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "dies")
        let claim = try #require(try queue.claim(limit: 1, leaseSeconds: 0.2).first)
        try fleet.client.cancelBatch(batch)
        Thread.sleep(forTimeInterval: 0.4)
        #expect(try queue.rescueExpiredLeases() == 1)
        #expect(try fleet.client.job(claim.id)?.state == "cancelled")
        #expect(try queue.claim(limit: 10, leaseSeconds: 30).isEmpty)
    }
}
