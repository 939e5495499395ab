import BitFleetEngine
import BitFleetPostgres
import BitFleetTestSupport
@testable import BitFleetWorker
import Foundation
import Testing

/// A login role in `group` and the test database's URL as that user (the throwaway cluster trusts loopback).
func loginURL(_ fleet: FleetFixture, in group: String) throws -> String {
    let user = "u_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
    try fleet.connection.query("CREATE ROLE \(user) LOGIN IN ROLE \(group)")  // generated name, not input
    return fleet.database.url.replacingOccurrences(of: "postgres@", with: "\(user)@")
}

/// Workers can do only what a worker does: every attack below, made with a worker credential, is refused.
@Suite("Worker role: fenced functions only")
struct WorkerPrivilegeTests {
    @Test func directWritesToTheQueueAreRefused() throws {
        let fleet = try FleetFixture()
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: "http://example.invalid/a.npy"))
        let worker = try PostgresConnection(url: try loginURL(fleet, in: "bitfleet_worker"))
        let attacks = [
            "UPDATE bitfleet.jobs SET input_url = 'http://evil.example/x.npy' WHERE id = \(id)",
            "UPDATE bitfleet.jobs SET tenant = 'someone-else' WHERE id = \(id)",
            "UPDATE bitfleet.jobs SET lease_owner = 'me', state = 'running', lease_expires_at = now() + interval '1 hour' WHERE id = \(id)",
            "DELETE FROM bitfleet.jobs",
            "INSERT INTO bitfleet.results (job_id, attempt, model, model_version, samples, output) VALUES (\(id), 1, 'tiny', '1', 1, '{}')",
            "INSERT INTO bitfleet.job_costs (job_id, attempt, model, model_version, worker_id, node_class, samples, queue_wait_seconds, fetch_seconds, decode_seconds, infer_seconds, cpu_seconds, bytes_fetched, binary_ops, price_per_core_hour, euros) VALUES (\(id), 1, 'tiny', '1', 'w', 'c', 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
            "UPDATE bitfleet.job_costs SET write_seconds = 1",
            "UPDATE bitfleet.workers SET heartbeat_at = now()",
            "UPDATE bitfleet.settings SET finished_job_retention = NULL",
            "SELECT bitfleet.prune_finished(interval '0 seconds', 1000000)",
        ]
        for sql in attacks {
            let error = #expect(throws: PostgresError.self, "\(sql)") { try worker.query(sql) }
            #expect(error?.sqlState == "42501", "\(sql): \(error.map { "\($0)" } ?? "")")
        }
        let job = try #require(try fleet.client.job(id))
        #expect(job.state == "queued")
        #expect(try fleet.scalar("SELECT input_url FROM bitfleet.jobs WHERE id = $1", [id]) == "http://example.invalid/a.npy")
    }

    @Test func aWorkerCannotCompleteFailRenewOrReleaseAnAttemptItDoesNotHold() throws {
        let fleet = try FleetFixture()
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: "http://example.invalid/a.npy"))
        let workerURL = try loginURL(fleet, in: "bitfleet_worker")
        let holder = JobQueue(connection: try PostgresConnection(url: workerURL), workerID: "holder")
        let intruder = JobQueue(connection: try PostgresConnection(url: workerURL), workerID: "intruder")
        let claim = try #require(try holder.claim(limit: 1, leaseSeconds: 30).first)
        var wrongAttempt = claim
        wrongAttempt.attempt += 1
        let completion = JobCompletion(modelVersion: "1", samples: 1, output: "{\"forged\": true}", cost: CostRecord(
            nodeClass: "t", samples: 1, queueWaitSeconds: 0, fetchSeconds: 0, decodeSeconds: 0, inferSeconds: 0,
            cpuSeconds: 1, bytesFetched: 1, binaryOps: 1, pricePerCoreHour: 1))
        #expect(try intruder.complete(claim, completion) == false)
        #expect(try holder.complete(wrongAttempt, completion) == false)
        #expect(try intruder.fail(claim, JobFailure(.permanent, phase: "x", "forged"), decision: .dead) == nil)
        #expect(try intruder.extendLeases([claim.key], leaseSeconds: 3600).isEmpty)
        #expect(try intruder.release([claim]) == 0)
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results") == "0")
        #expect(try fleet.scalar("SELECT lease_owner FROM bitfleet.jobs WHERE id = $1", [id]) == "holder")
        // The holder can.
        #expect(try holder.extendLeases([claim.key], leaseSeconds: 30) == [claim.key])
        #expect(try holder.complete(claim, completion))
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs WHERE job_id = $1", [id]) == "1")
        // euros are computed by the database from the metered seconds and the price, not taken from the worker.
        #expect(try fleet.scalar("SELECT euros FROM bitfleet.job_costs WHERE job_id = $1", [id]).flatMap(Double.init).map { abs($0 - 1.0 / 3600) < 1e-12 } == true)
    }

    @Test func retentionIsTheOwnersSettingNotTheWorkers() throws {
        let fleet = try FleetFixture()
        let url = try fleet.serveNPY("p.npy", samples: FleetFixture.randomSamples(1, seed: 96))
        let old = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        _ = try fleet.drain()
        try fleet.connection.query("UPDATE bitfleet.jobs SET finished_at = now() - interval '3 days' WHERE id = $1", [old])
        let worker = JobQueue(connection: try PostgresConnection(url: try loginURL(fleet, in: "bitfleet_worker")), workerID: "w")
        #expect(try worker.pruneFinished() == 0)  // 7 days by default
        try fleet.connection.query("UPDATE bitfleet.settings SET finished_job_retention = NULL")
        try fleet.connection.query("UPDATE bitfleet.jobs SET finished_at = now() - interval '300 days' WHERE id = $1", [old])
        #expect(try worker.pruneFinished() == 0)  // NULL keeps everything
        try fleet.connection.query("UPDATE bitfleet.settings SET finished_job_retention = interval '2 days'")
        #expect(try worker.pruneFinished() == 1)
        #expect(try fleet.client.job(old) == nil)
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs WHERE job_id = $1", [old]) == "1")
        let tooShort = #expect(throws: PostgresError.self) {
            try fleet.connection.query("UPDATE bitfleet.settings SET finished_job_retention = interval '1 second'")
        }
        #expect(tooShort?.sqlState == "23514")
    }

    @Test func everyWorkerFunctionIsADefinerWithAFixedSearchPathAndNotPublic() throws {
        let fleet = try FleetFixture()
        let rows = try fleet.connection.query("""
            SELECT p.proname, p.prosecdef, array_to_string(p.proconfig, ',') AS config,
                   has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute,
                   has_function_privilege('bitfleet_enqueue', p.oid, 'EXECUTE') AS enqueue_execute
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'bitfleet' AND p.proname LIKE 'worker\\_%'
            ORDER BY p.proname
            """)
        // worker_complete and worker_write_time have two overloads each (0006, and 0008's with phase CPU seconds,
        // which workers of this version call): every row below is checked.
        #expect(rows.filter { $0["proname"] == "worker_complete" }.count == 2)
        #expect(rows.filter { $0["proname"] == "worker_write_time" }.count == 2)
        #expect(Set(rows.map { $0["proname"] ?? "" }).sorted() == ["worker_claim", "worker_complete", "worker_fail", "worker_heartbeat",
                                                     "worker_prune", "worker_register", "worker_release", "worker_rescue",
                                                     "worker_stopped", "worker_usage", "worker_write_time"])
        for row in rows {
            let name = row["proname"] ?? ""
            #expect(try row.bool("prosecdef"), "\(name)")
            #expect(row["config"] == "search_path=pg_catalog, bitfleet, pg_temp", "\(name): \(row["config"] ?? "")")
            #expect(try !row.bool("public_execute"), "\(name)")
            #expect(try !row.bool("enqueue_execute"), "\(name)")
        }
    }
}

/// Timeouts on the worker's sessions: a stray lock cannot wedge the drain.
@Suite("Database timeouts", .serialized)
struct DatabaseTimeoutTests {
    @Test func workerSessionsCarryTheirLimits() throws {
        let fleet = try FleetFixture()
        let worker = Worker(configuration: fleet.configuration {
            $0.statementTimeoutSeconds = 7
            $0.lockTimeoutSeconds = 0.25
            $0.idleInTransactionTimeoutSeconds = 9
        }, logger: quietLogger())
        let connection = try worker.connect()
        let row = try connection.query("""
            SELECT current_setting('statement_timeout') AS s, current_setting('lock_timeout') AS l,
                   current_setting('idle_in_transaction_session_timeout') AS i
            """)[0]
        #expect(row["s"] == "7s")
        #expect(row["l"] == "250ms")
        #expect(row["i"] == "9s")
    }

    /// SIGTERM to a real worker process while another session holds an exclusive lock on bitfleet.jobs: it exits 0
    /// within the grace period plus a few lock timeouts, instead of hanging on the lock.
    @Test func sigtermExitsWhileAnotherSessionLocksTheJobsTable() throws {
        let binary = repositoryRoot.appendingPathComponent(".build/debug/bitfleet")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "build first: \(binary.path)")
        let fleet = try FleetFixture()
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: fleet.http.url("stall/60")))
        let process = Process()
        process.executableURL = binary
        process.arguments = ["worker", "--database-url", fleet.database.url, "--concurrency", "1", "--health-port", "0",
                             "--allow-networks", "127.0.0.1", "--grace-period", "2", "--lease-seconds", "6",
                             "--lock-timeout", "0.5", "--fetch-timeout", "60", "--poll-seconds", "0.2"]
        process.environment = ["BITFLEET_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        for _ in 0..<100 where try fleet.scalar("SELECT state::text FROM bitfleet.jobs WHERE id = $1", [id]) != "running" {
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(try fleet.scalar("SELECT state::text FROM bitfleet.jobs WHERE id = $1", [id]) == "running")
        let locker = try fleet.database.connect()
        try locker.query("BEGIN")
        try locker.query("LOCK TABLE bitfleet.jobs IN ACCESS EXCLUSIVE MODE")
        let stopAt = Date()
        process.terminate()  // SIGTERM
        var exited = false
        for _ in 0..<300 where !exited {
            Thread.sleep(forTimeInterval: 0.05)
            exited = !process.isRunning
        }
        #expect(exited, "still running 15 s after SIGTERM")
        if exited {
            #expect(process.terminationStatus == 0)
            #expect(Date().timeIntervalSince(stopAt) < 2 + 6, "grace 2 s + a few lock timeouts")
        }
        try locker.query("ROLLBACK")
    }
}

/// No secret in logs or errors; configuration that does not parse is an error, never a silent default.
@Suite("Secrets and configuration errors")
struct SecretTests {
    static let secret = "s3cr3t-Pa55"

    @Test(arguments: [
        "postgresql://alice:\(secret)@[::1/db",
        "postgresql://alice:\(secret)@127.0.0.1:notaport/db",
        "postgresql://alice:\(secret)@127.0.0.1:5432/db?nosuchoption=1",
        "postgresql://alice:\(secret)@127.0.0.1:5432/db?sslmode=bogus",
        "postgresql://alice:\(secret)@127.0.0.1:1/db?connect_timeout=1",
        "host=127.0.0.1 port=1 password=\(secret) user=alice connect_timeout=1",
        "host=127.0.0.1 password='\(secret)' user=alice nonsense",
    ])
    func aDatabaseURLNeverAppearsWithItsPassword(_ url: String) throws {
        let error = #expect(throws: PostgresError.self) { try PostgresConnection(url: url, connectTimeout: 1) }
        let text = error.map { "\($0)" } ?? ""
        #expect(!text.isEmpty)
        #expect(!text.contains(Self.secret), "\(text)")
        do { try ConnectionString.validate(url) } catch {
            #expect(!"\(error)".contains(Self.secret), "\(error)")
        }
    }

    @Test func anUnparsableURLStopsTheWorkerAtOnceWithAClearMessage() throws {
        let worker = Worker(configuration: WorkerConfiguration(databaseURL: "postgresql://alice:\(Self.secret)@[::1/db"),
                            logger: quietLogger())
        let started = Date()
        let error = #expect(throws: PostgresError.self) { try worker.run() }
        #expect(error?.kind == .configuration)
        #expect(error?.description.contains("cannot be parsed") == true, "\(error.map { "\($0)" } ?? "")")
        #expect(error?.description.contains(Self.secret) == false)
        #expect(Date().timeIntervalSince(started) < 5)  // not retried
    }

    @Test func redactionCoversEveryForm() {
        let url = "postgresql://alice:\(Self.secret)@db.example/x"
        #expect(ConnectionString.redact("could not connect to \(url)", in: url) == "could not connect to postgresql://alice:***@db.example/x")
        #expect(!ConnectionString.redact("password=\(Self.secret) host=x", in: nil).contains(Self.secret))
        let encoded = "postgresql://alice:p%40ss%3Aword@db/x"
        let redacted = ConnectionString.redact("bad URI \"\(encoded)\", password p@ss:word", in: encoded)
        #expect(!redacted.contains("p%40ss%3Aword") && !redacted.contains("p@ss:word"), "\(redacted)")
    }

    func cli(_ arguments: [String], environment: [String: String]) throws -> (status: Int32, stderr: String) {
        let binary = repositoryRoot.appendingPathComponent(".build/debug/bitfleet")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "build first: \(binary.path)")
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.environment = environment.merging(["PATH": "/usr/bin:/bin"]) { a, _ in a }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func environmentValuesThatDoNotParseAreErrors() throws {
        let url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
        let bad = try cli(["worker", "--database-url", url, "--health-port", "0"], environment: ["BITFLEET_CONCURRENCY": "eight"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("BITFLEET_CONCURRENCY=eight"), "\(bad.stderr)")
        let poll = try cli(["worker", "--database-url", url, "--health-port", "0", "--poll-seconds", "0"], environment: [:])
        #expect(poll.status != 0)
        #expect(poll.stderr.contains("--poll-seconds must be positive"), "\(poll.stderr)")
        let flag = try cli(["worker", "--database-url", url, "--health-port", "0"], environment: ["BITFLEET_POLL_ONLY": "maybe"])
        #expect(flag.status != 0)
        #expect(flag.stderr.contains("BITFLEET_POLL_ONLY"), "\(flag.stderr)")
        let unparsable = try cli(["worker", "--database-url", "postgresql://alice:\(Self.secret)@[::1/db", "--health-port", "0"],
                                 environment: [:])
        #expect(unparsable.status != 0)
        #expect(unparsable.stderr.contains("cannot be parsed"), "\(unparsable.stderr)")
        #expect(!unparsable.stderr.contains(Self.secret), "\(unparsable.stderr)")
    }
}
