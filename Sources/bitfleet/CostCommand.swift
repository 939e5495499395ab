import ArgumentParser
import BitFleetWorker

struct CostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cost", abstract: "Cost by model per day (bitfleet.cost_by_model_day), as a table, CSV or JSON.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "Print CSV.") var csv = false
    @Option(help: "Days back from today.") var days = 30

    func run() throws {
        let client = FleetClient(connection: try connection.connect())
        let table = try client.table("""
            SELECT day::text, model, model_version, jobs, samples, cpu_seconds, euros, euros_per_1000_inferences,
                   samples_per_cpu_second
            FROM bitfleet.cost_by_model_day WHERE day > current_date - $1::int ORDER BY day DESC, model
            """, [days])
        if output.json {
            try printJSON(rowsAsObjects(table))
        } else if csv {
            print(table.columns.joined(separator: ","))
            for row in table.rows { print(row.map { csvField($0 ?? "") }.joined(separator: ",")) }
        } else {
            printTable(table.columns, table.rows.map { $0.map(humanize) })
        }
    }
}

func csvField(_ text: String) -> String {
    text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
}
