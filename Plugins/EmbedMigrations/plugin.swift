import Foundation
import PackagePlugin

/// Turns the package's top-level `Migrations/*.sql` into a Swift source file of the target that uses the plugin,
/// so the `bitfleet` binary carries its schema and `bitfleet migrate` works from any directory or container.
/// The tool reads the directory itself when it runs, and the directory is an input too, so a migration added
/// later is picked up without re-planning the build.
@main
struct EmbedMigrations: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let migrations = context.package.directoryURL.appending(path: "Migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: migrations.path())
            .filter { $0.hasSuffix(".sql") }
            .sorted()
            .map { migrations.appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedMigrations.swift")
        return [
            .buildCommand(
                displayName: "Embedding migrations",
                executable: try context.tool(named: "bitfleet-embed-sql").url,
                arguments: [output.path(), migrations.path()],
                inputFiles: [migrations] + files,
                outputFiles: [output]
            )
        ]
    }
}
