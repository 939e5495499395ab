import BitFleetPostgres
import BitFleetTestSupport
import BitFleetWorker
import Foundation
import Testing

/// Known work with known prices through the cost views (Migrations/0003_costs.sql). Every expectation is computed
/// here by hand from the inputs (or, for measured CPU seconds, from the raw job_costs rows), never read back from the
/// view under test.
@Suite("Cost views: metering adds up and every view returns what it promises", .serialized)
struct CostViewTests {
    static let views = [
        "cost_by_model_day", "cost_by_tenant_month", "cost_per_1000_inferences", "cost_by_batch",
        "fleet_utilisation_hour", "fleet_utilisation_day", "cost_allocation_day", "job_gpu_comparison",
        "savings_vs_gpu_day", "savings_vs_gpu", "queue_depth", "queue_summary", "worker_throughput",
        "gpu_baselines", "savings_vs_alternatives", "shared_cost_day", "cost_allocation_model_tenant_day",
        "fleet_cost_day", "phase_cpu_day",
    ]

    static func close(_ a: Double, _ b: Double, relative: Double = 1e-9) -> Bool {
        abs(a - b) <= relative * max(abs(a), abs(b), 1e-12)
    }

    /// A migrated database without the model and HTTP fixture (for rows inserted directly).
    static func database() throws -> (TestDatabase, PostgresConnection) {
        let database = try TestDatabase.create { try Schema.migrate($0) }
        let connection = try database.connect()
        try connection.query("SET TIME ZONE 'UTC'")
        return (database, connection)
    }

    /// A succeeded job row to hang a cost row on (job_costs references jobs).
    static func job(_ connection: PostgresConnection, model: String) throws -> Int {
        try connection.query("""
            INSERT INTO bitfleet.jobs (model, input_url, state, finished_at) VALUES ($1, 'http://127.0.0.1/x', 'succeeded', now())
            RETURNING id
            """, [model])[0].int("id")
    }

    static func cost(_ connection: PostgresConnection, model: String, worker: String = "w-known", tenant: String? = nil,
                     samples: Int, cpuSeconds: Double, price: Double, at timestamp: String) throws {
        let id = try job(connection, model: model)
        try connection.query("""
            INSERT INTO bitfleet.job_costs (job_id, attempt, model, model_version, tenant, worker_id, node_class, samples,
                queue_wait_seconds, fetch_seconds, decode_seconds, infer_seconds, cpu_seconds, bytes_fetched, binary_ops,
                price_per_core_hour, euros, created_at)
            VALUES ($1, 1, $2, '1', $3, $4, 'known', $5, 0, 0, 0, 0, $6, 0, 0, $7, $6::float8 / 3600 * $7::float8, $8::timestamptz)
            """, [id, model, tenant, worker, samples, cpuSeconds, price, timestamp])
    }

    // MARK: - Real work through a worker

    @Test func drainedJobsAreMeteredAtTheConfiguredPriceWithinTheProcessCPUTime() throws {
        let fleet = try FleetFixture()
        let price = 0.36
        let acme = try fleet.serveNPY("acme.npy", samples: FleetFixture.randomSamples(7, seed: 11))
        let other = try fleet.serveNPY("other.npy", samples: FleetFixture.randomSamples(3, seed: 12))
        var request = FleetClient.JobRequest(model: "tiny", inputURL: acme)
        request.tenant = "acme"
        _ = try fleet.client.enqueue(request)
        _ = try fleet.client.enqueue(request)
        _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: other))
        let batch = try fleet.client.createBatch(model: "tiny", items: [.init(inputURL: acme, customID: "a"),
                                                                        .init(inputURL: other, customID: "b")],
                                                 tenant: "globex")

        let cpuBefore = WorkerClock.processCPU()
        let worker = try fleet.drain {
            $0.pricePerCoreHour = price
            $0.nodeClass = "cost-test"
        }
        let processCPU = WorkerClock.processCPU() - cpuBefore
        #expect(worker.statistics.succeeded == 5)

        struct Row { var tenant: String?; var batch: Int?; var samples: Int; var cpu: Double; var euros: Double }
        let rows = try fleet.connection.query(
            "SELECT tenant, batch_id, samples, cpu_seconds, euros, price_per_core_hour, node_class, worker_id FROM bitfleet.job_costs")
        #expect(rows.count == 5)
        var costs: [Row] = []
        for row in rows {
            let cpu = try row.double("cpu_seconds")
            let euros = try row.double("euros")
            #expect(cpu > 0)
            #expect(try row.double("price_per_core_hour") == price)
            #expect(try row.string("node_class") == "cost-test")
            #expect(try row.string("worker_id") == worker.configuration.workerID)
            #expect(Self.close(euros, cpu / 3600 * price), "euros \(euros) for \(cpu) CPU s at \(price)")
            costs.append(Row(tenant: try row.optionalString("tenant"), batch: try row.optionalInt("batch_id"),
                             samples: try row.int("samples"), cpu: cpu, euros: euros))
        }
        // Thread CPU clocks of the jobs are part of the process CPU time spent while draining.
        let metered: Double = costs.reduce(0) { $0 + $1.cpu }
        #expect(metered <= processCPU + 1e-6, "metered \(metered) s > process CPU \(processCPU) s")
        let meteredSamples: Int = costs.reduce(0) { $0 + $1.samples }
        #expect(meteredSamples == 27)  // 7 + 7 + 3 + (7 + 3 in the batch)

        let totalEuros: Double = costs.reduce(0) { $0 + $1.euros }
        let totalSamples = 27

        // cost_by_model_day: one row for today, everything in it.
        let day = try fleet.connection.query("SELECT * FROM bitfleet.cost_by_model_day WHERE model = 'tiny'")
        #expect(day.count == 1)
        #expect(try day[0].int("jobs") == 5)
        #expect(try day[0].int("samples") == totalSamples)
        #expect(Self.close(try day[0].double("euros"), totalEuros))
        #expect(Self.close(try day[0].double("euros_per_1000_inferences"), totalEuros / Double(totalSamples) * 1000))

        // cost_by_tenant_month: this UTC month, per tenant, untagged jobs as __unallocated__.
        let month = try fleet.connection.query("""
            SELECT month::text, tenant, jobs, samples, cpu_seconds, euros, euros_per_1000_inferences
            FROM bitfleet.cost_by_tenant_month ORDER BY tenant
            """)
        let utc = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: Date())
        let firstOfMonth = String(format: "%04d-%02d-01", utc.year!, utc.month!)
        #expect(Set(month.compactMap { $0["tenant"] }) == ["__unallocated__", "acme", "globex"])
        #expect(month.count == 3)
        for row in month {
            let tenant = try row.string("tenant")
            let mine = costs.filter { ($0.tenant ?? "__unallocated__") == tenant }
            let euros: Double = mine.reduce(0) { $0 + $1.euros }
            let samples: Int = mine.reduce(0) { $0 + $1.samples }
            let cpu: Double = mine.reduce(0) { $0 + $1.cpu }
            #expect(try row.string("month") == firstOfMonth)
            #expect(try row.int("jobs") == mine.count)
            #expect(try row.int("samples") == samples)
            #expect(Self.close(try row.double("euros"), euros))
            #expect(Self.close(try row.double("cpu_seconds"), cpu))
            #expect(Self.close(try row.double("euros_per_1000_inferences"), euros / Double(samples) * 1000))
        }
        #expect(try month.first { $0["tenant"] == "acme" }?.int("samples") == 14)
        #expect(try month.first { $0["tenant"] == "globex" }?.int("samples") == 10)

        // cost_per_1000_inferences: all time for the model.
        let per1000 = try fleet.connection.query("SELECT * FROM bitfleet.cost_per_1000_inferences WHERE model = 'tiny'")
        #expect(per1000.count == 1)
        #expect(Self.close(try per1000[0].double("euros_per_1000_inferences"), totalEuros / 27 * 1000))
        #expect(Self.close(try per1000[0].double("cpu_seconds_per_1000_inferences"), metered / 27 * 1000))
        #expect(Self.close(try per1000[0].double("samples_per_cpu_second"), 27 / metered))

        // cost_by_batch: the batch's two items.
        let inBatch = costs.filter { $0.batch == batch }
        #expect(inBatch.count == 2)
        let batchRow = try fleet.connection.query("SELECT * FROM bitfleet.cost_by_batch WHERE batch_id = $1", [batch])
        #expect(batchRow.count == 1)
        #expect(try batchRow[0].string("status") == "completed")
        #expect(try batchRow[0].string("tenant") == "globex")
        #expect(try batchRow[0].int("items") == 2)
        #expect(try batchRow[0].int("succeeded") == 2)
        #expect(try batchRow[0].int("samples") == 10)
        let batchEuros: Double = inBatch.reduce(0) { $0 + $1.euros }
        #expect(Self.close(try batchRow[0].double("euros"), batchEuros))

        // worker_throughput: this worker's 5 jobs fall in the last hour; rates are over the whole hour.
        let throughput = try fleet.connection.query("SELECT * FROM bitfleet.worker_throughput")
        #expect(throughput.count == 1)
        #expect(try throughput[0].string("worker_id") == worker.configuration.workerID)
        #expect(try throughput[0].int("jobs_last_hour") == 5)
        #expect(try throughput[0].int("samples_last_hour") == 27)
        #expect(Self.close(try throughput[0].double("jobs_per_second"), 5.0 / 3600))
        #expect(Self.close(try throughput[0].double("samples_per_second"), 27.0 / 3600))

        // The worker's heartbeats went to worker_usage, and busy never exceeds what was allocated.
        let usage = try fleet.connection.query("""
            SELECT count(*) AS n, coalesce(bool_and(busy_core_seconds <= cores * extract(epoch FROM period_end - period_start) + 1e-9), true) AS ok
            FROM bitfleet.worker_usage WHERE worker_id = $1
            """, [worker.configuration.workerID])
        #expect(try usage[0].bool("ok"))

        // Nothing left in the queue.
        let queue = try fleet.connection.query("SELECT * FROM bitfleet.queue_summary")
        #expect(try queue[0].int("due") == 0)
        #expect(try queue[0].int("running") == 0)
        #expect(try queue[0].optionalDouble("oldest_due_seconds") == nil)
    }

    // MARK: - Utilisation and idle cost from known heartbeats

    @Test func utilisationAndIdleCostFromKnownHeartbeats() throws {
        let (_, connection) = try Self.database()
        // (worker, class, start, seconds, cores, busy, price)
        let beats: [(String, String, String, Double, Double, Double, Double)] = [
            ("w1", "small", "2020-01-01 10:00:00+00", 10, 2, 5, 0.36),
            ("w2", "large", "2020-01-01 10:30:00+00", 20, 4, 20, 0.72),
            ("w1", "small", "2020-01-01 11:00:00+00", 10, 2, 20, 0.36),
        ]
        for (worker, nodeClass, start, seconds, cores, busy, price) in beats {
            try connection.query("""
                INSERT INTO bitfleet.worker_usage (worker_id, node_class, period_start, period_end, cores, busy_core_seconds,
                                                   idle_core_seconds, price_per_core_hour)
                VALUES ($1, $2, $3::timestamptz, $3::timestamptz + make_interval(secs => $4), $5, $6, $7, $8)
                """, [worker, nodeClass, start, seconds, cores, busy, cores * seconds - busy, price])
        }
        // Hour 10: allocated 2×10 + 4×20 = 100 core-s, busy 5 + 20 = 25, idle 15 + 60 = 75, 25 %;
        // euros: allocated 20/3600×0.36 + 80/3600×0.72 = 0.002 + 0.016; busy 0.0005 + 0.004; idle 0.0015 + 0.012.
        // Hour 11: allocated 20, busy 20, idle 0, 100 %; euros 0.002, 0.002, 0.
        let hours = try connection.query("""
            SELECT * FROM bitfleet.fleet_utilisation_hour
            WHERE hour >= '2020-01-01 00:00+00' AND hour < '2020-01-02 00:00+00' ORDER BY hour
            """)
        let expectedHours: [(Int, Double, Double, Double, Double, Double, Double, Double)] = [
            (2, 100, 25, 75, 25, 0.018, 0.0045, 0.0135),
            (1, 20, 20, 0, 100, 0.002, 0.002, 0),
        ]
        #expect(hours.count == 2)
        #expect(hours.map { $0["hour"] } == ["2020-01-01 10:00:00+00", "2020-01-01 11:00:00+00"])
        for (row, expected) in zip(hours, expectedHours) {
            #expect(try row.int("workers") == expected.0)
            #expect(Self.close(try row.double("allocated_core_seconds"), expected.1))
            #expect(Self.close(try row.double("busy_core_seconds"), expected.2))
            #expect(Self.close(try row.double("idle_core_seconds"), expected.3))
            #expect(Self.close(try row.double("utilisation_percent"), expected.4))
            #expect(Self.close(try row.double("allocated_euros"), expected.5))
            #expect(Self.close(try row.double("busy_euros"), expected.6))
            #expect(abs(try row.double("idle_euros") - expected.7) < 1e-15)
        }
        // The day: 120 allocated, 45 busy, 75 idle, 37.5 %; euros 0.02, 0.0065, 0.0135.
        let day = try connection.query("SELECT * FROM bitfleet.fleet_utilisation_day WHERE day = '2020-01-01'")
        #expect(day.count == 1)
        #expect(try day[0].int("workers") == 2)
        #expect(Self.close(try day[0].double("allocated_core_seconds"), 120))
        #expect(Self.close(try day[0].double("busy_core_seconds"), 45))
        #expect(Self.close(try day[0].double("idle_core_seconds"), 75))
        #expect(Self.close(try day[0].double("utilisation_percent"), 37.5))
        #expect(Self.close(try day[0].double("allocated_euros"), 0.02))
        #expect(Self.close(try day[0].double("busy_euros"), 0.0065))
        #expect(Self.close(try day[0].double("idle_euros"), 0.0135))

        // Allocation: the model's metered euros (36 CPU s at 0.36 = 0.0036), __idle__ and __overhead__ (busy
        // core-seconds no job metered: 45 - 36 = 9, 0.0065 - 0.0036 = 0.0029 EUR) as lines of their own; together
        // they are the day's allocated 0.02 EUR (no shared costs here).
        try Self.cost(connection, model: "m-known", samples: 1000, cpuSeconds: 36, price: 0.36, at: "2020-01-01 12:00:00+00")
        let allocation = try connection.query("""
            SELECT allocation, kind, core_seconds, euros FROM bitfleet.cost_allocation_day
            WHERE day = '2020-01-01' ORDER BY kind, allocation
            """)
        #expect(allocation.map { $0["allocation"] } == ["__idle__", "m-known", "__overhead__"])
        #expect(allocation.map { $0["kind"] } == ["idle", "model", "overhead"])
        #expect(Self.close(try allocation[0].double("core_seconds"), 75))
        #expect(Self.close(try allocation[0].double("euros"), 0.0135))
        #expect(Self.close(try allocation[1].double("core_seconds"), 36))
        #expect(Self.close(try allocation[1].double("euros"), 0.0036))
        #expect(Self.close(try allocation[2].double("core_seconds"), 9))
        #expect(Self.close(try allocation[2].double("euros"), 0.0029))
        #expect(Self.close(try allocation.reduce(0.0) { $0 + (try $1.double("euros")) }, 0.02))

        // Idle can never be negative, nor an interval run backwards.
        #expect(throws: PostgresError.self) {
            try connection.query("""
                INSERT INTO bitfleet.worker_usage (worker_id, node_class, period_start, period_end, cores, busy_core_seconds,
                                                   idle_core_seconds, price_per_core_hour)
                VALUES ('w', 'c', now(), now() + interval '1 second', 1, 2, -1, 0.1)
                """)
        }
    }

    // MARK: - GPU comparison

    @Test func gpuComparisonKeepsMeasuredAndStatedBaselinesApart() throws {
        let (_, connection) = try Self.database()
        // The seeded default baseline is stated (assumed), EUR 3/h, and applies to every model.
        let seeded = try connection.query("SELECT * FROM bitfleet.gpu_baselines")
        #expect(seeded.count == 1)
        #expect(try seeded[0].optionalString("model") == nil)
        #expect(try seeded[0].string("source") == "stated")
        #expect(try seeded[0].double("euros_per_hour") == 3)
        #expect(try seeded[0].string("note").contains("ASSUMED"))
        let statedSPS = try seeded[0].double("samples_per_second")

        try connection.query("""
            INSERT INTO bitfleet.gpu_baselines (model, gpu, euros_per_hour, samples_per_second, source, note)
            VALUES ('m-known', 'G-measured', 3.6, 10, 'measured', 'test bench')
            """)
        // Two jobs: 1000 samples in 36 CPU s and 3000 in 72 CPU s at 0.36 EUR/core-hour: 0.0036 + 0.0072 EUR.
        try Self.cost(connection, model: "m-known", samples: 1000, cpuSeconds: 36, price: 0.36, at: "2020-01-01 09:00:00+00")
        try Self.cost(connection, model: "m-known", samples: 3000, cpuSeconds: 72, price: 0.36, at: "2020-01-01 18:00:00+00")
        let cpuEuros = 0.0108

        // Measured baseline: 4000 samples / 10 per s = 400 GPU s = 400/3600 × 3.6 = 0.4 EUR; saving 0.3892 (97.3 %).
        // Stated default: 4000 / statedSPS s × 3/3600 EUR.
        let statedGPU = 4000 / statedSPS / 3600 * 3
        let rows = try connection.query("SELECT * FROM bitfleet.savings_vs_gpu WHERE model = 'm-known' ORDER BY baseline_source")
        #expect(rows.count == 2)
        #expect(rows.map { $0["baseline_source"] } == ["measured", "stated"])
        #expect(rows.map { $0["baseline_scope"] } == ["model", "default"])
        #expect(rows.map { $0["cpu_source"] } == ["measured", "measured"])
        for (row, gpu) in zip(rows, [0.4, statedGPU]) {
            #expect(try row.int("jobs") == 2)
            #expect(try row.int("samples") == 4000)
            #expect(Self.close(try row.double("cpu_euros"), cpuEuros))
            #expect(Self.close(try row.double("gpu_euros"), gpu))
            #expect(Self.close(try row.double("saving_euros"), gpu - cpuEuros))
            #expect(Self.close(try row.double("saving_percent"), 100 * (gpu - cpuEuros) / gpu))
            #expect(Self.close(try row.double("cpu_euros_per_1000_inferences"), cpuEuros / 4))
            #expect(Self.close(try row.double("gpu_euros_per_1000_inferences"), gpu / 4))
        }
        #expect(Self.close(try rows[0].double("gpu_seconds"), 400))
        #expect(Self.close(try rows[0].double("saving_percent"), 97.3))

        // Per job: 2 jobs × 2 baselines; the 1000-sample job on the measured GPU: 100 s, 0.1 EUR, saving 0.0964.
        let perJob = try connection.query("""
            SELECT samples, baseline_source, gpu_seconds, gpu_euros, cpu_euros, saving_euros FROM bitfleet.job_gpu_comparison
            WHERE model = 'm-known' ORDER BY samples, baseline_source
            """)
        #expect(perJob.count == 4)
        #expect(try perJob[0].int("samples") == 1000)
        #expect(try perJob[0].string("baseline_source") == "measured")
        #expect(Self.close(try perJob[0].double("gpu_seconds"), 100))
        #expect(Self.close(try perJob[0].double("gpu_euros"), 0.1))
        #expect(Self.close(try perJob[0].double("saving_euros"), 0.1 - 0.0036))

        // Per day: both jobs on 2020-01-01; an always-on instance of the measured GPU costs 24 × 3.6 that day.
        let days = try connection.query("""
            SELECT day::text, baseline_source, jobs, cpu_euros, gpu_euros, gpu_always_on_euros FROM bitfleet.savings_vs_gpu_day
            WHERE model = 'm-known' ORDER BY baseline_source
            """)
        #expect(days.count == 2)
        #expect(try days[0].string("day") == "2020-01-01")
        #expect(try days[0].int("jobs") == 2)
        #expect(Self.close(try days[0].double("gpu_euros"), 0.4))
        #expect(Self.close(try days[0].double("gpu_always_on_euros"), 86.4))
        #expect(Self.close(try days[1].double("gpu_always_on_euros"), 72))

        // A source other than measured/stated is refused.
        #expect(throws: PostgresError.self) {
            try connection.query("""
                INSERT INTO bitfleet.gpu_baselines (model, gpu, euros_per_hour, samples_per_second, source, note)
                VALUES ('m-known', 'G2', 1, 1, 'guessed', 'x')
                """)
        }
    }

    // MARK: - Queue and throughput

    @Test func queueSummaryAndThroughputFromKnownRows() throws {
        let (_, connection) = try Self.database()
        // (state, run_after offset, created_at offset)
        let jobs: [(String, String, String)] = [
            ("queued", "-10 minutes", "-20 minutes"), ("queued", "-1 minute", "-1 minute"),
            ("queued", "+1 hour", "0 seconds"), ("failed", "-30 seconds", "-5 minutes"),
            ("failed", "+5 minutes", "-5 minutes"), ("running", "-2 minutes", "-2 minutes"),
            ("succeeded", "-2 hours", "-3 hours"), ("dead", "-2 hours", "-3 hours"),
        ]
        for (state, runAfter, created) in jobs {
            let lease = state == "running" ? "'w', now() + interval '1 minute'" : "NULL, NULL"
            try connection.query("""
                INSERT INTO bitfleet.jobs (model, input_url, state, run_after, created_at, lease_owner, lease_expires_at)
                VALUES ('m', 'http://127.0.0.1/x', '\(state)', now() + interval '\(runAfter)', now() + interval '\(created)', \(lease))
                """)
        }
        let queue = try connection.query("SELECT * FROM bitfleet.queue_summary")
        #expect(queue.count == 1)
        #expect(try queue[0].int("due") == 3)
        #expect(try queue[0].int("queued_due") == 2)
        #expect(try queue[0].int("retrying_due") == 1)
        #expect(try queue[0].int("scheduled") == 2)
        #expect(try queue[0].int("running") == 1)
        #expect(abs(try queue[0].double("oldest_due_seconds") - 600) < 1)
        #expect(abs(try queue[0].double("oldest_unfinished_age_seconds") - 1200) < 1)

        // Throughput: w-a did 3 jobs (30 + 40 + 50 samples, 1 + 2 + 3 CPU s) in the last hour and one 2 hours ago.
        for (samples, cpu) in [(30, 1.0), (40, 2.0), (50, 3.0)] {
            try Self.cost(connection, model: "m", worker: "w-a", samples: samples, cpuSeconds: cpu, price: 0.1,
                          at: ISO8601DateFormatter().string(from: Date().addingTimeInterval(-600)))
        }
        try Self.cost(connection, model: "m", worker: "w-a", samples: 999, cpuSeconds: 9, price: 0.1,
                      at: ISO8601DateFormatter().string(from: Date().addingTimeInterval(-7200)))
        try Self.cost(connection, model: "m", worker: "w-b", samples: 10, cpuSeconds: 0.5, price: 0.2,
                      at: ISO8601DateFormatter().string(from: Date().addingTimeInterval(-60)))
        let rows = try connection.query("SELECT * FROM bitfleet.worker_throughput ORDER BY worker_id")
        #expect(rows.map { $0["worker_id"] } == ["w-a", "w-b"])
        #expect(try rows[0].int("jobs_last_hour") == 3)
        #expect(try rows[0].int("samples_last_hour") == 120)
        #expect(Self.close(try rows[0].double("cpu_seconds_last_hour"), 6))
        #expect(Self.close(try rows[0].double("jobs_per_second"), 3.0 / 3600))
        #expect(Self.close(try rows[0].double("samples_per_second"), 120.0 / 3600))
        #expect(Self.close(try rows[0].double("samples_per_cpu_second"), 20))
        #expect(Self.close(try rows[0].double("euros_last_hour"), 6.0 / 3600 * 0.1))
        #expect(try rows[1].int("jobs_last_hour") == 1)
        #expect(Self.close(try rows[1].double("samples_per_cpu_second"), 20))
    }

    // MARK: - Documentation and access

    @Test func everyViewIsDocumentedAndReadableByTheReadOnlyRole() throws {
        let (_, connection) = try Self.database()
        for view in Self.views {
            let comment = try connection.query(
                "SELECT obj_description(('bitfleet.' || $1)::regclass, 'pg_class') AS comment", [view])
            #expect((try comment[0].optionalString("comment"))?.isEmpty == false, "bitfleet.\(view) has no COMMENT")
        }
        try connection.query("SET ROLE bitfleet_readonly")
        for view in Self.views + ["worker_usage", "alternatives", "shared_costs"] {
            _ = try connection.query("SELECT * FROM bitfleet.\(view) LIMIT 1")
        }
        #expect(throws: PostgresError.self) {
            try connection.query("INSERT INTO bitfleet.gpu_baselines (gpu, euros_per_hour, samples_per_second, source, note) VALUES ('g', 1, 1, 'stated', 'n')")
        }
        try connection.query("RESET ROLE")
        try connection.query("SET ROLE bitfleet_worker")
        // Workers write usage through their function (Migrations/0006), not into the table.
        try connection.query("SELECT bitfleet.worker_usage('w', 'c', extract(epoch FROM now())::float8 - 5, extract(epoch FROM now())::float8, 2, 1, 9, 0.05)")
        #expect(throws: PostgresError.self) {
            try connection.query("""
                INSERT INTO bitfleet.worker_usage (worker_id, node_class, period_start, period_end, cores, busy_core_seconds,
                                                   idle_core_seconds, price_per_core_hour)
                VALUES ('w', 'c', now() - interval '5 seconds', now(), 2, 1, 9, 0.05)
                """)
        }
    }
}
