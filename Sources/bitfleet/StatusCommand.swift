import ArgumentParser
import BitFleetWorker

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Queue depth by state, the oldest due job, and live workers.")
    @OptionGroup var options: FleetOptions

    func run() throws {
        let client = FleetClient(connection: try options.connect())
        let queue = try client.queueDepth()
        let workers = try client.liveWorkers()
        if options.json {
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
