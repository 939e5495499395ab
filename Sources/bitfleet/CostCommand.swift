import ArgumentParser
import BitFleetWorker
import Foundation

/// `bitfleet cost`: the cost views as tables, CSV or JSON, and `bitfleet cost dashboard` for the terminal.
struct CostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cost",
        abstract: "Cost views (default: cost by model per day) as a table, CSV or JSON; `cost dashboard` for a summary.",
        discussion: """
            Views (--view): \(CostView.allCases.map(\.rawValue).joined(separator: ", ")).
            Euros are metered CPU core-seconds / 3600 × the worker's price per core-hour; GPU figures come from \
            bitfleet.alternatives (GPUs and CPU peers; --view savings) and are labelled measured or stated \
            (assumed). Shared costs (bitfleet.shared_costs) are split by jobs (--view shared, --view fleet-cost). \
            See docs/COSTS.md.
            """,
        subcommands: [Dashboard.self])

    @OptionGroup var options: FleetOptions
    @Flag(help: "Print CSV.") var csv = false
    @Option(help: "Which view to print.") var view: CostView = .modelDay
    @Option(help: "Days back from today (views by hour, day or month; --view throughput always covers the last hour).")
    var days = 30
    @Flag(help: "Print the cost dashboard (same as `bitfleet cost dashboard`).") var dashboard = false

    func validate() throws {
        if csv && options.json { throw ValidationError("--csv and --json exclude each other") }
        if days < 1 { throw ValidationError("--days must be at least 1") }
        if dashboard && csv { throw ValidationError("the dashboard prints as a table or --json") }
    }

    func run() throws {
        let client = FleetClient(connection: try options.connect())
        if dashboard {
            try CostDashboard(client: client, hours: 24).print(json: options.json)
            return
        }
        let (sql, parameters) = view.query(days: days)
        try printQuery(client, sql, parameters, format: options.json ? .json : csv ? .csv : .table)
    }

    struct Dashboard: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cost per 1 000 inferences, fleet utilisation with idle cost, and the GPU comparison.")
        @OptionGroup var options: FleetOptions
        @Option(help: "Hours of utilisation to show.") var hours = 24

        func validate() throws {
            if hours < 1 { throw ValidationError("--hours must be at least 1") }
        }

        func run() throws {
            try CostDashboard(client: FleetClient(connection: try options.connect()), hours: hours).print(json: options.json)
        }
    }
}

extension CostView: ExpressibleByArgument {}

enum CostOutputFormat { case table, csv, json }

func printQuery(_ client: FleetClient, _ sql: String, _ binds: [Int], format: CostOutputFormat) throws {
    switch format {
    case .json:
        print(try client.json(sql, binds))
    case .csv:
        let table = try client.table(sql, binds)
        print(table.columns.joined(separator: ","))
        for row in table.rows { print(row.map { csvField($0 ?? "") }.joined(separator: ",")) }
    case .table:
        let table = try client.table(sql, binds)
        printTable(table.columns, table.rows.map { $0.map(costCell) })
    }
}

/// A table cell for humans: integers as they are, other numbers with 4 significant digits in plain decimal (cost per
/// inference is often below a millionth of a euro, which fixed decimals would print as 0), text as it is.
func costCell(_ value: String?) -> String? {
    guard let value, value.contains(".") || value.contains("e"), let number = Double(value), number.isFinite else {
        return value
    }
    return significant(number)
}

func significant(_ number: Double, digits: Int = 4) -> String {
    if number == 0 { return "0" }
    let magnitude = Int(floor(log10(abs(number))))
    let decimals = max(0, min(14, digits - 1 - magnitude))
    return String(format: "%.\(decimals)f", number)
}

func csvField(_ text: String) -> String {
    text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
}

/// The terminal cost dashboard (`bitfleet cost dashboard`, and the end of `bitfleet demo`): cost per 1 000
/// inferences per model, fleet utilisation with idle cost, the cost allocation with __idle__, and the GPU comparison
/// with every GPU figure labelled measured or stated.
struct CostDashboard {
    let client: FleetClient
    var hours = 24

    func print(json: Bool) throws {
        if json {
            Swift.print(try client.costDashboardJSON(hours: hours))
            return
        }
        Swift.print("BitFleet cost dashboard — from Postgres; EUR = metered CPU core-seconds / 3600 × price per core-hour")
        section("Cost per 1 000 inferences (measured)", CostDashboardQueries.per1000SQL, [], empty: "no metered jobs with samples yet")
        section("Fleet utilisation, last \(hours) h (worker heartbeats; idle_eur is what idle cores cost)",
                CostDashboardQueries.utilisationSQL, [hours], empty: "")
        section("Cost allocation since \(hours >= 24 ? "\(hours / 24) day(s) ago" : "today") (UTC), idle as its own line",
                CostDashboardQueries.allocationSQL, [hours], empty: "nothing metered yet")
        section("Shared costs allocated (bitfleet.shared_costs, split by jobs), with the fleet's overhead and idle "
                + "as their own lines", CostDashboardQueries.sharedSQL, [hours], empty: "nothing metered yet")
        section("Fleet cost reconciled: node (cores × time × price) + shared = the allocation lines above",
                CostDashboardQueries.fleetCostSQL, [hours], empty: "")
        section("Where the CPU goes: metered CPU seconds per phase ('not split': rows without phase figures)",
                CostDashboardQueries.phasesSQL, [hours], empty: "nothing metered yet")
        section("Cost per million inferences: the binary model (measured) next to each alternative (figure = measured "
                + "or stated)", CostDashboardQueries.alternativesSQL, [],
                empty: "no metered samples or no alternatives (bitfleet.alternatives)")
        section("GPU comparison (CPU euros measured; gpu_figure says whether the GPU throughput is measured or stated)",
                CostDashboardQueries.gpuSQL, [], empty: "no GPU baseline or no metered samples (bitfleet.gpu_baselines)")
        section("Always-on alternative, last \(hours) h: one GPU instance per model for the whole period (the seed "
                + "essay's deployment) vs this fleet's allocated cost (busy + idle)",
                CostDashboardQueries.alwaysOnSQL, [hours], empty: "no metered samples in the period")
        let baselines = try client.table(CostDashboardQueries.baselinesSQL)
        if !baselines.rows.isEmpty {
            Swift.print("GPU baselines:")
            for row in baselines.rows {
                let label = row[5] == "stated" ? "STATED (assumed)" : "MEASURED"
                Swift.print("  [\(row[0] ?? "")] \(label) \(row[2] ?? ""), \(row[1] ?? ""): EUR \(costCell(row[3]) ?? "")/h, "
                            + "\(costCell(row[4]) ?? "") samples/s — \(row[6] ?? "")")
            }
        }
    }

    private func section(_ title: String, _ sql: String, _ binds: [Int], empty: String) {
        Swift.print("")
        Swift.print("== " + title)
        do {
            let table = try client.table(sql, binds)
            if table.rows.isEmpty && !empty.isEmpty {
                Swift.print("(\(empty))")
            } else {
                printTable(table.columns, table.rows.map { $0.map(costCell) })
            }
        } catch {
            Swift.print("(unavailable: \(error))")
        }
    }
}
