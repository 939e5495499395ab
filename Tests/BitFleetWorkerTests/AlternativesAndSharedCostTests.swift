import BitFleetPostgres
import BitFleetTestSupport
import BitFleetWorker
import Foundation
import Testing

/// Issue 15, items 1 and 3 (Migrations/0009_alternatives_and_shared_costs.sql): measured alternatives next to the
/// stated GPU row, shared costs allocated by jobs so that every line of a day adds up to what the nodes and shared
/// costs cost, per-phase CPU seconds, and who may write or read each of them. Every expected figure is computed
/// here by hand from the inputs; each attack runs as a real login role.
@Suite("Alternatives, shared costs and phases: measured, allocated, and written only by whom they should be", .serialized)
struct AlternativesAndSharedCostTests {
    /// A new login role in `group` (bound to `tenant` when given), connected to the test database.
    static func login(_ database: TestDatabase, _ admin: PostgresConnection, in group: String,
                      tenant: String? = nil) throws -> PostgresConnection {
        let user = "t_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try admin.query("CREATE ROLE \(user) LOGIN IN ROLE \(group)")   // generated name, not input
        if let tenant {
            try admin.query("SELECT bitfleet.bind_tenant($1::text::regrole, $2)", [user, tenant])
        }
        return try PostgresConnection(url: database.url.replacingOccurrences(of: "postgres@", with: "\(user)@"))
    }

    /// True when the statement is refused for lack of privilege (SQLSTATE 42501), not for any other reason.
    static func denied(_ connection: PostgresConnection, _ sql: String, _ parameters: [PostgresBind] = []) -> Bool {
        do {
            try connection.query(sql, parameters)
            return false
        } catch {
            return error.sqlState == "42501"
        }
    }

    static func cost(_ connection: PostgresConnection, model: String, tenant: String?, nodeClass: String, samples: Int,
                     cpuSeconds: Double, price: Double, at timestamp: String, phases: [Double?]? = nil) throws {
        let id = try connection.query("""
            INSERT INTO bitfleet.jobs (model, input_url, state, finished_at, tenant)
            VALUES ($1, 'http://127.0.0.1/x', 'succeeded', now(), $2) RETURNING id
            """, [model, tenant])[0].int("id")
        let p = phases ?? [nil, nil, nil, nil, nil]
        try connection.query("""
            INSERT INTO bitfleet.job_costs (job_id, attempt, model, model_version, tenant, worker_id, node_class, samples,
                queue_wait_seconds, fetch_seconds, decode_seconds, infer_seconds, cpu_seconds, bytes_fetched, binary_ops,
                price_per_core_hour, euros, created_at, fetch_cpu_seconds, decode_cpu_seconds, infer_cpu_seconds,
                encode_cpu_seconds, write_cpu_seconds)
            VALUES ($1, 1, $2, '1', $3, 'w', $4, $5, 0, 0, 0, 0, $6, 0, 0, $7, $6::float8 / 3600 * $7::float8,
                    $8::timestamptz, $9, $10, $11, $12, $13)
            """, [id, model, tenant, nodeClass, samples, cpuSeconds, price, timestamp, p[0], p[1], p[2], p[3], p[4]])
    }

    static let record = """
        SELECT bitfleet.record_alternative(kind => $1, model => $2, twin => 'm-float', label => $3, runtime => $4,
            device => 'Test CPU', batch => $5, cores => $6, samples_per_second => $7, price_per_hour => $8,
            tool => 'test', note => NULL) AS id
        """

    // MARK: - Item 1: measured alternatives

    @Test func measuredCPUPeersSitNextToTheStatedGPURowInTheSavingsView() throws {
        let (database, admin) = try CostViewTests.database()
        let bench = try Self.login(database, admin, in: "bitfleet_bench")

        // The version-3 table is now the GPU rows of bitfleet.alternatives; the seeded assumption is kept, stated.
        let stated = try admin.query("SELECT * FROM bitfleet.alternatives")
        #expect(stated.count == 1)
        #expect(try stated[0].string("kind") == "gpu")
        #expect(try stated[0].string("source") == "stated")
        #expect(try admin.query("SELECT * FROM bitfleet.gpu_baselines").count == 1)

        // The benchmark role records two CPU peers at 0.05 EUR per core-hour: ORT int8 at batch 256, 100 000 samples/s
        // on 1 core, and OpenVINO f32 at batch 1, 2 cores, 8 000 samples/s.
        let int8 = try bench.query(Self.record, ["cpu-peer", "m", "ONNX Runtime int8", "onnxruntime 1.20 int8", 256, 1.0,
                                                 100_000.0, 0.05])[0].int("id")
        _ = try bench.query(Self.record, ["cpu-peer", "m", "OpenVINO f32", "openvino 2024 f32", 1, 2.0, 8_000.0, 0.05])
        // Recording again replaces the measurement instead of adding a row.
        let again = try bench.query(Self.record, ["cpu-peer", "m", "ONNX Runtime int8", "onnxruntime 1.20 int8", 256, 1.0,
                                                  120_000.0, 0.05])[0].int("id")
        #expect(again == int8)
        let rows = try admin.query("""
            SELECT label, source, cores, euros_per_hour, euros_per_core_hour, samples_per_core_second, euros_per_million,
                   measured_at IS NOT NULL AS dated, recorded_by <> 'postgres' AS by_bench
            FROM bitfleet.alternatives WHERE kind = 'cpu-peer' ORDER BY label
            """)
        #expect(rows.map { $0["label"] } == ["ONNX Runtime int8", "OpenVINO f32"])
        #expect(rows.map { $0["source"] } == ["measured", "measured"])
        for row in rows {
            #expect(try row.bool("dated"))
            #expect(try row.bool("by_bench"))
        }
        // int8: 0.05 EUR/h / 3600 / 120 000 × 1e6; OpenVINO: 2 cores × 0.05 = 0.1 EUR/h for 8 000/s, 4 000 per core-s.
        #expect(CostViewTests.close(try rows[0].double("euros_per_million"), 0.05 / 3600 / 120_000 * 1e6))
        #expect(CostViewTests.close(try rows[1].double("euros_per_hour"), 0.1))
        #expect(CostViewTests.close(try rows[1].double("euros_per_core_hour"), 0.05))
        #expect(CostViewTests.close(try rows[1].double("samples_per_core_second"), 4_000))
        #expect(CostViewTests.close(try rows[1].double("euros_per_million"), 0.1 / 3600 / 8_000 * 1e6))
        // CPU peers never leak into the GPU views.
        #expect(try admin.query("SELECT * FROM bitfleet.gpu_baselines").count == 1)

        // The binary model: 2 jobs, 3 000 samples in 0.09 CPU s at 0.05 EUR/core-h (and a model without any row).
        try Self.cost(admin, model: "m", tenant: nil, nodeClass: "c", samples: 1000, cpuSeconds: 0.03, price: 0.05,
                      at: "2020-01-01 10:00:00+00")
        try Self.cost(admin, model: "m", tenant: "acme", nodeClass: "c", samples: 2000, cpuSeconds: 0.06, price: 0.05,
                      at: "2020-01-01 11:00:00+00")
        let binaryEuros = 0.09 / 3600 * 0.05
        let binaryPerMillion = binaryEuros / 3000 * 1e6
        let savings = try admin.query("""
            SELECT * FROM bitfleet.savings_vs_alternatives WHERE model = 'm' ORDER BY alternative_source, label
            """)
        #expect(savings.map { $0["label"] } == ["ONNX Runtime int8", "OpenVINO f32", "cloud GPU instance (assumed)"])
        #expect(savings.map { $0["alternative_source"] } == ["measured", "measured", "stated"])
        #expect(savings.map { $0["kind"] } == ["cpu-peer", "cpu-peer", "gpu"])
        #expect(savings.map { $0["binary_source"] } == ["measured", "measured", "measured"])
        let perMillion = [0.05 / 3600 / 120_000 * 1e6, 0.1 / 3600 / 8_000 * 1e6, 3.0 / 3600 / 1_000_000 * 1e6]
        for (row, alternative) in zip(savings, perMillion) {
            #expect(try row.int("samples") == 3000)
            #expect(CostViewTests.close(try row.double("binary_euros"), binaryEuros))
            #expect(CostViewTests.close(try row.double("binary_euros_per_million"), binaryPerMillion))
            #expect(CostViewTests.close(try row.double("alternative_euros_per_million"), alternative))
            #expect(CostViewTests.close(try row.double("alternative_euros"), 3000 * alternative / 1e6))
            #expect(CostViewTests.close(try row.double("saving_euros"), 3000 * alternative / 1e6 - binaryEuros))
            #expect(CostViewTests.close(try row.double("saving_percent"), 100 * (1 - binaryEuros / (3000 * alternative / 1e6))))
        }

        // `bitfleet cost --view savings` and the dashboard section print the same rows, labelled.
        let client = FleetClient(connection: admin)
        let cli = try client.table(CostView.savings.query(days: 30).sql)
        #expect(cli.rows.count == 3)
        let sourceColumn = try #require(cli.columns.firstIndex(of: "alternative_source"))
        #expect(Set(cli.rows.map { $0[sourceColumn] }) == ["measured", "stated"])
        #expect(try client.table(CostDashboardQueries.alternativesSQL).rows.count == 3)
    }

    /// Migration 0010: the seeded GPU assumption no longer says it was "chosen to favour the GPU" (one H200 measured
    /// 2× and 12× its throughput); its price and throughput stay, and a note the operator edited is left alone.
    @Test func theStatedGPURowsNoteSaysWhatTheH200FoundAndAnEditedNoteIsKept() throws {
        let (_, admin) = try CostViewTests.database()
        let stated = "SELECT note, euros_per_hour, samples_per_second FROM bitfleet.alternatives WHERE source = 'stated'"
        let migrated = try admin.query(stated)
        #expect(migrated.count == 1)
        let note = try migrated[0].string("note")
        #expect(note.hasPrefix("ASSUMED, not measured."))
        #expect(note.contains("NVIDIA H200") && note.contains("favours BitFleet"))
        #expect(!note.contains("chosen to favour the GPU"))
        #expect(try migrated[0].double("euros_per_hour") == 3.0)
        #expect(try migrated[0].double("samples_per_second") == 1_000_000)

        // Run again over a note the operator wrote: it is not the seeded text, so it stays.
        let sql = try #require(Schema.migrations.first { $0.name.hasPrefix("0010") }).sql
        try admin.query("UPDATE bitfleet.alternatives SET note = 'our quote: 2.10 EUR/h, 800 000 samples/s' WHERE source = 'stated'")
        try admin.execute(script: sql)
        #expect(try admin.query(stated)[0].string("note") == "our quote: 2.10 EUR/h, 800 000 samples/s")
    }

    @Test func onlyTheOwnerAndTheBenchFunctionWriteAlternativesAndOnlyTheOwnerPricesSharedCosts() throws {
        let (database, admin) = try CostViewTests.database()
        let bench = try Self.login(database, admin, in: "bitfleet_bench")
        let worker = try Self.login(database, admin, in: "bitfleet_worker")
        let readonly = try Self.login(database, admin, in: "bitfleet_readonly")
        let enqueue = try Self.login(database, admin, in: "bitfleet_enqueue")
        try admin.query("""
            INSERT INTO bitfleet.shared_costs (name, euros_per_hour, valid_from, valid_until, note)
            VALUES ('db', 1, '2020-01-01', '2020-01-02', 'stated by the operator')
            """)
        let insertAlternative = """
            INSERT INTO bitfleet.alternatives (kind, model, label, euros_per_hour, samples_per_second, source, note)
            VALUES ('gpu', 'm', 'cheap GPU', 0.001, 1e12, 'measured', 'forged')
            """
        let insertBaseline = """
            INSERT INTO bitfleet.gpu_baselines (model, gpu, euros_per_hour, samples_per_second, source, note)
            VALUES ('m', 'cheap GPU', 0.001, 1e12, 'measured', 'forged')
            """
        let lowerStatedPrice = "UPDATE bitfleet.alternatives SET euros_per_hour = 1000 WHERE source = 'stated'"
        let insertShared = "INSERT INTO bitfleet.shared_costs (name, euros_per_hour, note) VALUES ('x', 1000, 'forged')"
        let zeroShared = "UPDATE bitfleet.shared_costs SET euros_per_hour = 0.000001"
        let recordArguments: [PostgresBind] = ["cpu-peer", "m", "forged", "forged 1", 1, 1.0, 1e9, 0.05]

        for (role, connection) in [("worker", worker), ("readonly", readonly), ("enqueue", enqueue)] {
            for sql in [insertAlternative, insertBaseline, lowerStatedPrice, insertShared, zeroShared,
                        "DELETE FROM bitfleet.alternatives", "DELETE FROM bitfleet.shared_costs"] {
                #expect(Self.denied(connection, sql), "\(role) ran: \(sql)")
            }
            #expect(Self.denied(connection, Self.record, recordArguments), "\(role) recorded an alternative")
        }
        // The bench role records through the function only: no direct writes, no shared-cost prices.
        for sql in [insertAlternative, insertBaseline, lowerStatedPrice, insertShared, zeroShared,
                    "DELETE FROM bitfleet.alternatives"] {
            #expect(Self.denied(bench, sql), "bench ran: \(sql)")
        }
        // … and the function never overwrites the stated row (same model, kind, label, runtime and batch).
        #expect(Self.denied(bench, """
            SELECT bitfleet.record_alternative('gpu', NULL, NULL, 'cloud GPU instance (assumed)', NULL, NULL, NULL,
                                               NULL, 1e12, 0.001, 'test', 'forged')
            """))
        let statedRow = try admin.query("SELECT euros_per_hour, samples_per_second, source FROM bitfleet.alternatives")
        #expect(statedRow.count == 1)
        #expect(try statedRow[0].double("euros_per_hour") == 3)
        #expect(try statedRow[0].double("samples_per_second") == 1_000_000)
        #expect(try statedRow[0].string("source") == "stated")
        #expect(try admin.query("SELECT euros_per_hour FROM bitfleet.shared_costs")[0].double("euros_per_hour") == 1)
        // What the bench role may do, it can: and its row is measured, dated and signed with its login.
        let id = try bench.query(Self.record, ["cpu-peer", "m", "ONNX Runtime fp32", "onnxruntime fp32", 256, 1.0,
                                               50_000.0, 0.05])[0].int("id")
        #expect(try admin.query("SELECT source FROM bitfleet.alternatives WHERE id = $1", [id])[0].string("source") == "measured")
        // Workers no longer read the baselines at all; dashboards read everything new.
        #expect(Self.denied(worker, "SELECT * FROM bitfleet.alternatives"))
        #expect(Self.denied(worker, "SELECT * FROM bitfleet.gpu_baselines"))
        for view in ["alternatives", "gpu_baselines", "shared_costs", "shared_cost_day", "savings_vs_alternatives",
                     "cost_allocation_model_tenant_day", "fleet_cost_day", "phase_cpu_day", "cost_allocation_day"] {
            _ = try readonly.query("SELECT * FROM bitfleet.\(view) LIMIT 1")
        }
    }

    @Test func aBoundTenantReadsNoneOfTheFleetWideCostViews() throws {
        let (database, admin) = try CostViewTests.database()
        try Self.cost(admin, model: "m", tenant: "B", nodeClass: "c", samples: 10, cpuSeconds: 1, price: 0.1,
                      at: "2020-01-01 10:00:00+00", phases: [0.1, 0.1, 0.5, 0.1, nil])
        try admin.query("""
            INSERT INTO bitfleet.shared_costs (name, euros_per_hour, valid_from, valid_until, note)
            VALUES ('db', 1, '2020-01-01', '2020-01-02', 'x')
            """)
        let tenantA = try Self.login(database, admin, in: "bitfleet_enqueue", tenant: "A")
        // Other tenants' job counts, phases and shares are in these views: a tenant login cannot read them at all.
        for view in ["cost_allocation_model_tenant_day", "fleet_cost_day", "phase_cpu_day", "savings_vs_alternatives",
                     "shared_cost_day", "shared_costs", "alternatives", "cost_allocation_day"] {
            #expect(Self.denied(tenantA, "SELECT * FROM bitfleet.\(view)"), "tenant A read bitfleet.\(view)")
        }
        // Nor the new phase columns of another tenant's cost rows (row-level security hides B's row).
        #expect(try tenantA.query("SELECT job_id FROM bitfleet.job_costs").count == 0)
    }

    // MARK: - Item 3: shared costs allocated; the lines add up

    @Test func sharedCostsAllocatedByJobsAddUpToWhatTheNodesAndSharedCostsCost() throws {
        let (_, connection) = try CostViewTests.database()
        // Heartbeats on 2020-01-01: w1 (small) 2 cores × 1000 s, 300 busy, at 0.36 EUR/core-h; w2 (large) 4 × 500 s,
        // 1000 busy, at 0.72. Node cost = 2000/3600 × 0.36 + 2000/3600 × 0.72 = 0.2 + 0.4 = 0.6 EUR.
        for (worker, nodeClass, cores, seconds, busy, price) in [("w1", "small", 2.0, 1000.0, 300.0, 0.36),
                                                                  ("w2", "large", 4.0, 500.0, 1000.0, 0.72)] {
            try connection.query("""
                INSERT INTO bitfleet.worker_usage (worker_id, node_class, period_start, period_end, cores,
                                                   busy_core_seconds, idle_core_seconds, price_per_core_hour)
                VALUES ($1, $2, '2020-01-01 10:00:00+00', '2020-01-01 10:00:00+00'::timestamptz + make_interval(secs => $4),
                        $3, $5, $6, $7)
                """, [worker, nodeClass, cores, seconds, busy, cores * seconds - busy, price])
        }
        let nodeEuros = 0.6
        // Jobs: A m1/acme on small 100 CPU s (0.01 EUR); B m1/globex on large 200 s (0.04); C m2/acme on large 300 s
        // (0.06); D m2/(no tenant) on large 100 s (0.02). Direct 0.13 EUR for 700 core-s.
        try Self.cost(connection, model: "m1", tenant: "acme", nodeClass: "small", samples: 10, cpuSeconds: 100,
                      price: 0.36, at: "2020-01-01 10:05:00+00")
        try Self.cost(connection, model: "m1", tenant: "globex", nodeClass: "large", samples: 20, cpuSeconds: 200,
                      price: 0.72, at: "2020-01-01 10:06:00+00")
        try Self.cost(connection, model: "m2", tenant: "acme", nodeClass: "large", samples: 30, cpuSeconds: 300,
                      price: 0.72, at: "2020-01-01 10:07:00+00")
        try Self.cost(connection, model: "m2", tenant: nil, nodeClass: "large", samples: 40, cpuSeconds: 100,
                      price: 0.72, at: "2020-01-01 10:08:00+00")
        // Shared costs the operator states:
        //   the database server at 0.5 EUR/h for 12 h of Jan 1                      → 6.0 EUR (every job)
        //   a licence of 31 EUR/month, half of it ours, Jan 1 – Jan 3 (exclusive)   → 0.5 EUR per day (every job)
        //   the large class's rack, 62 EUR/month, Jan 1 only                       → 2.0 EUR (jobs on large)
        //   a class with no jobs, 1 EUR/h for 1 h                                   → 1.0 EUR (unallocated)
        try connection.query("""
            INSERT INTO bitfleet.shared_costs (name, node_class, euros_per_hour, euros_per_month, share, valid_from,
                                               valid_until, note) VALUES
                ('postgres', NULL, 0.5, 0, 1, '2020-01-01 00:00+00', '2020-01-01 12:00+00', 'db server, 10 cores x 0.05'),
                ('licence', NULL, 0, 31, 0.5, '2020-01-01 00:00+00', '2020-01-03 00:00+00', 'half of it is ours'),
                ('rack', 'large', 0, 62, 1, '2020-01-01 00:00+00', '2020-01-02 00:00+00', 'fixed monthly'),
                ('idle class', 'huge', 1, 0, 1, '2020-01-01 00:00+00', '2020-01-01 01:00+00', 'no jobs ran there')
            """)
        let sharedJan1 = 6.0 + 0.5 + 2.0 + 1.0
        let everyJob = (6.0 + 0.5) / 4, onLarge = 2.0 / 3
        // (allocation, tenant, kind, jobs, core-seconds, direct, shared)
        let expected: [(String, String?, String, Int, Double, Double, Double)] = [
            ("__idle__", nil, "idle", 0, 1700 + 1000, 0.17 + 0.2, 0),
            ("m1", "acme", "model", 1, 100, 0.01, everyJob),
            ("m1", "globex", "model", 1, 200, 0.04, everyJob + onLarge),
            ("m2", "__unallocated__", "model", 1, 100, 0.02, everyJob + onLarge),
            ("m2", "acme", "model", 1, 300, 0.06, everyJob + onLarge),
            ("__overhead__", nil, "overhead", 0, 1300 - 700, 0.03 + 0.2 - 0.13, 0),
            ("__shared_unallocated__", nil, "shared", 0, 0, 0, 1.0),
        ]
        let lines = try connection.query("""
            SELECT * FROM bitfleet.cost_allocation_model_tenant_day WHERE day = '2020-01-01' ORDER BY kind, allocation, tenant
            """)
        #expect(lines.map { $0["allocation"] } == expected.map(\.0))
        #expect(lines.map { $0["tenant"] } == expected.map(\.1))
        #expect(lines.map { $0["kind"] } == expected.map(\.2))
        for (row, e) in zip(lines, expected) {
            #expect(try row.int("jobs") == e.3, "\(e.0)")
            #expect(CostViewTests.close(try row.double("core_seconds"), e.4), "\(e.0) core-seconds")
            #expect(CostViewTests.close(try row.double("direct_euros"), e.5), "\(e.0) direct euros")
            #expect(CostViewTests.close(try row.double("shared_euros"), e.6), "\(e.0) shared euros")
            #expect(CostViewTests.close(try row.double("euros"), e.5 + e.6), "\(e.0) euros")
        }
        // allocated (models: direct + shared) + overhead + idle + unallocated shared = nodes + shared costs.
        let sum = try lines.reduce(0.0) { $0 + (try $1.double("euros")) }
        #expect(CostViewTests.close(sum, nodeEuros + sharedJan1), "lines add up to \(sum), not \(nodeEuros + sharedJan1)")
        #expect(CostViewTests.close(expected.reduce(0.0) { $0 + $1.5 + $1.6 }, nodeEuros + sharedJan1))  // the hand figures too

        // fleet_cost_day says the same, and Jan 2 (no heartbeats, no jobs) is the licence's day alone, unallocated.
        let days = try connection.query("SELECT * FROM bitfleet.fleet_cost_day ORDER BY day")
        #expect(days.map { $0["day"] } == ["2020-01-01", "2020-01-02"])
        #expect(CostViewTests.close(try days[0].double("node_euros"), nodeEuros))
        #expect(CostViewTests.close(try days[0].double("shared_euros"), sharedJan1))
        #expect(CostViewTests.close(try days[0].double("total_euros"), nodeEuros + sharedJan1))
        #expect(CostViewTests.close(try days[0].double("allocation_euros"), nodeEuros + sharedJan1))
        #expect(CostViewTests.close(try days[0].double("direct_euros"), 0.13))
        #expect(CostViewTests.close(try days[0].double("shared_allocated_euros"), 8.5))
        #expect(CostViewTests.close(try days[0].double("overhead_euros"), 0.1))
        #expect(CostViewTests.close(try days[0].double("idle_euros"), 0.37))
        #expect(CostViewTests.close(try days[0].double("shared_unallocated_euros"), 1.0))
        #expect(CostViewTests.close(try days[1].double("total_euros"), 0.5))
        #expect(CostViewTests.close(try days[1].double("allocation_euros"), 0.5))
        #expect(CostViewTests.close(try days[1].double("shared_unallocated_euros"), 0.5))

        // Per tenant over the day (what finance bills): acme = A + C, each with its share.
        let acme = try connection.query("""
            SELECT sum(euros) AS euros FROM bitfleet.cost_allocation_model_tenant_day WHERE tenant = 'acme'
            """)[0].double("euros")
        #expect(CostViewTests.close(acme, 0.01 + everyJob + 0.06 + everyJob + onLarge))

        // The daily allocation shows __overhead__ and __shared__ as lines next to __idle__, and adds up the same way.
        let daily = try connection.query("""
            SELECT allocation, kind, euros FROM bitfleet.cost_allocation_day WHERE day = '2020-01-01' ORDER BY kind, allocation
            """)
        #expect(daily.map { $0["allocation"] } == ["__idle__", "m1", "m2", "__overhead__", "__shared__"])
        #expect(CostViewTests.close(try daily[4].double("euros"), sharedJan1))
        #expect(CostViewTests.close(try daily.reduce(0.0) { $0 + (try $1.double("euros")) }, nodeEuros + sharedJan1))

        // Each shared cost per day, prorated: the licence is 31 EUR/month × 1/31 × 0.5 on each of its two days.
        let licence = try connection.query("""
            SELECT day::text, hours, euros FROM bitfleet.shared_cost_day WHERE name = 'licence' ORDER BY day
            """)
        #expect(licence.map { $0["day"] } == ["2020-01-01", "2020-01-02"])
        for row in licence {
            #expect(CostViewTests.close(try row.double("euros"), 0.5))
            #expect(CostViewTests.close(try row.double("hours"), 24))
        }
        // A shared cost needs a price, and a period that runs forwards.
        #expect(throws: PostgresError.self) {
            try connection.query("INSERT INTO bitfleet.shared_costs (name, note) VALUES ('free', 'no price')")
        }
        #expect(throws: PostgresError.self) {
            try connection.query("""
                INSERT INTO bitfleet.shared_costs (name, euros_per_hour, valid_from, valid_until, note)
                VALUES ('backwards', 1, '2020-01-02', '2020-01-01', 'x')
                """)
        }
    }

    // MARK: - Item 3: per-phase CPU seconds, NULL-safe

    @Test func phaseCPUSecondsAddUpToTheMeteredCPUAndOldRowsStayUnsplit() throws {
        let (_, connection) = try CostViewTests.database()
        // An old row without phase figures (10 CPU s), a split one (fetch 1, decode 2, infer 3, encode 0.5, write not
        // yet written: 1.5 s elsewhere in its 8 CPU s) and a fully split one (0.1 + 0.2 + 1 + 0.3 + 0.4 = 2 CPU s).
        try Self.cost(connection, model: "m", tenant: nil, nodeClass: "c", samples: 10, cpuSeconds: 10, price: 0.36,
                      at: "2020-01-01 10:00:00+00")
        try Self.cost(connection, model: "m", tenant: nil, nodeClass: "c", samples: 10, cpuSeconds: 8, price: 0.36,
                      at: "2020-01-01 11:00:00+00", phases: [1, 2, 3, 0.5, nil])
        try Self.cost(connection, model: "m", tenant: nil, nodeClass: "c", samples: 10, cpuSeconds: 2, price: 0.72,
                      at: "2020-01-01 12:00:00+00", phases: [0.1, 0.2, 1, 0.3, 0.4])
        let rows = try connection.query("SELECT * FROM bitfleet.phase_cpu_day WHERE model = 'm' ORDER BY phase_order")
        // (phase, jobs, CPU s, euros)
        let expected: [(String, Int, Double, Double)] = [
            ("fetch", 2, 1.1, (1 * 0.36 + 0.1 * 0.72) / 3600),
            ("decode", 2, 2.2, (2 * 0.36 + 0.2 * 0.72) / 3600),
            ("infer", 2, 4, (3 * 0.36 + 1 * 0.72) / 3600),
            ("encode", 2, 0.8, (0.5 * 0.36 + 0.3 * 0.72) / 3600),
            ("write", 1, 0.4, 0.4 * 0.72 / 3600),
            ("other", 2, 1.5, 1.5 * 0.36 / 3600),
            ("not split", 1, 10, 10 * 0.36 / 3600),
        ]
        #expect(rows.map { $0["phase"] } == expected.map(\.0))
        for (row, e) in zip(rows, expected) {
            #expect(try row.int("jobs") == e.1, "\(e.0) jobs")
            #expect(CostViewTests.close(try row.double("cpu_seconds"), e.2, relative: 1e-12), "\(e.0) CPU s")
            #expect(CostViewTests.close(try row.double("euros"), e.3), "\(e.0) euros")
        }
        let total = try rows.reduce(0.0) { $0 + (try $1.double("cpu_seconds")) }
        #expect(CostViewTests.close(total, 20, relative: 1e-12), "phases add up to \(total), not the 20 metered CPU s")
        let cli = CostView.phases.query(days: 100_000)
        #expect(try FleetClient(connection: connection).table(cli.sql, cli.parameters).rows.count == 7)
    }
}
