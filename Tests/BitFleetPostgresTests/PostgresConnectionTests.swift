import BitFleetPostgres
import BitFleetTestSupport
import Foundation
import Testing

@Suite("libpq connection against a real PostgreSQL server")
struct PostgresConnectionTests {
    @Test func parametersTravelApartFromTheStatement() throws {
        let connection = try TestDatabase.create().connect()
        try connection.query("CREATE TABLE t (id int PRIMARY KEY, name text, score float8, flag bool)")
        let hostile = "'); DROP TABLE t; --"
        try connection.query("INSERT INTO t VALUES ($1, $2, $3, $4)", [1, hostile, 2.5, true])
        try connection.query("INSERT INTO t VALUES ($1, $2, $3, $4)", [2, nil, nil, false])
        let rows = try connection.query("SELECT id, name, score, flag FROM t ORDER BY id")
        #expect(rows.count == 2)
        #expect(try rows[0].string("name") == hostile)
        #expect(try rows[0].double("score") == 2.5)
        #expect(try rows[0].bool("flag") == true)
        #expect(try rows[1].optionalString("name") == nil)
        #expect(try rows[1].optionalDouble("score") == nil)
        #expect(try rows[1].bool("flag") == false)
    }

    @Test func arrayParametersAreQuotedAndEscaped() throws {
        let connection = try TestDatabase.create().connect()
        let document = #"{"model":"m","predictions":[{"custom_id":"a \\"b\\"","top":[{"label":"T-shirt/top","p":0.5}]}]}"#
        let values = ["plain", "with,comma", "with \"quote\"", "back\\slash", "{braces}", "", "ünïcødé ✓", "\"\\\"",
                      document, String(repeating: document, count: 200)]
        let rows = try connection.query("SELECT unnest($1::text[]) AS v", [values])
        #expect(try rows.map { try $0.string("v") } == values)
        #expect(try connection.query("SELECT cardinality($1::text[]) AS n", [[String]()])[0].int("n") == 0)
        let ids = try connection.query("SELECT sum(x)::int AS s FROM unnest($1::bigint[]) x", [[1, 2, 39]])
        #expect(try ids[0].int("s") == 42)
    }

    @Test func serverErrorsCarrySQLStateAndMessage() throws {
        let connection = try TestDatabase.create().connect()
        try connection.query("CREATE TABLE u (id int PRIMARY KEY)")
        try connection.query("INSERT INTO u VALUES (1)")
        let duplicate = #expect(throws: PostgresError.self) { try connection.query("INSERT INTO u VALUES (1)") }
        #expect(duplicate?.sqlState == "23505")
        #expect(duplicate?.kind == .server)
        #expect(duplicate?.description.contains("duplicate key") == true)
        let syntax = #expect(throws: PostgresError.self) { try connection.query("SELEKT 1") }
        #expect(syntax?.sqlState == "42601")
        // The connection stays usable after an error.
        #expect(try connection.query("SELECT 1 AS one")[0].int("one") == 1)
    }

    @Test func typedReadsRejectWrongTypesClearly() throws {
        let connection = try TestDatabase.create().connect()
        let row = try connection.query("SELECT 'abc' AS word, NULL::int AS nothing")[0]
        let notInt = #expect(throws: PostgresError.self) { try row.int("word") }
        #expect(notInt?.description.contains("not an integer") == true)
        let null = #expect(throws: PostgresError.self) { try row.int("nothing") }
        #expect(null?.description.contains("NULL") == true)
        let missing = #expect(throws: PostgresError.self) { try row.string("absent") }
        #expect(missing?.description.contains("no column") == true)
    }

    @Test func badConnectionGivesAConnectionError() throws {
        let error = #expect(throws: PostgresError.self) {
            try PostgresConnection(url: "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
        }
        #expect(error?.kind == .connection)
        #expect(error?.isTransient == true)
        #expect(error?.description.contains("could not connect") == true)
    }

    @Test func transactionRollsBackOnError() throws {
        let connection = try TestDatabase.create().connect()
        try connection.query("CREATE TABLE v (id int PRIMARY KEY)")
        #expect(throws: PostgresError.self) {
            try connection.transaction {
                try connection.query("INSERT INTO v VALUES (1)")
                try connection.query("INSERT INTO v VALUES (1)")
            }
        }
        #expect(try connection.query("SELECT count(*)::int AS n FROM v")[0].int("n") == 0)
    }

    @Test func listenReceivesNotifications() throws {
        let database = try TestDatabase.create()
        let listener = try database.connect()
        try listener.listen("bitfleet_jobs")
        #expect(try listener.waitForNotifications(timeout: 0.1).isEmpty)
        let sender = try database.connect()
        try sender.query("SELECT pg_notify('bitfleet_jobs', $1)", ["hello"])
        var received: [PostgresNotification] = []
        for _ in 0..<20 where received.isEmpty { received = try listener.waitForNotifications(timeout: 0.5) }
        #expect(received.map(\.payload) == ["hello"])
        #expect(received.first?.channel == "bitfleet_jobs")
    }

    @Test func terminatedBackendIsReportedAndReconnectWorks() throws {
        let database = try TestDatabase.create()
        let victim = try database.connect()
        let admin = try database.connect()
        try admin.query("SELECT pg_terminate_backend($1)", [Int(victim.backendPID)])
        let error = #expect(throws: PostgresError.self) { try victim.query("SELECT 1") }
        #expect(error?.isTransient == true)
        try victim.reconnect()
        #expect(try victim.query("SELECT 2 AS two")[0].int("two") == 2)
    }
}

@Suite("Migrator")
struct MigratorTests {
    let migrations = [
        Migrator.Migration(name: "0002_more.sql", sql: "ALTER TABLE bitfleet.things ADD COLUMN label text;"),
        Migrator.Migration(name: "0001_first.sql", sql: "CREATE TABLE bitfleet.things (id int PRIMARY KEY);"),
    ]

    @Test func appliesInOrderOnceAndRecordsThem() throws {
        let connection = try TestDatabase.create().connect()
        let migrator = Migrator(migrations: migrations)
        #expect(try migrator.apply(on: connection) == ["0001_first.sql", "0002_more.sql"])
        #expect(try migrator.apply(on: connection) == [])
        let names = try connection.query("SELECT name FROM bitfleet.schema_migrations ORDER BY name").map { try $0.string("name") }
        #expect(names == ["0001_first.sql", "0002_more.sql"])
        try connection.query("INSERT INTO bitfleet.things (id, label) VALUES (1, 'x')")
    }

    @Test func concurrentMigratorsApplyEachMigrationOnce() throws {
        let database = try TestDatabase.create()
        let results = LockedList()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            do {
                let applied = try Migrator(migrations: migrations).apply(on: try database.connect())
                results.add(applied)
            } catch {
                results.add(["error: \(error)"])
            }
        }
        #expect(results.all.sorted() == ["0001_first.sql", "0002_more.sql"])
    }

    @Test func aMigrationEditedAfterItWasAppliedIsAnError() throws {
        let connection = try TestDatabase.create().connect()
        try Migrator(migrations: migrations).apply(on: connection)
        var edited = migrations
        edited[1].sql += "\n-- edited"
        let error = #expect(throws: PostgresError.self) { try Migrator(migrations: edited).apply(on: connection) }
        #expect(error?.description.contains("0001_first.sql was changed") == true)
    }

    @Test func aFailingMigrationLeavesNothingBehind() throws {
        let connection = try TestDatabase.create().connect()
        let broken = [Migrator.Migration(name: "0001_broken.sql", sql: "CREATE TABLE bitfleet.a (id int); SELECT 1/0;")]
        #expect(throws: PostgresError.self) { try Migrator(migrations: broken).apply(on: connection) }
        let exists = try connection.query("SELECT to_regclass('bitfleet.a') IS NOT NULL AS e")[0].bool("e")
        #expect(exists == false)
        #expect(try connection.query("SELECT count(*)::int AS n FROM bitfleet.schema_migrations")[0].int("n") == 0)
    }
}
