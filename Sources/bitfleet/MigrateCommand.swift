import ArgumentParser
import BitFleetWorker

struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Apply the schema migrations that are missing (ordered, recorded, under an advisory lock).")

    @OptionGroup var options: FleetOptions

    func run() throws {
        let applied = try Schema.migrate(try options.connect("bitfleet-migrate"))
        if options.json {
            try printJSON(["applied": applied])
        } else {
            print(applied.isEmpty ? "schema is up to date" : "applied: " + applied.joined(separator: ", "))
        }
    }
}
