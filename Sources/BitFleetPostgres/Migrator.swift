/// Applies numbered SQL migrations in order, each once, under an advisory lock so that several processes
/// (a Helm hook and a worker, two operators) can run it at the same time safely.
public struct Migrator {
    public struct Migration: Sendable {
        public var name: String
        public var sql: String
        public init(name: String, sql: String) {
            self.name = name
            self.sql = sql
        }
    }

    /// A fixed advisory lock key ("BitFleet" in ASCII) shared by every migrator.
    public static let lockKey: Int64 = 0x4269_7446_6C65_6574

    public let migrations: [Migration]

    public init(migrations: [Migration]) {
        self.migrations = migrations.sorted { $0.name < $1.name }
    }

    /// Applies what is missing and returns the names applied now (empty when the schema was current).
    /// A migration whose text changed after it was applied is an error, not a silent skip.
    @discardableResult
    public func apply(on connection: PostgresConnection) throws -> [String] {
        try Self.checkRole(on: connection)
        try connection.query("SELECT pg_advisory_lock($1)", [Self.lockKey])
        defer { _ = try? connection.query("SELECT pg_advisory_unlock($1)", [Self.lockKey]) }
        try connection.execute(script: """
            CREATE SCHEMA IF NOT EXISTS bitfleet;
            CREATE TABLE IF NOT EXISTS bitfleet.schema_migrations (
                name text PRIMARY KEY,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """)
        var applied: [String: String] = [:]
        for row in try connection.query("SELECT name, checksum FROM bitfleet.schema_migrations") {
            applied[try row.string("name")] = try row.string("checksum")
        }
        var done: [String] = []
        for migration in migrations {
            let checksum = Self.checksum(migration.sql)
            if let recorded = applied[migration.name] {
                guard recorded == checksum else {
                    throw PostgresError(kind: .server, message: "migration \(migration.name) was changed after it was applied (checksum \(recorded) in the database, \(checksum) now)")
                }
                continue
            }
            var attempt = 1
            while true {
                do {
                    try connection.transaction {
                        try connection.execute(script: migration.sql)
                        try connection.query(
                            "INSERT INTO bitfleet.schema_migrations (name, checksum) VALUES ($1, $2)",
                            [migration.name, checksum])
                    }
                    break
                } catch let error as PostgresError where attempt < Self.raceAttempts && Self.mayBeClusterRace(error) {
                    attempt += 1
                }
            }
            done.append(migration.name)
        }
        return done
    }

    /// How often one migration is tried when it fails as `mayBeClusterRace` says.
    static let raceAttempts = 3

    /// Roles are cluster-wide, but the advisory lock above is per database: the migrations of two databases of one
    /// cluster (parallel tests, two installs) may create the same group role at the same moment. The loser's
    /// `CREATE ROLE` waits for the winner, then fails on the unique index (caught in the SQL), and a following
    /// `GRANT … TO` the role may still read the role cache of before the winner's commit ("role … does not
    /// exist", 42704). A new transaction reads the committed catalog, so such a migration is tried again (the
    /// whole transaction was rolled back: nothing of it stays). A real error fails again and is thrown.
    static func mayBeClusterRace(_ error: PostgresError) -> Bool {
        error.kind == .server && ["42704", "23505", "42710", "40P01"].contains(error.sqlState ?? "")
    }

    /// The group roles of least privilege that must never run migrations.
    public static let unprivilegedGroups = ["bitfleet_worker", "bitfleet_enqueue", "bitfleet_readonly"]

    /// Migrations run as the schema owner (or a superuser), never with the credentials of a worker, an enqueuer
    /// or a dashboard: a role that has one of those groups' rights, or one that does not own an existing schema
    /// `bitfleet`, is refused (SQLSTATE 42501) before anything is changed. ('USAGE', not 'MEMBER': since
    /// PostgreSQL 16 the role that creates the groups, the owner, holds an ADMIN-only membership in them, without
    /// their rights, and must still migrate.)
    public static func checkRole(on connection: PostgresConnection) throws {
        let rows = try connection.query("""
            SELECT current_user::text AS me,
                   r.rolsuper AS superuser,
                   (SELECT pg_get_userbyid(n.nspowner)::text FROM pg_namespace n WHERE n.nspname = 'bitfleet') AS owner,
                   (SELECT pg_has_role(current_user, n.nspowner, 'USAGE') FROM pg_namespace n
                    WHERE n.nspname = 'bitfleet') AS owns,
                   (SELECT string_agg(g.rolname::text, ', ' ORDER BY g.rolname) FROM pg_roles g
                    WHERE g.rolname = ANY($1::text[]) AND pg_has_role(current_user, g.oid, 'USAGE')) AS groups
            FROM pg_roles r WHERE r.rolname = current_user
            """, [unprivilegedGroups])
        guard let row = rows.first else { return }
        let me = try row.string("me")
        if try row.bool("superuser") { return }
        if let groups = try row.optionalString("groups") {
            throw PostgresError(kind: .server, sqlState: "42501", message: "refusing to migrate as \(me), a member of \(groups): migrations run as the schema owner, never with a worker's, enqueuer's or dashboard's credentials (give `bitfleet migrate` the owner's DATABASE_URL)")
        }
        if let owner = try row.optionalString("owner"), try row.optionalString("owns") != "t" {
            throw PostgresError(kind: .server, sqlState: "42501", message: "refusing to migrate as \(me): schema bitfleet belongs to \(owner); run `bitfleet migrate` as \(owner) (the schema owner)")
        }
    }

    /// FNV-1a 64 of the migration text: enough to notice an edited file.
    static func checksum(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
