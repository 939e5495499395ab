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
    /// Called once for each model this store loads (the worker logs and meters its kernel paths).
    private let onLoad: @Sendable (RegisteredModel, BinaryMoEModel) -> Void

    init(baseDirectory: String?, onLoad: @escaping @Sendable (RegisteredModel, BinaryMoEModel) -> Void = { _, _ in }) {
        self.baseDirectory = baseDirectory
        self.onLoad = onLoad
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

    /// The model when this process has already loaded it (no file is touched).
    func loadedModel(for registered: RegisteredModel) -> BinaryMoEModel? {
        loaded.withLock { $0[registered.sha256] }
    }

    /// The loaded model, loading and verifying it against the registered sha256 on first use. Loading and hashing
    /// run outside the lock, so a slot loading a large model never blocks slots using another (two slots loading
    /// the same model at once both map it; the first one stored is kept).
    func model(for registered: RegisteredModel) throws -> BinaryMoEModel {
        if let model = loaded.withLock({ $0[registered.sha256] }) { return model }
        let directory = localPath(registered.uri)
        let model: BinaryMoEModel
        do {
            model = try BinaryMoEModel.load(directory: directory, expectedSHA256: registered.sha256)
        } catch {
            // A checksum that does not match (or a broken config) stays broken: permanent; a file that cannot be
            // read now may be readable later: retry.
            let disposition = ErrorClassifier.classify(error, phase: .model)
            throw JobFailure(disposition == .permanent ? .permanent : .transient, phase: "model",
                             "cannot load model \(registered.name) \(registered.version) from \(directory): \(error)")
        }
        let (kept, stored) = loaded.withLock { models -> (BinaryMoEModel, Bool) in
            if let existing = models[registered.sha256] { return (existing, false) }
            models[registered.sha256] = model
            return (model, true)
        }
        if stored { onLoad(registered, kept) }
        return kept
    }

    /// Where the loader finds the model: `file://` URIs go to it as they are (the engine's loader is the one place
    /// that reads them: `file:///path`, `file://localhost/path`, percent-escapes), a relative path is resolved
    /// against the worker's `--model-dir`.
    func localPath(_ uri: String) -> String {
        if uri.hasPrefix("file://") || uri.hasPrefix("/") { return uri }
        guard let baseDirectory else { return uri }
        return (baseDirectory as NSString).appendingPathComponent(uri)
    }
}
