import BitFleetPostgres
import BitFleetTestSupport
import Testing

/// Group roles are cluster-wide while the migrator's advisory lock is per database, so the migrations of two
/// databases of one cluster can race on `CREATE ROLE` (seen once in CI: "role bitfleet_bench does not exist" while
/// parallel tests migrated fresh databases). The migrator tries such a migration again in a new transaction. A
/// sequence counts the tries here, since `nextval` is not undone by the rollback of a failed try.
@Suite("A migration that loses a cluster-wide race is tried again")
struct MigrationRaceTests {
    static func migration(failingTimes failures: Int, sqlState: String) -> Migrator {
        Migrator(migrations: [.init(name: "0001_race.sql", sql: """
            CREATE TABLE bitfleet.t (x integer);
            DO $$ BEGIN
                IF nextval('public.tries') <= \(failures) THEN
                    RAISE EXCEPTION 'role bitfleet_x does not exist (simulated)' USING ERRCODE = '\(sqlState)';
                END IF;
            END $$;
            """)])
    }

    static func tries(_ admin: PostgresConnection) throws -> Int {
        try admin.query("SELECT last_value, is_called FROM public.tries").first.map {
            try $0.bool("is_called") ? try $0.int("last_value") : 0
        } ?? -1
    }

    @Test func aRoleRaceIsTriedAgainAndAppliesOnce() throws {
        let database = try TestDatabase.create()
        let admin = try database.connect()
        try admin.query("CREATE SEQUENCE public.tries")
        #expect(try Self.migration(failingTimes: 2, sqlState: "42704").apply(on: admin) == ["0001_race.sql"])
        #expect(try Self.tries(admin) == 3)
        #expect(try admin.query("SELECT count(*)::int AS n FROM bitfleet.schema_migrations")[0].int("n") == 1)
        #expect(try admin.query("SELECT to_regclass('bitfleet.t') IS NOT NULL AS present")[0].bool("present"))
    }

    @Test func aRaceThatDoesNotEndIsReportedAfterThreeTries() throws {
        let database = try TestDatabase.create()
        let admin = try database.connect()
        try admin.query("CREATE SEQUENCE public.tries")
        let error = #expect(throws: PostgresError.self) {
            try Self.migration(failingTimes: 100, sqlState: "42704").apply(on: admin)
        }
        #expect(error?.sqlState == "42704")
        #expect(try Self.tries(admin) == 3)
        #expect(try admin.query("SELECT to_regclass('bitfleet.t') IS NULL AS absent")[0].bool("absent"))
    }

    @Test func otherErrorsAreNotTriedAgain() throws {
        let database = try TestDatabase.create()
        let admin = try database.connect()
        try admin.query("CREATE SEQUENCE public.tries")
        let error = #expect(throws: PostgresError.self) {
            try Self.migration(failingTimes: 1, sqlState: "22023").apply(on: admin)
        }
        #expect(error?.sqlState == "22023")
        #expect(try Self.tries(admin) == 1)
    }
}
