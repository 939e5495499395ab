import BitFleetPostgres
import BitFleetTestSupport
import Foundation
import Testing

/// First contact: the throwaway cluster starts from a directory the postgres user cannot enter (a clone under /root).
@Suite("Ops/pg.sh")
struct OpsScriptTests {
    /// Runs Ops/pg.sh with its output in a file: the server it starts must not hold a pipe of ours.
    func pgSh(_ command: String, _ cluster: String, output: URL) throws -> String {
        try run(["bash", "-c", "\"$0\" \"$1\" \"$2\" >\"$3\" 2>&1 </dev/null",
                 repositoryRoot.appendingPathComponent("Ops/pg.sh").path, command, cluster, output.path])
        return try String(contentsOf: output, encoding: .utf8)
    }

    @Test(.enabled(if: getuid() == 0, "the postgres-user path only applies as root"))
    func aClusterStartsFromADirectoryThePostgresUserCannotEnter() throws {
        let parent = try temporaryDirectory("bitfleet-0700")
        defer { try? FileManager.default.removeItem(at: parent) }
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: parent.path)
        let cluster = parent.appendingPathComponent("clone/.tmp/pg").path
        let log = parent.appendingPathComponent("pg.out")
        let url = try pgSh("start", cluster, output: log).split(separator: "\n").last.map(String.init) ?? ""
        var removed = false
        defer { if !removed { _ = try? pgSh("remove", cluster, output: log) } }
        let home = try String(contentsOfFile: cluster + "/location", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(home.hasPrefix("/var/tmp/bitfleet-pg."))
        #expect(try PostgresConnection(url: url).query("SELECT 1 AS one")[0]["one"] == "1")
        _ = try pgSh("remove", cluster, output: log)
        removed = true
        #expect(!FileManager.default.fileExists(atPath: home))
        #expect(!FileManager.default.fileExists(atPath: cluster))
    }
}
