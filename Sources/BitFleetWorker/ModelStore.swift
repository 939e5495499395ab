import BitFleetEngine
import BitFleetPostgres
import Foundation
import Synchronization

/// A model the registry names, resolved to a file on this server.
struct RegisteredModel: Sendable {
    var name: String
    var version: String
    var uri: String
    var sha256: String
}

/// Loaded models shared by all slots of a worker, keyed by the weights' sha256: each is memory-mapped once,
/// and the page cache shares it with every other worker process on the server.
final class ModelStore: Sendable {
    private let loaded = Mutex<[String: BinaryMoEModel]>([:])
    private let baseDirectory: String?

    init(baseDirectory: String?) {
        self.baseDirectory = baseDirectory
    }

    /// Looks the model up in the registry (newest version when the job names none).
    func resolve(name: String, version: String?, on connection: PostgresConnection) throws -> RegisteredModel {
        let rows = try connection.query("""
            SELECT name, version, uri, sha256 FROM bitfleet.models
            WHERE name = $1 AND ($2::text IS NULL OR version = $2)
            ORDER BY created_at DESC, version DESC LIMIT 1
            """, [name, version])
        guard let row = rows.first else {
            let known = try connection.query("SELECT string_agg(DISTINCT name, ', ' ORDER BY name) AS names FROM bitfleet.models")
            let names = known.first?["names"] ?? ""
            let what = version.map { "model \"\(name)\" version \"\($0)\"" } ?? "model \"\(name)\""
            throw JobFailure(.permanent, phase: "model", "unknown \(what); registered: \(names.isEmpty ? "none" : names)")
        }
        return RegisteredModel(name: try row.string("name"), version: try row.string("version"),
                               uri: try row.string("uri"), sha256: try row.string("sha256"))
    }

    /// The loaded model, loading and verifying it against the registered sha256 on first use.
    func model(for registered: RegisteredModel) throws -> BinaryMoEModel {
        try loaded.withLock { models in
            if let model = models[registered.sha256] { return model }
            let directory = localPath(registered.uri)
            do {
                let model = try BinaryMoEModel.load(directory: directory, expectedSHA256: registered.sha256)
                models[registered.sha256] = model
                return model
            } catch {
                throw JobFailure(.transient, phase: "model",
                                 "cannot load model \(registered.name) \(registered.version) from \(directory): \(error)")
            }
        }
    }

    func localPath(_ uri: String) -> String {
        var path = uri
        if path.hasPrefix("file://") { path = String(path.dropFirst("file://".count)) }
        if !path.hasPrefix("/"), let baseDirectory {
            path = (baseDirectory as NSString).appendingPathComponent(path)
        }
        return path
    }
}
