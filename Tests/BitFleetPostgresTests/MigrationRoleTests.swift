import BitFleetPostgres
import BitFleetTestSupport
import Foundation
import Testing

/// Issue 14, item 3: migrations run as the schema owner, never with a worker's (or enqueuer's, or dashboard's)
/// credentials. Each case connects as a real login role of the throwaway cluster and tries to migrate.
@Suite("Migrations run as the schema owner")
struct MigrationRoleTests {
    static var migrations: Migrator { Migrator(migrations: [
        .init(name: "0001_t.sql", sql: "CREATE TABLE bitfleet.t (x integer);"),
        .init(name: "0002_u.sql", sql: "CREATE TABLE bitfleet.u (y integer);"),
    ]) }

    /// A login role (optionally in `group`) that may create schemas in the test database, so that only the
    /// migrator's own check can stop it; returns its URL.
    static func login(_ database: TestDatabase, _ admin: PostgresConnection, in group: String? = nil) throws -> (String, String) {
        let user = "m_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try admin.query("CREATE ROLE \(user) LOGIN" + (group.map { " IN ROLE \($0)" } ?? ""))   // generated names
        try admin.query("GRANT CREATE ON DATABASE \(database.name) TO \(user)")
        return (user, database.url.replacingOccurrences(of: "postgres@", with: "\(user)@"))
    }

    static func ensureGroups(_ admin: PostgresConnection) throws {
        for group in Migrator.unprivilegedGroups {
            try admin.query("""
                DO $$ BEGIN
                    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(group)') THEN CREATE ROLE \(group) NOLOGIN; END IF;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END $$
                """)
        }
    }

    @Test(arguments: Migrator.unprivilegedGroups)
    func aLeastPrivilegeRoleCannotMigrate(group: String) throws {
        let database = try TestDatabase.create()
        let admin = try database.connect()
        try Self.ensureGroups(admin)
        let (user, url) = try Self.login(database, admin, in: group)
        let refused = #expect(throws: PostgresError.self) { try Self.migrations.apply(on: try PostgresConnection(url: url)) }
        #expect(refused?.sqlState == "42501")
        #expect(refused?.message.contains("refusing to migrate as \(user), a member of \(group)") == true,
                "\(String(describing: refused))")
        // Nothing was created.
        #expect(try admin.query("SELECT 1 FROM pg_namespace WHERE nspname = 'bitfleet'").isEmpty)
    }

    @Test func onlyTheSchemaOwnerMigrates() throws {
        let database = try TestDatabase.create()
        let admin = try database.connect()
        try Self.ensureGroups(admin)
        let (owner, ownerURL) = try Self.login(database, admin)
        let (_, otherURL) = try Self.login(database, admin)
        // The first migration creates the schema, owned by whoever ran it.
        #expect(try Self.migrations.apply(on: try PostgresConnection(url: ownerURL)) == ["0001_t.sql", "0002_u.sql"])
        #expect(try admin.query("SELECT pg_get_userbyid(nspowner)::text AS o FROM pg_namespace WHERE nspname = 'bitfleet'")[0]
                .string("o") == owner)
        // Another role, even one allowed to create schemas, is refused with the owner's name.
        let refused = #expect(throws: PostgresError.self) {
            try Self.migrations.apply(on: try PostgresConnection(url: otherURL))
        }
        #expect(refused?.sqlState == "42501")
        #expect(refused?.message.contains("schema bitfleet belongs to \(owner)") == true, "\(String(describing: refused))")
        // The owner (and a superuser) find it up to date.
        #expect(try Self.migrations.apply(on: try PostgresConnection(url: ownerURL)).isEmpty)
        #expect(try Self.migrations.apply(on: admin).isEmpty)
    }
}
