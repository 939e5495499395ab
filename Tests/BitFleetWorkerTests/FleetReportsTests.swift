import BitFleetPostgres
import BitFleetTestSupport
import BitFleetWorker
import Foundation
import Testing

/// The SQL of `bitfleet status`, `bitfleet cost` and `bitfleet cost dashboard` lives in the library: every query runs
/// against the real schema, empty and with a finished job, and its JSON form parses.
@Suite("Status and cost reports (library SQL)")
struct FleetReportsTests {
    @Test func everyCostViewStatusAndDashboardQueryRuns() throws {
        let fleet = try FleetFixture()
        for round in 0..<2 {
            if round == 1 {
                let url = try fleet.serveNPY("r.npy", samples: FleetFixture.randomSamples(2, seed: 97))
                _ = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
                _ = try fleet.drain()
            }
            for view in CostView.allCases {
                let (sql, parameters) = view.query(days: 30)
                let table = try fleet.client.table(sql, parameters)
                #expect(!table.columns.isEmpty, "\(view)")
                let json = try fleet.client.json(sql, parameters)
                #expect(try JSONSerialization.jsonObject(with: Data(json.utf8)) is [Any], "\(view)")
            }
            let queue = try fleet.client.queueDepth()
            #expect(queue.rows.count == 6)  // every state, zero included
            _ = try fleet.client.liveWorkers()
            let dashboard = try JSONSerialization.jsonObject(with: Data(try fleet.client.costDashboardJSON(hours: 24).utf8)) as? [String: Any]
            #expect(Set(dashboard?.keys.map { $0 } ?? []) == Set(CostDashboardQueries.sections(hours: 24).map(\.key)))
        }
        let perModel = try fleet.client.json(CostDashboardQueries.per1000SQL)
        #expect(perModel.contains("\"tiny\""))
        let succeeded = try fleet.client.queueDepth().rows.first { $0[0] == "succeeded" }
        #expect(succeeded?[1] == "1")
    }
}
