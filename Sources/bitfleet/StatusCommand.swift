import ArgumentParser
import BitFleetWorker

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Queue depth by state, the oldest due job, and live workers.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let client = FleetClient(connection: try connection.connect())
        let queue = try client.table("SELECT state::text, jobs, round(oldest_due_seconds::numeric, 1)::text AS oldest_due_seconds FROM bitfleet.queue_depth")
        let workers = try client.table("""
            SELECT id, hostname, concurrency, node_class, heartbeat_at::text, jobs_succeeded, jobs_failed
            FROM bitfleet.workers WHERE stopped_at IS NULL AND heartbeat_at > now() - interval '2 minutes' ORDER BY id
            """)
        if output.json {
            try printJSON(["queue": rowsAsObjects(queue), "workers": rowsAsObjects(workers)])
            return
        }
        printTable(queue.columns, queue.rows)
        print("")
        printTable(workers.columns, workers.rows)
    }
}

func rowsAsObjects(_ table: (columns: [String], rows: [[String?]])) -> [[String: String?]] {
    table.rows.map { Dictionary(uniqueKeysWithValues: zip(table.columns, $0)) }
}
