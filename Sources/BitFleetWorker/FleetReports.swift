import BitFleetPostgres

// The SQL behind `bitfleet status`, `bitfleet cost` and `bitfleet cost dashboard`: here in the library (and tested
// against the real schema), the CLI only prints what it returns.

/// The views `bitfleet cost --view` prints, with the order (and, for dated views, the range) of each.
public enum CostView: String, CaseIterable, Sendable {
    case modelDay = "model-day"
    case tenantMonth = "tenant-month"
    case per1000 = "per-1000"
    case batch
    case utilisationHour = "utilisation-hour"
    case utilisationDay = "utilisation-day"
    case allocation
    case savings
    case savingsGPU = "savings-gpu"
    case savingsDay = "savings-day"
    case baselines
    case alternatives
    case shared
    case fleetCost = "fleet-cost"
    case phases
    case queue
    case queueDepth = "queue-depth"
    case throughput

    /// The SQL and its parameters; every dated view is limited to the last `days` days.
    public func query(days: Int) -> (sql: String, parameters: [Int]) {
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
                SELECT model, kind, alternative_source, label, batch, device, measured_at::date::text AS measured_on,
                       samples, binary_euros_per_million, alternative_euros_per_million, binary_euros,
                       alternative_euros, saving_percent
                FROM bitfleet.savings_vs_alternatives
                ORDER BY model, alternative_source, kind, alternative_euros_per_million, alternative_id
                """, [])
        case .savingsGPU:
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
        case .alternatives:
            return ("""
                SELECT id, coalesce(model, '(every model)') AS model, kind, source, label, runtime, device, batch, cores,
                       euros_per_hour, samples_per_second, euros_per_million, measured_at::text, note
                FROM bitfleet.alternatives ORDER BY source, kind, model, label, batch
                """, [])
        case .shared:
            return ("""
                SELECT day::text, allocation, tenant, kind, jobs, samples, core_seconds, direct_euros, shared_euros, euros
                FROM bitfleet.cost_allocation_model_tenant_day WHERE day > current_date - $1::int
                ORDER BY day DESC, kind, allocation, tenant
                """, [days])
        case .fleetCost:
            return ("""
                SELECT day::text, node_euros, shared_euros, total_euros, direct_euros, shared_allocated_euros,
                       overhead_euros, idle_euros, shared_unallocated_euros, allocation_euros
                FROM bitfleet.fleet_cost_day WHERE day > current_date - $1::int ORDER BY day DESC
                """, [days])
        case .phases:
            return ("""
                SELECT day::text, model, phase, jobs, cpu_seconds, euros
                FROM bitfleet.phase_cpu_day WHERE day > current_date - $1::int ORDER BY day DESC, model, phase_order
                """, [days])
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

/// The sections of the terminal cost dashboard: cost per 1 000 inferences per model, fleet utilisation with idle
/// cost, the cost allocation with __idle__, and the GPU comparison with every GPU figure labelled measured or stated.
/// Queries taking `$1` take the period in hours.
public enum CostDashboardQueries {
    public static let per1000SQL = """
        SELECT model, model_version AS version, jobs, samples, cpu_seconds, euros, euros_per_1000_inferences AS eur_per_1000,
               samples_per_cpu_second
        FROM bitfleet.cost_per_1000_inferences WHERE samples > 0 ORDER BY model, model_version
        """
    public static let utilisationSQL = """
        SELECT 'last ' || $1::int || ' h' AS period, coalesce(max(workers), 0) AS max_workers,
               coalesce(sum(allocated_core_seconds), 0) AS allocated_core_s, coalesce(sum(busy_core_seconds), 0) AS busy_core_s,
               coalesce(sum(idle_core_seconds), 0) AS idle_core_s,
               100 * sum(busy_core_seconds) / nullif(sum(allocated_core_seconds), 0) AS utilisation_pct,
               coalesce(sum(allocated_euros), 0) AS allocated_eur, coalesce(sum(busy_euros), 0) AS busy_eur,
               coalesce(sum(idle_euros), 0) AS idle_eur
        FROM bitfleet.fleet_utilisation_hour WHERE hour > now() - make_interval(hours => $1::int)
        """
    public static let allocationSQL = """
        SELECT allocation, kind, sum(core_seconds) AS core_seconds, sum(euros) AS euros
        FROM bitfleet.cost_allocation_day WHERE day >= (now() AT TIME ZONE 'UTC')::date - ($1::int / 24)
        GROUP BY allocation, kind ORDER BY kind DESC, allocation
        """
    public static let gpuSQL = """
        SELECT model, baseline_id AS baseline, baseline_source AS gpu_figure, gpu, samples, cpu_euros AS cpu_eur_measured,
               gpu_euros AS gpu_eur_equivalent, saving_euros AS saving_eur, saving_percent AS saving_pct,
               cpu_euros_per_1000_inferences AS cpu_eur_per_1000, gpu_euros_per_1000_inferences AS gpu_eur_per_1000
        FROM bitfleet.savings_vs_gpu WHERE samples > 0 ORDER BY model, baseline_source, baseline_id
        """
    /// The seed essay's deployment: one GPU instance per model, running the whole period, against what this fleet's
    /// workers were allocated (busy + idle) over the same hours.
    public static let alwaysOnSQL = """
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
    /// The binary model's metered cost per million inferences next to every alternative: CPU peers and GPUs,
    /// measured (with the date) or stated.
    public static let alternativesSQL = """
        SELECT model, kind, alternative_source AS figure, label, runtime, batch, measured_at::date::text AS measured_on,
               binary_euros_per_million AS binary_eur_per_million, alternative_euros_per_million AS alt_eur_per_million,
               saving_percent AS saving_pct
        FROM bitfleet.savings_vs_alternatives WHERE samples > 0
        ORDER BY model, alternative_source, kind, alternative_euros_per_million, alternative_id
        """
    /// Each model and tenant's direct CPU euros plus its share of the shared costs, and the overhead, idle and
    /// unallocated shared lines, over the whole UTC days the period touches.
    public static let sharedSQL = """
        SELECT allocation, tenant, kind, sum(jobs) AS jobs, sum(direct_euros) AS direct_eur,
               sum(shared_euros) AS shared_eur, sum(euros) AS eur
        FROM bitfleet.cost_allocation_model_tenant_day WHERE day >= (now() AT TIME ZONE 'UTC')::date - ($1::int / 24)
        GROUP BY allocation, tenant, kind ORDER BY kind DESC, allocation, tenant
        """
    /// Node cost + shared cost against the sum of the allocation lines, over the same days.
    public static let fleetCostSQL = """
        SELECT coalesce(sum(node_euros), 0) AS node_eur, coalesce(sum(shared_euros), 0) AS shared_eur,
               coalesce(sum(total_euros), 0) AS total_eur, coalesce(sum(allocation_euros), 0) AS allocated_eur
        FROM bitfleet.fleet_cost_day WHERE day >= (now() AT TIME ZONE 'UTC')::date - ($1::int / 24)
        """
    /// Where the CPU money goes: metered CPU seconds per phase.
    public static let phasesSQL = """
        SELECT model, phase, sum(jobs) AS jobs, sum(cpu_seconds) AS cpu_seconds, sum(euros) AS euros
        FROM bitfleet.phase_cpu_day WHERE day >= (now() AT TIME ZONE 'UTC')::date - ($1::int / 24)
        GROUP BY model, phase, phase_order ORDER BY model, phase_order
        """
    public static let baselinesSQL = """
        SELECT id, coalesce(model, '(every model)') AS model, gpu, euros_per_hour, samples_per_second, source, note
        FROM bitfleet.gpu_baselines ORDER BY id
        """

    /// (JSON key, SQL, binds) of every section, in order.
    public static func sections(hours: Int) -> [(key: String, sql: String, parameters: [Int])] {
        [("cost_per_1000_inferences", per1000SQL, []), ("utilisation", utilisationSQL, [hours]),
         ("allocation", allocationSQL, [hours]), ("shared_costs", sharedSQL, [hours]), ("fleet_cost", fleetCostSQL, [hours]),
         ("phases", phasesSQL, [hours]), ("alternatives", alternativesSQL, []), ("gpu_comparison", gpuSQL, []),
         ("gpu_always_on", alwaysOnSQL, [hours]), ("gpu_baselines", baselinesSQL, [])]
    }
}

extension FleetClient {
    /// Jobs per state and the age of the oldest due job (`bitfleet.queue_depth`).
    public func queueDepth() throws -> (columns: [String], rows: [[String?]]) {
        try table("SELECT state::text, jobs, round(oldest_due_seconds::numeric, 1)::text AS oldest_due_seconds FROM bitfleet.queue_depth")
    }

    /// Workers that sent a heartbeat in the last two minutes and have not stopped.
    public func liveWorkers() throws -> (columns: [String], rows: [[String?]]) {
        try table("""
            SELECT id, hostname, concurrency, node_class, heartbeat_at::text, jobs_succeeded, jobs_failed
            FROM bitfleet.workers WHERE stopped_at IS NULL AND heartbeat_at > now() - interval '2 minutes' ORDER BY id
            """)
    }

    /// A query's rows as one JSON array, written by Postgres (numbers stay numbers, NULL stays null).
    public func json(_ sql: String, _ parameters: [Int] = []) throws -> String {
        try connection.query("SELECT coalesce(json_agg(t), '[]'::json)::text AS rows FROM (\(sql)) t", parameters)[0]
            .string("rows")
    }

    /// The whole cost dashboard as one JSON object, one key per section.
    public func costDashboardJSON(hours: Int) throws -> String {
        "{" + (try CostDashboardQueries.sections(hours: hours).map { "\"\($0.key)\":" + (try json($0.sql, $0.parameters)) }
            .joined(separator: ",")) + "}"
    }
}
