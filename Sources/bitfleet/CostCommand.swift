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
            bitfleet.gpu_baselines and are labelled measured or stated (assumed). See docs/COSTS.md.
            """,
        subcommands: [Dashboard.self])

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "Print CSV.") var csv = false
    @Option(help: "Which view to print.") var view: CostView = .modelDay
    @Option(help: "Days back from today (views by hour, day or month; --view throughput always covers the last hour).")
    var days = 30
    @Flag(help: "Print the cost dashboard (same as `bitfleet cost dashboard`).") var dashboard = false

    func validate() throws {
        if csv && output.json { throw ValidationError("--csv and --json exclude each other") }
        if days < 1 { throw ValidationError("--days must be at least 1") }
        if dashboard && csv { throw ValidationError("the dashboard prints as a table or --json") }
    }

    func run() throws {
        let client = FleetClient(connection: try connection.connect())
        if dashboard {
            try CostDashboard(client: client, hours: 24).print(json: output.json)
            return
        }
        let (sql, parameters) = view.query(days: days)
        try printQuery(client, sql, parameters, format: output.json ? .json : csv ? .csv : .table)
    }

    struct Dashboard: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cost per 1 000 inferences, fleet utilisation with idle cost, and the GPU comparison.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions
        @Option(help: "Hours of utilisation to show.") var hours = 24

        func validate() throws {
            if hours < 1 { throw ValidationError("--hours must be at least 1") }
        }

        func run() throws {
            try CostDashboard(client: FleetClient(connection: try connection.connect()), hours: hours).print(json: output.json)
        }
    }
}

/// The views `bitfleet cost --view` prints, with the order (and, for dated views, the range) of each.
enum CostView: String, CaseIterable, ExpressibleByArgument {
    case modelDay = "model-day"
    case tenantMonth = "tenant-month"
    case per1000 = "per-1000"
    case batch
    case utilisationHour = "utilisation-hour"
    case utilisationDay = "utilisation-day"
    case allocation
    case savings
    case savingsDay = "savings-day"
    case baselines
    case queue
    case queueDepth = "queue-depth"
    case throughput

    /// The SQL and its parameters; every dated view is limited to the last `days` days.
    func query(days: Int) -> (String, [Int]) {
        switch self {
        case .modelDay:
            return ("""
                SELECT day::text, model, model_version, jobs, samples, cpu_seconds, euros, euros_per_1000_inferences,
                       samples_per_cpu_second
                FROM bitfleet.cost_by_model_day WHERE day > current_date - $1::int ORDER BY day DESC, model
                """, [days])
        case .tenantMonth:
            return ("""
                SELECT month::text, tenant, jobs, samples, cpu_seconds, euros, euros_per_1000_inferences
                FROM bitfleet.cost_by_tenant_month WHERE month > current_date - $1::int - 31 ORDER BY month DESC, tenant
                """, [days])
        case .per1000:
            return ("""
                SELECT model, model_version, jobs, samples, cpu_seconds, euros, euros_per_1000_inferences,
                       cpu_seconds_per_1000_inferences, samples_per_cpu_second, first_job_at::text, last_job_at::text
                FROM bitfleet.cost_per_1000_inferences ORDER BY model, model_version
                """, [])
        case .batch:
            return ("""
                SELECT batch_id, model, tenant, status, items, succeeded, samples, cpu_seconds, euros,
                       euros_per_1000_inferences, created_at::text
                FROM bitfleet.cost_by_batch WHERE created_at > now() - make_interval(days => $1::int)
                ORDER BY batch_id DESC
                """, [days])
        case .utilisationHour:
            return ("""
                SELECT hour::text, workers, allocated_core_seconds, busy_core_seconds, idle_core_seconds,
                       utilisation_percent, allocated_euros, busy_euros, idle_euros
                FROM bitfleet.fleet_utilisation_hour WHERE hour > now() - make_interval(days => $1::int)
                ORDER BY hour DESC
                """, [days])
        case .utilisationDay:
            return ("""
                SELECT day::text, workers, allocated_core_seconds, busy_core_seconds, idle_core_seconds,
                       utilisation_percent, allocated_euros, busy_euros, idle_euros
                FROM bitfleet.fleet_utilisation_day WHERE day > current_date - $1::int ORDER BY day DESC
                """, [days])
        case .allocation:
            return ("""
                SELECT day::text, allocation, kind, core_seconds, euros
                FROM bitfleet.cost_allocation_day WHERE day > current_date - $1::int
                ORDER BY day DESC, kind, allocation
                """, [days])
        case .savings:
            return ("""
                SELECT model, baseline_id, gpu, baseline_scope, baseline_source, cpu_source, samples, cpu_euros,
                       gpu_euros, saving_euros, saving_percent, cpu_euros_per_1000_inferences,
                       gpu_euros_per_1000_inferences
                FROM bitfleet.savings_vs_gpu ORDER BY model, baseline_source, baseline_id
                """, [])
        case .savingsDay:
            return ("""
                SELECT day::text, model, baseline_id, gpu, baseline_source, cpu_source, samples, cpu_euros, gpu_euros,
                       saving_euros, saving_percent, gpu_always_on_euros
                FROM bitfleet.savings_vs_gpu_day WHERE day > current_date - $1::int
                ORDER BY day DESC, model, baseline_source, baseline_id
                """, [days])
        case .baselines:
            return ("""
                SELECT id, coalesce(model, '(every model)') AS model, gpu, euros_per_hour, samples_per_second, source, note
                FROM bitfleet.gpu_baselines ORDER BY id
                """, [])
        case .queue:
            return ("SELECT * FROM bitfleet.queue_summary", [])
        case .queueDepth:
            return ("SELECT state::text, jobs, oldest_due_seconds FROM bitfleet.queue_depth", [])
        case .throughput:
            return ("""
                SELECT worker_id, node_class, jobs_last_hour, samples_last_hour, jobs_per_second, samples_per_second,
                       samples_per_cpu_second, euros_last_hour, last_job_at::text
                FROM bitfleet.worker_throughput ORDER BY worker_id
                """, [])
        }
    }
}

enum CostOutputFormat { case table, csv, json }

func printQuery(_ client: FleetClient, _ sql: String, _ binds: [Int], format: CostOutputFormat) throws {
    switch format {
    case .json:
        // Postgres writes the JSON, so numbers stay numbers and NULL stays null.
        let rows = try client.connection.query(
            "SELECT coalesce(json_agg(t), '[]'::json)::text AS rows FROM (\(sql)) t", binds)
        print(try rows[0].string("rows"))
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

    static let per1000SQL = """
        SELECT model, model_version AS version, jobs, samples, cpu_seconds, euros, euros_per_1000_inferences AS eur_per_1000,
               samples_per_cpu_second
        FROM bitfleet.cost_per_1000_inferences WHERE samples > 0 ORDER BY model, model_version
        """
    static let utilisationSQL = """
        SELECT 'last ' || $1::int || ' h' AS period, coalesce(max(workers), 0) AS max_workers,
               coalesce(sum(allocated_core_seconds), 0) AS allocated_core_s, coalesce(sum(busy_core_seconds), 0) AS busy_core_s,
               coalesce(sum(idle_core_seconds), 0) AS idle_core_s,
               100 * sum(busy_core_seconds) / nullif(sum(allocated_core_seconds), 0) AS utilisation_pct,
               coalesce(sum(allocated_euros), 0) AS allocated_eur, coalesce(sum(busy_euros), 0) AS busy_eur,
               coalesce(sum(idle_euros), 0) AS idle_eur
        FROM bitfleet.fleet_utilisation_hour WHERE hour > now() - make_interval(hours => $1::int)
        """
    static let allocationSQL = """
        SELECT allocation, kind, sum(core_seconds) AS core_seconds, sum(euros) AS euros
        FROM bitfleet.cost_allocation_day WHERE day >= (now() AT TIME ZONE 'UTC')::date - ($1::int / 24)
        GROUP BY allocation, kind ORDER BY kind DESC, allocation
        """
    static let gpuSQL = """
        SELECT model, baseline_id AS baseline, baseline_source AS gpu_figure, gpu, samples, cpu_euros AS cpu_eur_measured,
               gpu_euros AS gpu_eur_equivalent, saving_euros AS saving_eur, saving_percent AS saving_pct,
               cpu_euros_per_1000_inferences AS cpu_eur_per_1000, gpu_euros_per_1000_inferences AS gpu_eur_per_1000
        FROM bitfleet.savings_vs_gpu WHERE samples > 0 ORDER BY model, baseline_source, baseline_id
        """
    /// The seed essay's deployment: one GPU instance per model, running the whole period, against what this fleet's
    /// workers were allocated (busy + idle) over the same hours.
    static let alwaysOnSQL = """
        WITH models AS (
            SELECT DISTINCT model FROM bitfleet.job_costs
            WHERE samples > 0 AND created_at > now() - make_interval(hours => $1::int)
        ), fleet AS (
            SELECT coalesce(sum(allocated_euros), 0) AS allocated FROM bitfleet.fleet_utilisation_hour
            WHERE hour > now() - make_interval(hours => $1::int)
        )
        SELECT g.id AS baseline, g.source AS gpu_figure, g.gpu, count(m.model) AS models,
               count(m.model) * g.euros_per_hour * $1::int AS gpu_always_on_eur, f.allocated AS fleet_allocated_eur,
               count(m.model) * g.euros_per_hour * $1::int - f.allocated AS saving_eur
        FROM bitfleet.gpu_baselines g
        JOIN models m ON g.model IS NULL OR g.model = m.model
        CROSS JOIN fleet f
        GROUP BY g.id, g.source, g.gpu, g.euros_per_hour, f.allocated
        ORDER BY g.source, g.id
        """
    static let baselinesSQL = """
        SELECT id, coalesce(model, '(every model)') AS model, gpu, euros_per_hour, samples_per_second, source, note
        FROM bitfleet.gpu_baselines ORDER BY id
        """

    func print(json: Bool) throws {
        if json {
            var parts: [String] = []
            for (key, sql, binds) in [("cost_per_1000_inferences", Self.per1000SQL, [Int]()),
                                      ("utilisation", Self.utilisationSQL, [hours]),
                                      ("allocation", Self.allocationSQL, [hours]),
                                      ("gpu_comparison", Self.gpuSQL, []),
                                      ("gpu_always_on", Self.alwaysOnSQL, [hours]),
                                      ("gpu_baselines", Self.baselinesSQL, [])] {
                let rows = try client.connection.query(
                    "SELECT coalesce(json_agg(t), '[]'::json)::text AS rows FROM (\(sql)) t", binds)
                parts.append("\"\(key)\":" + (try rows[0].string("rows")))
            }
            Swift.print("{" + parts.joined(separator: ",") + "}")
            return
        }
        Swift.print("BitFleet cost dashboard — from Postgres; EUR = metered CPU core-seconds / 3600 × price per core-hour")
        section("Cost per 1 000 inferences (measured)", Self.per1000SQL, [], empty: "no metered jobs with samples yet")
        section("Fleet utilisation, last \(hours) h (worker heartbeats; idle_eur is what idle cores cost)",
                Self.utilisationSQL, [hours], empty: "")
        section("Cost allocation since \(hours >= 24 ? "\(hours / 24) day(s) ago" : "today") (UTC), idle as its own line",
                Self.allocationSQL, [hours], empty: "nothing metered yet")
        section("GPU comparison (CPU euros measured; gpu_figure says whether the GPU throughput is measured or stated)",
                Self.gpuSQL, [], empty: "no GPU baseline or no metered samples (bitfleet.gpu_baselines)")
        section("Always-on alternative, last \(hours) h: one GPU instance per model for the whole period (the seed "
                + "essay's deployment) vs this fleet's allocated cost (busy + idle)",
                Self.alwaysOnSQL, [hours], empty: "no metered samples in the period")
        let baselines = try client.table(Self.baselinesSQL)
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
