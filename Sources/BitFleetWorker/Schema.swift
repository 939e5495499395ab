import BitFleetPostgres

/// The schema this binary was built with: `Migrations/*.sql`, embedded at build time by the EmbedMigrations plugin.
public enum Schema {
    public static var migrations: [Migrator.Migration] {
        embeddedMigrations.map { Migrator.Migration(name: $0.name, sql: $0.sql) }
    }

    /// Applies missing migrations; returns the names applied now.
    @discardableResult
    public static func migrate(_ connection: PostgresConnection) throws -> [String] {
        try Migrator(migrations: migrations).apply(on: connection)
    }
}
