import BitFleetPostgres
import BitFleetWorker
import Foundation
import Testing

/// Issue 14, item 2: login roles bound to a tenant see and change only their tenant's rows; each test connects as
/// a real login role (the throwaway cluster trusts loopback) and tries the attack.
@Suite("Tenants: bound roles cannot see or touch each other's work")
struct TenantTests {
    /// A fleet with two tenants' enqueue logins (A and B), an unbound readonly login and a worker login. B has one finished job (result + cost row) with a pre-signed URL and a finished batch.
    final class Tenants: @unchecked Sendable {
        let fleet: FleetFixture
        let a: FleetClient
        let b: FleetClient
        let readonly: PostgresConnection
        let workerURL: String
        let bJob: Int
        let bBatch: Int
        static let secret = "X-Amz-Signature=0123456789abcdef"

        init() throws {
            fleet = try FleetFixture()
            let roleA = try Self.login(fleet, in: "bitfleet_enqueue", tenant: "A")
            let roleB = try Self.login(fleet, in: "bitfleet_enqueue", tenant: "B", maxPriority: 5)
            a = FleetClient(connection: try PostgresConnection(url: roleA))
            b = FleetClient(connection: try PostgresConnection(url: roleB))
            readonly = try PostgresConnection(url: try Self.login(fleet, in: "bitfleet_readonly"))
            workerURL = try Self.login(fleet, in: "bitfleet_worker")

            let url = try fleet.serveNPY("b.npy", samples: FleetFixture.randomSamples(2, seed: 1400))
            var request = FleetClient.JobRequest(model: "tiny", inputURL: url + "?" + Self.secret)
            request.idempotencyKey = "order-4711"
            bJob = try b.enqueue(request)
            bBatch = try b.createBatch(model: "tiny", items: [.init(inputURL: url, customID: "b0")])
            // The worker's own role drains both: row-level security does not hide tenants' jobs from workers.
            _ = try fleet.drain { $0.databaseURL = self.workerURL }
        }

        /// A new login role in `group`, bound to `tenant` when given; returns the test database's URL as that user.
        static func login(_ fleet: FleetFixture, in group: String, tenant: String? = nil, maxPriority: Int = 0) throws -> String {
            let user = "t_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
            try fleet.connection.query("CREATE ROLE \(user) LOGIN IN ROLE \(group)")   // generated name, not input
            if let tenant {
                try fleet.connection.query("SELECT bitfleet.bind_tenant($1::text::regrole, $2, $3)", [user, tenant, maxPriority])
            }
            return fleet.database.url.replacingOccurrences(of: "postgres@", with: "\(user)@")
        }
    }

    static func count(_ connection: PostgresConnection, _ sql: String, _ parameters: [PostgresBind] = []) throws -> Int {
        try connection.query("SELECT count(*)::int AS n FROM (\(sql)) q", parameters)[0].int("n")
    }

    @Test func theWorkerRanTheTenantsJobs() throws {
        let t = try Tenants()
        #expect(try t.b.job(t.bJob)?.state == "succeeded")
        #expect(try t.b.batchProgress(t.bBatch)?.status == "completed")
        #expect(try Self.count(t.b.connection, "SELECT * FROM bitfleet.results WHERE job_id = $1", [t.bJob]) == 1)
        #expect(try Self.count(t.b.connection, "SELECT job_id FROM bitfleet.job_costs WHERE job_id = $1", [t.bJob]) == 1)
        #expect(try t.fleet.scalar("SELECT tenant FROM bitfleet.jobs WHERE id = $1", [t.bJob]) == "B")
    }

    @Test func aBoundRoleCannotReadAnotherTenantsJobsBatchesResultsOrCosts() throws {
        let t = try Tenants()
        let a = t.a.connection
        #expect(try t.a.job(t.bJob) == nil)
        #expect(try t.a.batchProgress(t.bBatch) == nil)
        #expect(try t.a.batchResults(t.bBatch).isEmpty)
        #expect(try Self.count(a, "SELECT id FROM bitfleet.jobs") == 0)
        #expect(try Self.count(a, "SELECT id FROM bitfleet.jobs WHERE tenant = 'B' OR id = $1", [t.bJob]) == 0)
        #expect(try Self.count(a, "SELECT id FROM bitfleet.batches") == 0)
        #expect(try Self.count(a, "SELECT job_id FROM bitfleet.results") == 0)
        #expect(try Self.count(a, "SELECT job_id FROM bitfleet.job_costs") == 0)
        #expect(try Self.count(a, "SELECT batch_id FROM bitfleet.cost_by_batch") == 0)
        #expect(try a.query("SELECT coalesce(sum(jobs), 0)::int AS n FROM bitfleet.queue_depth")[0].int("n") == 0)
        // SET ROLE to the unbound group it is a member of does not unbind the login.
        try a.query("SET ROLE bitfleet_enqueue")
        #expect(try Self.count(a, "SELECT id FROM bitfleet.jobs") == 0)
        #expect(try Self.count(a, "SELECT job_id FROM bitfleet.results") == 0)
        try a.query("RESET ROLE")
        // Nor can it read who is bound to what.
        #expect(try Self.count(a, "SELECT * FROM bitfleet.tenant_roles WHERE tenant = 'B'") == 0)
        // B sees its own.
        #expect(try Self.count(t.b.connection, "SELECT id FROM bitfleet.jobs") == 2)
        #expect(try Self.count(t.b.connection, "SELECT batch_id FROM bitfleet.cost_by_batch") == 1)
    }

    @Test func aBoundRoleCannotChangeOrCancelAnotherTenantsWork() throws {
        let t = try Tenants()
        let pending = try t.b.createBatch(model: "tiny", items: [.init(inputURL: "http://127.0.0.1:1/p.npy")])
        for sql in ["UPDATE bitfleet.jobs SET priority = 100 WHERE id = \(t.bJob)",
                    "DELETE FROM bitfleet.results WHERE job_id = \(t.bJob)",
                    "UPDATE bitfleet.batches SET cancelled_at = now() WHERE id = \(pending)",
                    "DELETE FROM bitfleet.job_costs WHERE job_id = \(t.bJob)"] {
            let denied = #expect(throws: PostgresError.self, "\(sql)") { try t.a.connection.query(sql) }
            #expect(denied?.sqlState == "42501", "\(sql)")
        }
        let refused = #expect(throws: PostgresError.self) { try t.a.cancelBatch(pending) }
        #expect(refused?.sqlState == "42501")
        #expect(refused?.message.contains("has no batch") == true, "\(String(describing: refused))")
        // The same refusal for a batch that does not exist: nothing is learnt about B.
        let missing = #expect(throws: PostgresError.self) { try t.a.cancelBatch(999_999) }
        #expect(missing?.message == refused?.message.replacingOccurrences(of: "\(pending)", with: "999999"))
        #expect(try t.fleet.client.batchProgress(pending)?.status == "in_progress")
        #expect(try t.fleet.scalar("SELECT cancelled_at IS NULL FROM bitfleet.batches WHERE id = $1", [pending]) == "t")
        // B may cancel its own.
        #expect(try t.b.cancelBatch(pending) == 1)
    }

    @Test func aBoundRoleEnqueuesOnlyAsItsTenantWithinItsPriority() throws {
        let t = try Tenants()
        var asB = FleetClient.JobRequest(model: "tiny", inputURL: "http://127.0.0.1:1/x.npy")
        asB.tenant = "B"
        let denied = #expect(throws: PostgresError.self) { try t.a.enqueue(asB) }
        #expect(denied?.sqlState == "42501")
        let batchDenied = #expect(throws: PostgresError.self) {
            try t.a.createBatch(model: "tiny", items: [.init(inputURL: "http://127.0.0.1:1/x.npy")], tenant: "B")
        }
        #expect(batchDenied?.sqlState == "42501")
        // No tenant named: the binding's.
        let own = try t.a.enqueue(.init(model: "tiny", inputURL: "http://127.0.0.1:1/x.npy"))
        #expect(try t.fleet.scalar("SELECT tenant FROM bitfleet.jobs WHERE id = $1", [own]) == "A")
        // Priority: A's binding allows at most 0, B's at most 5; nobody below -1000.
        var urgent = FleetClient.JobRequest(model: "tiny", inputURL: "http://127.0.0.1:1/x.npy")
        urgent.priority = 1
        #expect((#expect(throws: PostgresError.self) { try t.a.enqueue(urgent) })?.sqlState == "42501")
        urgent.priority = 5
        #expect(try t.b.enqueue(urgent) > 0)
        urgent.priority = 6
        #expect((#expect(throws: PostgresError.self) { try t.b.enqueue(urgent) })?.sqlState == "42501")
        urgent.priority = Int(Int32.max)
        #expect((#expect(throws: PostgresError.self) { try t.b.enqueue(urgent) })?.sqlState == "42501")
        // Jumping the queue by dating a job into the past is clamped to now.
        let dated = try t.a.connection.query(
            "SELECT bitfleet.enqueue(model => 'tiny', input_url => 'http://127.0.0.1:1/y.npy', run_after => '2000-01-01') AS id")[0].int("id")
        #expect(try t.fleet.scalar("SELECT run_after > now() - interval '1 hour' FROM bitfleet.jobs WHERE id = $1", [dated]) == "t")
        // Unbound enqueuers keep today's behaviour: any tenant, any priority.
        var unbound = FleetClient.JobRequest(model: "tiny", inputURL: "http://127.0.0.1:1/z.npy")
        unbound.tenant = "A"
        unbound.priority = 50
        #expect(try t.fleet.client.enqueue(unbound) > 0)
    }

    @Test func idempotencyKeysAreUniquePerTenant() throws {
        let t = try Tenants()
        // A reuses B's key: a new job of A's, not B's id, and B's job is untouched.
        var request = FleetClient.JobRequest(model: "tiny", inputURL: "http://127.0.0.1:1/a.npy")
        request.idempotencyKey = "order-4711"
        let first = try t.a.enqueue(request)
        #expect(first != t.bJob)
        #expect(try t.a.enqueue(request) == first)   // still idempotent within A
        #expect(try t.fleet.scalar("SELECT tenant FROM bitfleet.jobs WHERE id = $1", [first]) == "A")
        #expect(try t.b.job(t.bJob)?.state == "succeeded")
        // B repeating its own key gets its own job back.
        var again = FleetClient.JobRequest(model: "tiny", inputURL: "http://127.0.0.1:1/other.npy")
        again.idempotencyKey = "order-4711"
        #expect(try t.b.enqueue(again) == t.bJob)
        // Jobs without a tenant still share one namespace.
        var plain = FleetClient.JobRequest(model: "tiny", inputURL: "http://127.0.0.1:1/p.npy")
        plain.idempotencyKey = "order-4711"
        let untenanted = try t.fleet.client.enqueue(plain)
        #expect(untenanted != first && untenanted != t.bJob)
        #expect(try t.fleet.client.enqueue(plain) == untenanted)
    }

    @Test func readonlyCannotReadInputURLQueryStrings() throws {
        let t = try Tenants()
        let denied = #expect(throws: PostgresError.self) {
            try t.readonly.query("SELECT input_url FROM bitfleet.jobs WHERE id = $1", [t.bJob])
        }
        #expect(denied?.sqlState == "42501")
        #expect(throws: PostgresError.self) { try t.readonly.query("SELECT * FROM bitfleet.jobs") }
        // Every other column, and every row (dashboards and KEDA count jobs), still readable.
        #expect(try Self.count(t.readonly, "SELECT id, state, tenant, last_error FROM bitfleet.jobs") == 2)
        let shown = try t.readonly.query("SELECT input_url FROM bitfleet.jobs_redacted WHERE id = $1", [t.bJob])[0]
            .string("input_url")
        #expect(!shown.contains("Signature") && !shown.contains("0123456789abcdef"), "\(shown)")
        #expect(shown.hasSuffix("/b.npy?…"), "\(shown)")
        #expect(try t.fleet.scalar("SELECT bitfleet.redact_url('https://u:pw@h.example/p/x.npy?sig=1#frag')")
                == "https://…@h.example/p/x.npy?…")
        // Dashboards and KEDA see every tenant.
        _ = try t.a.enqueue(.init(model: "tiny", inputURL: "http://127.0.0.1:1/a.npy?token=A"))
        #expect(try Self.count(t.readonly, "SELECT id FROM bitfleet.jobs_redacted") == 3)
        #expect(try Self.count(t.readonly, "SELECT batch_id FROM bitfleet.cost_by_batch") == 1)
        #expect(try t.readonly.query("SELECT bitfleet.queue_load() AS n")[0].int("n") == 1)
    }

    @Test func rolesThatSeeEveryTenantCannotBeBound() throws {
        let t = try Tenants()
        for group in ["bitfleet_readonly", "bitfleet_worker"] {
            let refused = #expect(throws: PostgresError.self, "\(group)") {
                _ = try Tenants.login(t.fleet, in: group, tenant: "A")
            }
            #expect(refused?.sqlState == "42501", "\(group)")
            #expect(refused?.message.contains("which sees every tenant's rows") == true, "\(String(describing: refused))")
        }
        // Nor can a bound role bind itself or anyone else.
        #expect((#expect(throws: PostgresError.self) {
            try t.a.connection.query("SELECT bitfleet.bind_tenant(current_user::regrole, 'B')")
        })?.sqlState == "42501")
    }

    @Test func aBoundRolesOwnFunctionsCannotPeekPastTheFilters() throws {
        let t = try Tenants()
        // A function that fails the statement when it is shown a row of tenant B: if the planner ran it before the
        // row filters (views' security barriers, row-level security), the query would fail.
        try t.a.connection.query("""
            CREATE FUNCTION pg_temp.peek(tenant text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE COST 0.0001 AS $$
            BEGIN
                IF tenant = 'B' THEN RAISE EXCEPTION 'saw a row of tenant B'; END IF;
                RETURN true;
            END $$
            """)
        for sql in ["SELECT * FROM bitfleet.batch_progress WHERE pg_temp.peek(tenant)",
                    "SELECT * FROM bitfleet.cost_by_batch WHERE pg_temp.peek(tenant)",
                    "SELECT * FROM bitfleet.batches WHERE pg_temp.peek(tenant)",
                    "SELECT * FROM bitfleet.jobs WHERE pg_temp.peek(tenant)",
                    "SELECT job_id FROM bitfleet.job_costs WHERE pg_temp.peek(tenant)"] {
            #expect(try Self.count(t.a.connection, sql) == 0, "\(sql)")
        }
        // The same function does fire on B's rows for an unbound role: the probe itself works.
        try t.fleet.connection.query("""
            CREATE FUNCTION pg_temp.peek(tenant text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE COST 0.0001 AS $$
            BEGIN
                IF tenant = 'B' THEN RAISE EXCEPTION 'saw a row of tenant B'; END IF;
                RETURN true;
            END $$
            """)
        #expect(throws: PostgresError.self) {
            try t.fleet.connection.query("SELECT * FROM bitfleet.batch_progress WHERE pg_temp.peek(tenant)")
        }
    }
}
