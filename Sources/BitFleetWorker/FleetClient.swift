import BitFleetEngine
import BitFleetPostgres
import Foundation

/// What users do besides running workers: register models, enqueue work, watch batches, read results and costs.
/// The CLI is a thin layer over this; every statement is parameterised.
public struct FleetClient {
    public let connection: PostgresConnection

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    // MARK: Models

    public struct ModelEntry: Sendable, Codable, Equatable {
        public var name: String
        public var version: String
        public var uri: String
        public var sha256: String
        public var inputFeatures: Int?
        public var createdAt: String
    }

    /// Validates the model directory (loads it fully) and registers it with the sha256 of its weights, under `name`
    /// and `version`; without a version, the one its config.json names (so the registry and the model's own card
    /// agree unless the operator says otherwise).
    @discardableResult
    public func addModel(name: String, version: String? = nil, directory: String, uri: String? = nil) throws -> ModelEntry {
        let model = try BinaryMoEModel.load(directory: directory)
        let version = version ?? model.config.version
        let absolute = URL(fileURLWithPath: directory).standardizedFileURL.path
        let classes = String(decoding: try JSONEncoder().encode(model.config.classes), as: UTF8.self)
        let rows = try connection.query("""
            INSERT INTO bitfleet.models (name, version, uri, sha256, input_features, classes)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb)
            ON CONFLICT (name, version) DO UPDATE
                SET uri = excluded.uri, sha256 = excluded.sha256, input_features = excluded.input_features,
                    classes = excluded.classes
            RETURNING name, version, uri, sha256, input_features, created_at::text
            """, [name, version, uri ?? "file://" + absolute, model.sha256, model.config.inputFeatures, classes])
        return try Self.modelEntry(rows[0])
    }

    public func models() throws -> [ModelEntry] {
        try connection.query("""
            SELECT name, version, uri, sha256, input_features, created_at::text FROM bitfleet.models ORDER BY name, created_at
            """).map(Self.modelEntry)
    }

    static func modelEntry(_ row: PostgresRow) throws -> ModelEntry {
        ModelEntry(name: try row.string("name"), version: try row.string("version"), uri: try row.string("uri"),
                   sha256: try row.string("sha256"), inputFeatures: try row.optionalInt("input_features"),
                   createdAt: try row.string("created_at"))
    }

    // MARK: Enqueue

    public struct JobRequest: Sendable {
        public var model: String
        public var inputURL: String
        public var modelVersion: String?
        public var inputFormat: String?
        public var topK = 3
        public var priority = 0
        public var maxAttempts = 5
        public var tenant: String?
        public var idempotencyKey: String?
        /// Seconds from now before the job may run.
        public var delaySeconds: Double = 0

        public init(model: String, inputURL: String) {
            self.model = model
            self.inputURL = inputURL
        }
    }

    /// Calls `bitfleet.enqueue(...)`; returns the job id (the existing one for a repeated idempotency key).
    public func enqueue(_ request: JobRequest) throws -> Int {
        let rows = try connection.query("""
            SELECT bitfleet.enqueue(model => $1, input_url => $2, model_version => $3, input_format => $4, top_k => $5,
                                    priority => $6, run_after => now() + make_interval(secs => $7), max_attempts => $8,
                                    tenant => $9, idempotency_key => $10) AS id
            """, [request.model, request.inputURL, request.modelVersion, request.inputFormat, request.topK,
                  request.priority, request.delaySeconds, request.maxAttempts, request.tenant, request.idempotencyKey])
        return try rows[0].int("id")
    }

    public struct BatchItem: Sendable {
        public var inputURL: String
        public var customID: String?
        public init(inputURL: String, customID: String? = nil) {
            self.inputURL = inputURL
            self.customID = customID
        }
    }

    /// Calls `bitfleet.create_batch(...)` with all items in one statement; returns the batch id.
    public func createBatch(model: String, items: [BatchItem], modelVersion: String? = nil, inputFormat: String? = nil,
                            topK: Int = 3, tenant: String? = nil, expiresInHours: Double = 24) throws -> Int {
        let hasIDs = items.contains { $0.customID != nil }
        let customIDs: PostgresBind = hasIDs ? items.enumerated().map { $0.element.customID ?? String($0.offset) } : nil
        let rows = try connection.query("""
            SELECT bitfleet.create_batch(model => $1, input_urls => $2::text[], custom_ids => $3::text[],
                                         model_version => $4, input_format => $5, top_k => $6, tenant => $7,
                                         expires_in => make_interval(secs => $8::float8 * 3600)) AS id
            """, [model, items.map(\.inputURL), customIDs, modelVersion, inputFormat, topK, tenant, expiresInHours])
        return try rows[0].int("id")
    }

    // MARK: Reading

    public struct BatchProgress: Sendable, Codable, Equatable {
        public var batchID: Int
        public var model: String
        public var status: String
        public var total: Int
        public var queued: Int
        public var running: Int
        public var retrying: Int
        public var succeeded: Int
        public var failed: Int
        public var cancelled: Int
        public var isFinished: Bool { status == "completed" || status == "cancelled" }
    }

    public func batchProgress(_ batchID: Int) throws -> BatchProgress? {
        try connection.query("SELECT * FROM bitfleet.batch_progress WHERE batch_id = $1", [batchID]).first.map { row in
            BatchProgress(batchID: try row.int("batch_id"), model: try row.string("model"), status: try row.string("status"),
                          total: try row.int("total"), queued: try row.int("queued"), running: try row.int("running"),
                          retrying: try row.int("retrying"), succeeded: try row.int("succeeded"),
                          failed: try row.int("failed"), cancelled: try row.int("cancelled"))
        }
    }

    /// Cancels a batch: jobs not yet running become `cancelled`; running ones finish. Returns how many were cancelled.
    @discardableResult
    public func cancelBatch(_ batchID: Int) throws -> Int {
        try connection.query("SELECT bitfleet.cancel_batch($1) AS n", [batchID])[0].int("n")
    }

    public struct JobResult: Sendable, Codable, Equatable {
        public var jobID: Int
        public var customID: String?
        public var state: String
        public var attempt: Int
        public var output: String?
        public var lastError: String?
    }

    /// Every job of a batch with its state, result document (succeeded) or last error.
    public func batchResults(_ batchID: Int) throws -> [JobResult] {
        try connection.query("""
            SELECT j.id, j.custom_id, j.state::text, j.attempt, r.output::text AS output, j.last_error
            FROM bitfleet.jobs j LEFT JOIN bitfleet.results r ON r.job_id = j.id
            WHERE j.batch_id = $1 ORDER BY j.id
            """, [batchID]).map(Self.jobResult)
    }

    public func job(_ jobID: Int) throws -> JobResult? {
        try connection.query("""
            SELECT j.id, j.custom_id, j.state::text, j.attempt, r.output::text AS output, j.last_error
            FROM bitfleet.jobs j LEFT JOIN bitfleet.results r ON r.job_id = j.id WHERE j.id = $1
            """, [jobID]).first.map(Self.jobResult)
    }

    static func jobResult(_ row: PostgresRow) throws -> JobResult {
        JobResult(jobID: try row.int("id"), customID: try row.optionalString("custom_id"), state: try row.string("state"),
                  attempt: try row.int("attempt"), output: try row.optionalString("output"),
                  lastError: try row.optionalString("last_error"))
    }

    /// Rows of a view or query as ordered (column, text value) pairs, for the CLI's tables, CSV and JSON.
    public func table(_ sql: String, _ parameters: [PostgresBind] = []) throws -> (columns: [String], rows: [[String?]]) {
        let rows = try connection.query(sql, parameters)
        return (rows.columns, rows.map { row in rows.columns.map { row[$0] } })
    }
}
