import BitFleetEngine
import BitFleetPostgres
import BitFleetTestSupport
import BitFleetWorker
import Foundation
import Logging
import Testing

@Suite("Worker end to end: real Postgres, real HTTP, real engine", .serialized)
struct WorkerEndToEndTests {
    @Test func jobsFromSQLAndFromTheClientSucceedWithResultAndCostRow() throws {
        let fleet = try FleetFixture()
        let samples = FleetFixture.randomSamples(5, seed: 1)
        let url = try fleet.serveNPY("five.npy", samples: samples)
        let fromSQL = try #require(Int(try fleet.scalar(
            "SELECT bitfleet.enqueue(model => 'tiny', input_url => $1, top_k => 2)", [url]) ?? ""))
        var request = FleetClient.JobRequest(model: "tiny", inputURL: url)
        request.tenant = "acme"
        let fromClient = try fleet.client.enqueue(request)

        let worker = try fleet.drain { $0.pricePerGBHour = 2.5 }
        #expect(worker.statistics.succeeded == 2)

        // The stored predictions are the engine's own on the same input.
        let expected = try fleet.model.predict(samples: samples.flatMap { $0 }, count: samples.count, topClasses: 2)
        let job = try #require(try fleet.client.job(fromSQL))
        #expect(job.state == "succeeded")
        #expect(job.attempt == 1)
        let output = try JSONSerialization.jsonObject(with: Data(try #require(job.output).utf8)) as? [String: Any]
        let predictions = try #require(output?["predictions"] as? [[String: Any]])
        #expect(predictions.count == 5)
        for (index, prediction) in predictions.enumerated() {
            let top = try #require(prediction["top"] as? [[String: Any]])
            #expect(top.count == 2)
            #expect(top.map { $0["class"] as? Int } == expected.predictions[index].map(\.index))
        }

        // One cost row per job, euros = CPU seconds × price, phases measured.
        let cost = try fleet.connection.query("SELECT * FROM bitfleet.job_costs WHERE job_id = $1", [fromClient])
        #expect(cost.count == 1)
        let row = cost[0]
        #expect(try row.int("samples") == 5)
        #expect(try row.optionalString("tenant") == "acme")
        let cpu = try row.double("cpu_seconds")
        #expect(cpu > 0 && cpu < 5)
        #expect(abs(try row.double("cpu_euros") - cpu / 3600 * 0.08) < 1e-12)
        let memoryBytes = try row.int("model_memory_bytes")
        #expect(memoryBytes == fleet.model.mappedBytes + fleet.model.privateBytes)
        let wall = try row.double("fetch_seconds") + row.double("decode_seconds") + row.double("infer_seconds")
        #expect(abs(try row.double("memory_gb_seconds") - Double(memoryBytes) / 1e9 * wall) < 1e-12)
        #expect(abs(try row.double("memory_euros") - row.double("memory_gb_seconds") / 3600 * 2.5) < 1e-15)
        #expect(abs(try row.double("euros") - row.double("cpu_euros") - row.double("memory_euros")) < 1e-15)
        #expect(try row.double("price_per_gb_hour") == 2.5)
        // Every sample is routed to top_k = 2 experts of the model's 6.
        let activations = try fleet.connection.query(
            "SELECT array_length(expert_activations, 1) AS n, (SELECT sum(a) FROM unnest(expert_activations) a)::int AS total FROM bitfleet.job_costs WHERE job_id = $1",
            [fromClient])[0]
        #expect(try activations.int("n") == 6)
        #expect(try activations.int("total") == 5 * 2)
        #expect(try row.double("price_per_core_hour") == 0.08)
        #expect(try row.int("bytes_fetched") == 5 * FleetFixture.features + 128)
        #expect(try row.int("binary_ops") > 0)
        #expect(try row.double("fetch_seconds") > 0)
        #expect(try row.double("infer_seconds") > 0)
        #expect(try row.optionalDouble("write_seconds") != nil)
        let day = try fleet.connection.query("SELECT jobs, samples FROM bitfleet.cost_by_model_day WHERE model = 'tiny'")
        #expect(try day[0].int("jobs") == 2)
        #expect(try day[0].int("samples") == 10)
    }

    /// A claimed batch's jobs run through the model together (one inference per model and top-k): each job still
    /// gets exactly its own predictions, its own expert activations, and a share of the inference CPU in
    /// proportion to its samples.
    @Test func jobsOfAClaimedBatchShareOneInferenceYetEachGetsItsOwnResultAndCost() throws {
        let fleet = try FleetFixture()
        let sizes = [3, 1, 7, 2, 5, 1030]
        let topKs = [3, 3, 2, 3, 2, 3]   // two shared passes (top 3, top 2) and the big job alone
        var inputs: [[[UInt8]]] = []
        var ids: [Int] = []
        for (i, n) in sizes.enumerated() {
            let samples = FleetFixture.randomSamples(n, seed: 500 + UInt64(i))
            inputs.append(samples)
            var request = FleetClient.JobRequest(model: "tiny", inputURL: try fleet.serveNPY("job\(i).npy", samples: samples))
            request.topK = topKs[i]
            ids.append(try fleet.client.enqueue(request))
        }
        let worker = try fleet.drain {
            $0.concurrency = 1
            $0.claimBatch = 8
            $0.flushSeconds = 60   // the whole claimed batch is decoded before any inference
        }
        #expect(worker.statistics.succeeded == sizes.count)
        var inferCPUPerSample: [Int: [Double]] = [:]
        for (i, id) in ids.enumerated() {
            let job = try #require(try fleet.client.job(id))
            #expect(job.state == "succeeded", "job \(i): \(job.lastError ?? "")")
            let expected = try fleet.model.predict(samples: inputs[i].flatMap { $0 }, count: sizes[i], topClasses: topKs[i])
            let output = try JSONSerialization.jsonObject(with: Data(try #require(job.output).utf8)) as? [String: Any]
            let predictions = try #require(output?["predictions"] as? [[String: Any]])
            #expect(predictions.count == sizes[i])
            for (index, prediction) in predictions.enumerated() {
                #expect(prediction["sample"] as? Int == index)
                let top = try #require(prediction["top"] as? [[String: Any]])
                #expect(top.map { $0["class"] as? Int } == expected.predictions[index].map(\.index), "job \(i) sample \(index)")
            }
            let row = try fleet.connection.query(
                "SELECT samples, expert_activations::text AS a, infer_cpu_seconds, binary_ops FROM bitfleet.job_costs WHERE job_id = $1", [id])[0]
            #expect(try row.int("samples") == sizes[i])
            #expect(try row.string("a") == "{" + expected.stats.expertActivations.map(String.init).joined(separator: ",") + "}",
                    "job \(i): its own experts, not the shared batch's")
            #expect(try row.int("binary_ops") == expected.stats.binaryOps)
            let infer = try row.double("infer_cpu_seconds")
            #expect(infer > 0)
            if sizes[i] < 1024 { inferCPUPerSample[topKs[i], default: []].append(infer / Double(sizes[i])) }
        }
        // within one shared inference, every job paid the same CPU per sample
        for (k, perSample) in inferCPUPerSample {
            let lo = perSample.min()!, hi = perSample.max()!
            #expect(hi - lo <= 1e-9 * max(1, hi), "top \(k): \(perSample)")
        }
    }

    @Test func floatJSONInputIsQuantisedWithTheModelScale() throws {
        let fleet = try FleetFixture()
        let samples = FleetFixture.randomSamples(2, seed: 2)
        let scale = Float(fleet.model.config.inputScale)
        let json = "[" + samples.map { "[" + $0.map { "\(Float($0) / scale)" }.joined(separator: ",") + "]" }.joined(separator: ",") + "]"
        let url = try fleet.serve("two.json", bytes: Data(json.utf8))
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        _ = try fleet.drain()
        let job = try #require(try fleet.client.job(id))
        #expect(job.state == "succeeded", "\(job.lastError ?? "")")
        let expected = try fleet.model.predict(samples: samples.flatMap { $0 }, count: 2, topClasses: 3)
        let output = try JSONSerialization.jsonObject(with: Data(try #require(job.output).utf8)) as? [String: Any]
        let predictions = try #require(output?["predictions"] as? [[String: Any]])
        let classes = predictions.map { (($0["top"] as? [[String: Any]])?.first?["class"] as? Int) }
        #expect(classes == expected.predictions.map { $0.first?.index })
    }

    @Test func badInputsFailWithTheirCauseAndTheWorkerKeepsServing() throws {
        let fleet = try FleetFixture()
        let good = try fleet.serveNPY("good.npy", samples: FleetFixture.randomSamples(3, seed: 3))
        let wrongWidth = try fleet.serve("wide.npy", bytes: npy([UInt8](repeating: 1, count: 2 * 41), shape: [2, 41]))
        var badHeader = npy([1, 2, 3], shape: [3])
        badHeader.replaceSubrange(10..<20, with: Data("{'descr': ".utf8.reversed()))
        let malformed = try fleet.serve("bad.npy", bytes: badHeader)
        let refused = "http://127.0.0.1:1/nothing-listens-here.npy"
        let cases: [(url: String, model: String, state: String, message: String)] = [
            (fleet.http.url("status/404"), "tiny", "dead", "404"),
            (fleet.http.url("status/500"), "tiny", "dead", "500"),
            (refused, "tiny", "dead", "127.0.0.1"),
            (fleet.http.url("big/100000"), "tiny", "dead", "limit"),
            (malformed, "tiny", "dead", "npy"),
            (wrongWidth, "tiny", "dead", "41"),
            (good, "no-such-model", "dead", "unknown model \"no-such-model\""),
        ]
        var ids: [Int] = []
        for item in cases {
            var request = FleetClient.JobRequest(model: item.model, inputURL: item.url)
            request.maxAttempts = 2
            ids.append(try fleet.client.enqueue(request))
        }
        let goodID = try fleet.client.enqueue(.init(model: "tiny", inputURL: good))

        let worker = try fleet.drain { $0.fetchPolicy.maxBodyBytes = 50_000 }

        for (item, id) in zip(cases, ids) {
            let job = try #require(try fleet.client.job(id))
            #expect(job.state == item.state, "\(item.url): \(job.state) \(job.lastError ?? "")")
            #expect(job.lastError?.contains(item.message) == true, "\(item.url): \(job.lastError ?? "no error")")
            #expect(job.output == nil)
        }
        // Retryable causes (500, connection refused) used both attempts, permanent ones only one.
        #expect(try fleet.client.job(ids[1])?.attempt == 2)
        #expect(try fleet.client.job(ids[2])?.attempt == 2)
        #expect(try fleet.client.job(ids[0])?.attempt == 1)
        #expect(try fleet.client.job(ids[5])?.attempt == 1)
        let history = try fleet.scalar("SELECT jsonb_array_length(errors) FROM bitfleet.jobs WHERE id = $1", [ids[1]])
        #expect(history == "2")
        // Nothing but the error was written for the failed attempts; the good job succeeded alongside them.
        #expect(try fleet.client.job(goodID)?.state == "succeeded")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results") == "1")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs") == "1")
        #expect(worker.statistics.succeeded == 1)
    }
}

@Suite("Leases and fencing")
struct LeaseTests {
    @Test func aWorkerWhoseLeaseWasTakenOverCannotWrite() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("one.npy", samples: FleetFixture.randomSamples(1, seed: 4))
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        let stale = JobQueue(connection: try fleet.database.connect(), workerID: "stale-worker")
        let claimed = try stale.claim(limit: 10, leaseSeconds: 0.3)
        #expect(claimed.map(\.id) == [id])
        #expect(try stale.claim(limit: 10, leaseSeconds: 30).isEmpty)  // SKIP LOCKED / running: nobody claims it twice

        Thread.sleep(forTimeInterval: 0.5)
        let fresh = JobQueue(connection: try fleet.database.connect(), workerID: "fresh-worker")
        #expect(try fresh.rescueExpiredLeases() == 1)
        let reclaimed = try fresh.claim(limit: 10, leaseSeconds: 30)
        #expect(reclaimed.map(\.attempt) == [2])

        let completion = JobCompletion(modelVersion: "1", samples: 1, output: "{\"predictions\": []}", cost: CostRecord(
            nodeClass: "test", samples: 1, queueWaitSeconds: 0, fetchSeconds: 0, decodeSeconds: 0, inferSeconds: 0,
            cpuSeconds: 0.001, bytesFetched: 1, binaryOps: 1, pricePerCoreHour: 1))
        #expect(try stale.complete(claimed[0], completion) == false)
        #expect(try stale.fail(claimed[0], JobFailure(.transient, phase: "test", "late"), decision: .dead) == nil)
        #expect(try fresh.extendLeases([reclaimed[0].key], leaseSeconds: 30) == [reclaimed[0].key])
        #expect(try stale.extendLeases([claimed[0].key], leaseSeconds: 30).isEmpty)
        #expect(try stale.extendLeases([reclaimed[0].key], leaseSeconds: 30).isEmpty)  // not its lease
        #expect(try fresh.extendLeases([claimed[0].key], leaseSeconds: 30).isEmpty)    // an attempt that is over
        #expect(try fresh.complete(reclaimed[0], completion) == true)
        #expect(try fresh.complete(reclaimed[0], completion) == false)
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results WHERE job_id = $1", [id]) == "1")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs WHERE job_id = $1", [id]) == "1")
        #expect(try fleet.client.job(id)?.state == "succeeded")
    }

    @Test func anExpiredLeaseOnTheLastAttemptEndsDead() throws {
        let fleet = try FleetFixture()
        var request = FleetClient.JobRequest(model: "tiny", inputURL: fleet.http.url("x.npy"))
        request.maxAttempts = 1
        let id = try fleet.client.enqueue(request)
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "doomed")
        _ = try queue.claim(limit: 1, leaseSeconds: 0.2)
        Thread.sleep(forTimeInterval: 0.4)
        #expect(try queue.rescueExpiredLeases() == 1)
        let job = try #require(try fleet.client.job(id))
        #expect(job.state == "dead")
        #expect(job.lastError?.contains("lease expired") == true)
    }

    @Test func releasedJobsRunAgainWithoutSpendingAnAttempt() throws {
        let fleet = try FleetFixture()
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: fleet.http.url("x.npy")))
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "leaving")
        let claim = try #require(try queue.claim(limit: 1, leaseSeconds: 30).first)
        try queue.release(claim)
        let again = try #require(try queue.claim(limit: 1, leaseSeconds: 30).first)
        #expect(again.id == id)
        #expect(again.attempt == 1)
    }
}

@Suite("Enqueue and batches")
struct EnqueueTests {
    @Test func aModelRegisteredWithoutAVersionGetsTheOneItsConfigNames() throws {
        let fleet = try FleetFixture()
        // a copy of the fixture's model whose config.json says version "7"
        let copy = fleet.root.appendingPathComponent("tiny-v7")
        try FileManager.default.copyItem(at: fleet.modelDirectory, to: copy)
        let configURL = copy.appendingPathComponent("config.json")
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
        #expect(config["version"] as? String == "1")
        config["version"] = "7"
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)

        #expect(try fleet.client.addModel(name: "tiny", directory: copy.path).version == "7")
        #expect(try fleet.client.addModel(name: "tiny", version: "8", directory: copy.path).version == "8")
        let versions = try fleet.client.models().filter { $0.name == "tiny" }.map(\.version).sorted()
        #expect(versions == ["1", "7", "8"])
    }

    @Test func anIdempotencyKeyReturnsTheFirstJob() throws {
        let fleet = try FleetFixture()
        var request = FleetClient.JobRequest(model: "tiny", inputURL: "http://example.invalid/a.npy")
        request.idempotencyKey = "order-17"
        let first = try fleet.client.enqueue(request)
        request.inputURL = "http://example.invalid/b.npy"
        #expect(try fleet.client.enqueue(request) == first)
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.jobs") == "1")
    }

    @Test func enqueueNotifiesListeningWorkers() throws {
        let fleet = try FleetFixture()
        let listener = try fleet.database.connect()
        try listener.listen("bitfleet_jobs")
        _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: "http://example.invalid/a.npy"))
        var received: [PostgresNotification] = []
        for _ in 0..<10 where received.isEmpty { received = try listener.waitForNotifications(timeout: 0.5) }
        #expect(received.count == 1)
    }

    @Test func aBatchRunsToCompletionWithResultsByCustomID() throws {
        let fleet = try FleetFixture()
        var items: [FleetClient.BatchItem] = []
        for index in 0..<6 {
            let url = try fleet.serveNPY("b\(index).npy", samples: FleetFixture.randomSamples(2, seed: UInt64(10 + index)))
            items.append(.init(inputURL: url, customID: "item-\(index)"))
        }
        items.append(.init(inputURL: fleet.http.url("status/404"), customID: "missing"))
        let batch = try fleet.client.createBatch(model: "tiny", items: items)
        let before = try #require(try fleet.client.batchProgress(batch))
        #expect(before.total == 7 && before.queued == 7 && before.status == "in_progress")
        _ = try fleet.drain()
        let after = try #require(try fleet.client.batchProgress(batch))
        #expect(after.succeeded == 6 && after.failed == 1 && after.status == "completed")
        let results = try fleet.client.batchResults(batch)
        #expect(results.map(\.customID) == items.map(\.customID))
        #expect(results.last?.state == "dead")
        #expect(results.dropLast().allSatisfy { $0.output != nil })
    }

    @Test func cancellingABatchCancelsWaitingItemsAndKeepsResults() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("c.npy", samples: FleetFixture.randomSamples(1, seed: 20))
        let batch = try fleet.client.createBatch(model: "tiny", items: (0..<5).map { .init(inputURL: url, customID: "c\($0)") })
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "busy")
        let running = try queue.claim(limit: 1, leaseSeconds: 30)
        #expect(try fleet.client.cancelBatch(batch) == 4)
        let progress = try #require(try fleet.client.batchProgress(batch))
        #expect(progress.cancelled == 4 && progress.running == 1 && progress.status == "cancelling")
        try queue.release(running[0])
        _ = try fleet.drain()
        // A released item of a cancelled batch still runs: cancel only stops what had not started (see README).
        #expect(try fleet.client.batchProgress(batch)?.status == "cancelled")
    }

    @Test func batchArgumentsAreValidated() throws {
        let fleet = try FleetFixture()
        let error = #expect(throws: PostgresError.self) {
            try fleet.connection.query("SELECT bitfleet.create_batch('tiny', ARRAY['a', 'b'], ARRAY['only-one'])")
        }
        #expect(error?.sqlState == "22023")
        #expect(error?.description.contains("custom_ids has 1 entries but input_urls has 2") == true)
    }
}

@Suite("Retry policy (pure)")
struct RetryPolicyTests {
    let policy = RetryPolicy(baseDelay: 2, maximumDelay: 60, jitter: 0.5)

    @Test(arguments: [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (20, 60.0)])
    func backoffDoublesUpToTheMaximum(attempt: Int, delay: Double) {
        #expect(policy.decide(attempt: attempt, maxAttempts: 100, retryable: true, random: 0) == .retry(delay: delay))
    }

    @Test func jitterAddsUpToItsFraction() {
        #expect(policy.decide(attempt: 1, maxAttempts: 5, retryable: true, random: 0.999) == .retry(delay: 2 * (1 + 0.5 * 0.999)))
    }

    @Test func permanentErrorsAndTheLastAttemptAreDead() {
        #expect(policy.decide(attempt: 1, maxAttempts: 5, retryable: false) == .dead)
        #expect(policy.decide(attempt: 5, maxAttempts: 5, retryable: true) == .dead)
        #expect(policy.decide(attempt: 4, maxAttempts: 5, retryable: true, random: 0) == .retry(delay: 16))
    }
}

@Suite("Schema")
struct SchemaTests {
    @Test func embeddedMigrationsMatchTheFilesInMigrations() throws {
        let directory = repositoryRoot.appendingPathComponent("Migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(Schema.migrations.map(\.name) == files)
        for migration in Schema.migrations {
            let text = try String(contentsOf: directory.appendingPathComponent(migration.name), encoding: .utf8)
            #expect(migration.sql == text)
        }
    }

    @Test func migrateIsIdempotent() throws {
        let database = try TestDatabase.create()
        let connection = try database.connect()
        #expect(try Schema.migrate(connection).count == Schema.migrations.count)
        #expect(try Schema.migrate(connection).isEmpty)
    }
}

@Suite("Least-privilege roles")
struct RoleTests {
    /// A login role in `group`, and the test database's URL as that user (the throwaway cluster trusts loopback).
    func login(_ fleet: FleetFixture, in group: String) throws -> String {
        let user = "u_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try fleet.connection.query("CREATE ROLE \(user) LOGIN IN ROLE \(group)")  // generated name, not input
        return fleet.database.url.replacingOccurrences(of: "postgres@", with: "\(user)@")
    }

    @Test func theWorkerRoleIsEnoughToRunJobs() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("r.npy", samples: FleetFixture.randomSamples(2, seed: 30))
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        let workerURL = try login(fleet, in: "bitfleet_worker")
        _ = try fleet.drain { $0.databaseURL = workerURL }
        #expect(try fleet.client.job(id)?.state == "succeeded")
        let worker = try PostgresConnection(url: workerURL)
        let denied = #expect(throws: PostgresError.self) { try worker.query("DELETE FROM bitfleet.jobs") }
        #expect(denied?.sqlState == "42501")
        #expect(throws: PostgresError.self) { try worker.query("UPDATE bitfleet.models SET uri = 'x'") }
    }

    @Test func theEnqueueRoleEnqueuesAndReadsButCannotTouchTheQueue() throws {
        let fleet = try FleetFixture()
        let client = FleetClient(connection: try PostgresConnection(url: try login(fleet, in: "bitfleet_enqueue")))
        let id = try client.enqueue(.init(model: "tiny", inputURL: "http://example.invalid/a.npy"))
        let batch = try client.createBatch(model: "tiny", items: [.init(inputURL: "http://example.invalid/b.npy")])
        #expect(try client.job(id)?.state == "queued")
        #expect(try client.cancelBatch(batch) == 1)
        let denied = #expect(throws: PostgresError.self) {
            try client.connection.query("UPDATE bitfleet.jobs SET state = 'succeeded'")
        }
        #expect(denied?.sqlState == "42501")
        #expect(throws: PostgresError.self) { try client.connection.query("SELECT * FROM bitfleet.job_costs") }
    }

    @Test func theReadOnlyRoleReadsEverythingAndWritesNothing() throws {
        let fleet = try FleetFixture()
        let readonly = try PostgresConnection(url: try login(fleet, in: "bitfleet_readonly"))
        #expect(try readonly.query("SELECT count(*) AS n FROM bitfleet.cost_by_model_day").count == 1)
        #expect(try readonly.query("SELECT count(*) AS n FROM bitfleet.job_costs").count == 1)
        let denied = #expect(throws: PostgresError.self) {
            try readonly.query("SELECT bitfleet.enqueue('tiny', 'http://example.invalid/x.npy')")
        }
        #expect(denied?.sqlState == "42501")
    }
}

@Suite("Worker usage")
struct WorkerUsageTests {
    @Test func heartbeatsRecordBusyAndIdleCoreSeconds() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("u.npy", samples: FleetFixture.randomSamples(3, seed: 40))
        for _ in 0..<4 { _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: url)) }
        _ = try fleet.drain { $0.nodeClass = "usage-test"; $0.pricePerCoreHour = 0.1 }
        let row = try #require(try fleet.connection.query("""
            SELECT count(*)::int AS n, sum(cores * extract(epoch FROM period_end - period_start))::float8 AS capacity,
                   sum(busy_core_seconds)::float8 AS busy, sum(idle_core_seconds)::float8 AS idle,
                   min(cores)::float8 AS cores, min(price_per_core_hour)::float8 AS price
            FROM bitfleet.worker_usage WHERE node_class = 'usage-test'
            """).first)
        #expect(try row.int("n") >= 1)
        #expect(try row.double("cores") == 2)
        #expect(try row.double("price") == 0.1)
        #expect(try row.double("busy") > 0)
        #expect(abs(try row.double("busy") + row.double("idle") - row.double("capacity")) < 1e-3)
    }
}

@Suite("Queue maintenance")
struct MaintenanceTests {
    @Test func expiredBatchesCancelTheirWaitingItemsWithTheReason() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("e.npy", samples: FleetFixture.randomSamples(1, seed: 50))
        let batch = try fleet.client.createBatch(model: "tiny", items: (0..<3).map { .init(inputURL: url, customID: "e\($0)") })
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "expiry")
        let running = try #require(try queue.claim(limit: 1, leaseSeconds: 30).first)
        try fleet.connection.query("UPDATE bitfleet.batches SET expires_at = now() - interval '1 second' WHERE id = $1", [batch])
        #expect(try queue.expireBatches() == 2)
        let progress = try #require(try fleet.client.batchProgress(batch))
        #expect(progress.cancelled == 2 && progress.running == 1 && progress.status == "in_progress")
        try queue.release(running)  // a released item of an expired batch is expired at once
        #expect(try fleet.client.job(running.id)?.state == "cancelled")
        #expect(try queue.expireBatches() == 0)
        #expect(try fleet.client.batchProgress(batch)?.status == "expired")
        #expect(try fleet.client.batchResults(batch).allSatisfy { $0.lastError == "batch expired" })
    }

    @Test func pruningDeletesOldFinishedJobsAndKeepsCostRows() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("p.npy", samples: FleetFixture.randomSamples(1, seed: 51))
        let old = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        let recent = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        _ = try fleet.drain()
        let waiting = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        try fleet.connection.query("UPDATE bitfleet.jobs SET finished_at = now() - interval '8 days' WHERE id = $1", [old])
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "pruner")
        #expect(try queue.pruneFinished() == 1)  // bitfleet.settings: 7 days by default
        #expect(try fleet.client.job(old) == nil)
        #expect(try fleet.client.job(recent)?.state == "succeeded")
        #expect(try fleet.client.job(waiting)?.state == "queued")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results WHERE job_id = $1", [old]) == "0")
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs WHERE job_id = $1", [old]) == "1")
    }
}

@Suite("Rescue order")
struct RescueOrderTests {
    @Test func aRescuedJobRunsBeforeWorkQueuedAfterIt() throws {
        let fleet = try FleetFixture()
        let first = try fleet.client.enqueue(.init(model: "tiny", inputURL: "http://example.invalid/1.npy"))
        let queue = JobQueue(connection: try fleet.database.connect(), workerID: "dies")
        _ = try queue.claim(limit: 1, leaseSeconds: 0.2)
        for index in 0..<3 { _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: "http://example.invalid/\(index).npy")) }
        Thread.sleep(forTimeInterval: 0.4)
        #expect(try queue.rescueExpiredLeases() == 1)
        let next = try JobQueue(connection: try fleet.database.connect(), workerID: "next").claim(limit: 1, leaseSeconds: 30)
        #expect(next.map(\.id) == [first])
        #expect(next.map(\.attempt) == [2])
    }
}

@Suite("Database connections lost mid-run")
struct ConnectionLossTests {
    @Test func terminatedSessionsReconnectAndEveryJobSucceedsOnce() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("t.npy", samples: FleetFixture.randomSamples(4, seed: 70))
        let jobs = 300
        try fleet.connection.query("""
            INSERT INTO bitfleet.jobs (model, input_url) SELECT 'tiny', $1 FROM generate_series(1, $2)
            """, [url, jobs])
        let done = DispatchSemaphore(value: 0)
        let failure = LockedList()
        let configuration = fleet.configuration {
            $0.leaseSeconds = 2
            $0.heartbeatSeconds = 0.3
            $0.claimBatch = 4
        }
        Thread {
            do {
                try Worker(configuration: configuration, logger: quietLogger()).run()
            } catch {
                failure.add(["\(error)"])
            }
            done.signal()
        }.start()
        var terminated = 0
        for _ in 0..<4 {
            Thread.sleep(forTimeInterval: 0.25)
            terminated += try fleet.connection.query("""
                SELECT pg_terminate_backend(pid) AS t FROM pg_stat_activity
                WHERE datname = current_database() AND application_name IN ('bitfleet-worker', 'bitfleet-listener')
                """).count
        }
        #expect(done.wait(timeout: .now() + 120) == .success)
        #expect(failure.all.isEmpty)
        #expect(terminated > 0)
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.jobs WHERE state = 'succeeded'") == String(jobs))
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results") == String(jobs))
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs") == String(jobs))
    }
}

@Suite("Graceful drain")
struct DrainTests {
    @Test func afterTheGracePeriodUnfinishedJobsAreGivenBack() throws {
        let fleet = try FleetFixture()
        let stalled = fleet.http.url("stall/20")
        let first = try fleet.client.enqueue(.init(model: "tiny", inputURL: stalled))
        let second = try fleet.client.enqueue(.init(model: "tiny", inputURL: stalled))
        let worker = Worker(configuration: fleet.configuration {
            $0.exitWhenDrained = false
            $0.concurrency = 1
            $0.claimBatch = 2
            $0.gracePeriodSeconds = 1
            $0.fetchPolicy.totalTimeout = 15
            $0.fetchPolicy.lowSpeedTime = 15
        }, logger: quietLogger())
        let returned = DispatchSemaphore(value: 0)
        Thread { try? worker.run(); returned.signal() }.start()
        for _ in 0..<50 where try fleet.scalar("SELECT count(*) FROM bitfleet.jobs WHERE state = 'running'") != "2" {
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.jobs WHERE state = 'running'") == "2")
        #expect(worker.isReady)
        let stopAt = Date()
        worker.stop()
        #expect(!worker.isReady)
        #expect(returned.wait(timeout: .now() + 10) == .success)
        #expect(Date().timeIntervalSince(stopAt) < 5)
        for id in [first, second] {
            let job = try #require(try fleet.client.job(id))
            #expect(job.state == "queued")
            #expect(job.attempt == 0)
        }
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.jobs WHERE lease_owner IS NOT NULL") == "0")
    }

    @Test func stoppingBeforeAnyWorkClaimsNothing() throws {
        let fleet = try FleetFixture()
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: fleet.http.url("x.npy")))
        let worker = Worker(configuration: fleet.configuration { $0.exitWhenDrained = false }, logger: quietLogger())
        worker.stop()
        try worker.run()
        #expect(try fleet.client.job(id)?.state == "queued")
    }
}

@Suite("Start-up")
struct StartupTests {
    @Test func anUnmigratedDatabaseIsAClearError() throws {
        let database = try TestDatabase.create()
        let worker = Worker(configuration: WorkerConfiguration(databaseURL: database.url), logger: quietLogger())
        let error = #expect(throws: PostgresError.self) { try worker.run() }
        #expect(error?.description.contains("run `bitfleet migrate` first") == true)
    }

    @Test func anUnreachableDatabaseIsWaitedForUntilStopped() throws {
        let worker = Worker(configuration: WorkerConfiguration(databaseURL: "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"),
                            logger: quietLogger())
        let returned = DispatchSemaphore(value: 0)
        Thread { try? worker.run(); returned.signal() }.start()
        #expect(returned.wait(timeout: .now() + 1.5) == .timedOut)  // still retrying, not exited
        worker.stop()
        #expect(returned.wait(timeout: .now() + 15) == .success)
    }
}

@Suite("Configuration errors")
struct ConfigurationErrorTests {
    @Test func anInvalidAllowlistEntryStopsTheWorkerAtStart() throws {
        var configuration = WorkerConfiguration(databaseURL: "postgresql://nobody@127.0.0.1:1/none")
        configuration.fetchPolicy.allowedNetworks = ["not-an-address/99"]
        let worker = Worker(configuration: configuration, logger: quietLogger())
        let error = #expect(throws: (any Error).self) { try worker.run() }
        #expect("\(error.map { "\($0)" } ?? "")".contains("allowedNetworks"))
    }
}
