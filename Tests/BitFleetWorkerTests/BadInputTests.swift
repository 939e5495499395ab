import BitFleetPostgres
import BitFleetTestSupport
import BitFleetWorker
import Foundation
import Testing

/// Every kind of bad input a worker meets, through a real worker, real libcurl and a real HTTP server: each job ends
/// in the state the README's "Bad input" table promises with a message naming the cause, nothing but the error is
/// written for it, and good jobs enqueued among them still succeed. `BITFLEET_PRINT_BAD_INPUTS=1` prints the table.
@Suite("Bad input through a worker")
struct BadInputTests {
    struct Case: Sendable {
        var kind: String
        var url: String
        var format: String? = nil
        var model = "tiny"
        var state = "dead"
        var attempts = 1
        var message: String
    }

    @Test func everyBadInputEndsWithItsCauseAndTheWorkerKeepsServing() throws {
        let fleet = try FleetFixture()
        let width = FleetFixture.features
        let good = try fleet.serveNPY("good.npy", samples: FleetFixture.randomSamples(2, seed: 60))
        func file(_ name: String, _ data: Data) throws -> String { try fleet.serve(name, bytes: data) }
        func text(_ name: String, _ value: String) throws -> String { try file(name, Data(value.utf8)) }
        let row = (0..<width).map { _ in "0.5" }.joined(separator: ",")
        var nanNPY = npyFloat([Float](repeating: 0.5, count: width), shape: [1, width])
        nanNPY.replaceSubrange(nanNPY.count - 4..<nanNPY.count, with: withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { Data($0) })
        var hugeShape = npy([UInt8](repeating: 1, count: width), shape: [1, width])
        if let range = hugeShape.range(of: Data("(1, \(width))".utf8)) {
            hugeShape.replaceSubrange(range, with: Data("(999999999999, \(width))".utf8))
        }
        var badHeader = npy([UInt8](repeating: 1, count: width), shape: [1, width])
        badHeader.replaceSubrange(10..<11, with: Data("(".utf8))
        let port = fleet.http.port

        // A model registered with a valid file that is corrupted afterwards (on disk, behind the registry's back).
        // Other weights than "tiny" (another seed): the store shares models by sha256, so a copy would never be read.
        let brokenDirectory = fleet.root.appendingPathComponent("broken-model")
        try run(["python3", "Ops/models/random_model.py", brokenDirectory.path, "--features", String(width),
                 "--stem", "48", "--experts", "6", "--top-k", "2", "--hidden", "24", "--classes", "5", "--seed", "8",
                 "--samples", "4"])
        try fleet.client.addModel(name: "broken", version: "1", directory: brokenDirectory.path)
        let weights = brokenDirectory.appendingPathComponent("model.safetensors")
        let handle = try FileHandle(forWritingTo: weights)
        try handle.truncate(atOffset: try handle.seekToEnd() / 2)
        try handle.close()

        let cases: [Case] = [
            Case(kind: "HTTP 404", url: fleet.http.url("status/404"), message: "HTTP 404 Not Found"),
            Case(kind: "HTTP 410", url: fleet.http.url("status/410"), message: "HTTP 410"),
            Case(kind: "HTTP 500", url: fleet.http.url("status/500"), attempts: 2, message: "HTTP 500"),
            Case(kind: "HTTP 503", url: fleet.http.url("status/503"), attempts: 2, message: "HTTP 503"),
            Case(kind: "HTTP 429", url: fleet.http.url("status/429"), attempts: 2, message: "HTTP 429"),
            Case(kind: "connection refused", url: "http://127.0.0.1:1/x.npy", attempts: 2, message: "connection failed"),
            Case(kind: "stall after headers", url: fleet.http.url("stall/30"), attempts: 2, message: "stalled"),
            Case(kind: "slowloris (drip-fed body)", url: fleet.http.url("slow"), attempts: 2, message: "stalled"),
            Case(kind: "oversize, with Content-Length", url: fleet.http.url("big/300000"), message: "exceeds the limit of 150000 bytes"),
            Case(kind: "oversize, chunked (no Content-Length)", url: fleet.http.url("big-chunked/300000"), message: "exceeds the limit of 150000 bytes"),
            Case(kind: "redirect loop", url: fleet.http.url("redirect-loop"), message: "too many redirects"),
            Case(kind: "redirect chain over the cap", url: fleet.http.url("redirect/9"), message: "too many redirects"),
            Case(kind: "redirect to cloud metadata (169.254.169.254)", url: fleet.http.url("redirect-to?url=http://169.254.169.254/latest/meta-data"), message: "link-local"),
            Case(kind: "redirect to a loopback address", url: fleet.http.url("redirect-to?url=http://127.0.0.2:\(port)/good.npy"), message: "loopback"),
            Case(kind: "numeric trick 0x7f.0.0.2", url: "http://0x7f.0.0.2:\(port)/good.npy", message: "refused to connect to 127.0.0.2"),
            Case(kind: "IPv4-mapped IPv6 [::ffff:127.0.0.2]", url: "http://[::ffff:127.0.0.2]:\(port)/good.npy", message: "refused to connect"),
            Case(kind: "file:// URL", url: "file:///etc/passwd", message: "protocol 'file' not allowed"),
            Case(kind: "ftp:// URL", url: "ftp://127.0.0.1/x.npy", message: "protocol 'ftp' not allowed"),
            Case(kind: "not a URL", url: "not a url", message: "invalid URL"),
            Case(kind: "TLS handshake with a plain-HTTP server", url: "https://127.0.0.1:\(port)/good.npy", attempts: 2, message: "TLS"),
            Case(kind: "empty body", url: fleet.http.url("empty"), message: "empty"),
            Case(kind: "truncated gzip", url: fleet.http.url("truncated-gzip/good.npy"), message: "truncated"),
            Case(kind: "malformed .npy header", url: try file("bad-header.npy", badHeader), message: "npy header"),
            Case(kind: ".npy wrong dtype (float64)", url: try file("f8.npy", npyHeaderOnly(descr: "<f8", shape: [1, width], dataBytes: 8 * width)), message: "unsupported npy dtype '<f8'"),
            Case(kind: ".npy wrong width", url: try file("wide.npy", npy([UInt8](repeating: 1, count: width + 1), shape: [1, width + 1])), message: "model expects \(width)"),
            Case(kind: ".npy truncated data", url: try file("short.npy", npy([UInt8](repeating: 1, count: width), shape: [1, width]).dropLast(7)), message: "truncated"),
            Case(kind: ".npy huge shape in header", url: try file("huge.npy", hugeShape), message: "999999999999"),
            Case(kind: ".npy float32 with NaN", url: try file("nan.npy", nanNPY), message: "NaN"),
            Case(kind: "JSON with NaN", url: try text("nan.json", "[[NaN, \(row.dropFirst(4))]]"), message: "NaN"),
            Case(kind: "JSON ragged rows", url: try text("ragged.json", "[[\(row)], [0.5]]"), message: "sample 1 has 1 features"),
            Case(kind: "JSON value out of range for uint8", url: try text("range.json", "[[2.0\(row.dropFirst(3))]]"), message: "outside 0...255"),
            Case(kind: "JSON 0–255 integers sent as plain json (scaled)", url: try text("pixels.json", "[[\((0..<width).map { String($0 * 5) }.joined(separator: ","))]]"), message: "use input_format 'json:uint8'"),
            Case(kind: "json:uint8 value that is not an integer 0–255", url: try text("u8.json", "[[12.5\(row.dropFirst(3))]]"), format: "json:uint8", message: "not an integer 0…255"),
            Case(kind: "ndjson:uint8 value over 255", url: try text("u8.ndjson", "[256\(row.dropFirst(3))]\n"), format: "ndjson:uint8", message: "not an integer 0…255"),
            Case(kind: "not JSON at all", url: try text("garbage.json", "hello"), message: "invalid JSON"),
            Case(kind: "NDJSON bad line", url: try text("bad.ndjson", "[\(row)]\nnot json\n"), format: "ndjson", message: "line 2"),
            Case(kind: "unknown input format", url: good, format: "parquet", message: "unknown input format 'parquet'"),
            Case(kind: "unknown model", url: good, model: "no-such-model", message: "unknown model \"no-such-model\""),
            Case(kind: "corrupt model file (checksum does not match)", url: good, model: "broken", attempts: 1, message: "sha256"),
        ]
        var ids: [Int] = []
        var goodIDs: [Int] = []
        for (index, item) in cases.enumerated() {
            var request = FleetClient.JobRequest(model: item.model, inputURL: item.url)
            request.inputFormat = item.format
            request.maxAttempts = 2
            ids.append(try fleet.client.enqueue(request))
            if index % 6 == 5 { goodIDs.append(try fleet.client.enqueue(.init(model: "tiny", inputURL: good))) }
        }
        goodIDs.append(try fleet.client.enqueue(.init(model: "tiny", inputURL: good)))

        let worker = try fleet.drain {
            $0.fetchPolicy.maxBodyBytes = 150_000
            $0.fetchPolicy.maxRedirects = 5
            $0.fetchPolicy.lowSpeedLimit = 1024
            $0.fetchPolicy.lowSpeedTime = 1
            $0.fetchPolicy.allowedNetworks = ["127.0.0.1/32"]
        }

        var table = "| bad input | final state | attempts | error (`last_error`) |\n|---|---|---|---|\n"
        for (item, id) in zip(cases, ids) {
            let job = try #require(try fleet.client.job(id))
            let error = job.lastError ?? ""
            #expect(job.state == item.state, "\(item.kind): \(job.state) \(error)")
            #expect(job.attempt == item.attempts, "\(item.kind): \(job.attempt) attempts, \(error)")
            #expect(error.contains(item.message), "\(item.kind): \(error)")
            #expect(job.output == nil, "\(item.kind)")
            table += "| \(item.kind) | \(job.state) | \(job.attempt) | \(error.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "127.0.0.1:\(port)", with: "HOST")) |\n"
        }
        for id in goodIDs { #expect(try fleet.client.job(id)?.state == "succeeded") }
        #expect(worker.statistics.succeeded == goodIDs.count)
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.results") == String(goodIDs.count))
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs") == String(goodIDs.count))
        if ProcessInfo.processInfo.environment["BITFLEET_PRINT_BAD_INPUTS"] == "1" { print(table) }
    }
}

/// A float32 .npy.
func npyFloat(_ values: [Float], shape: [Int]) -> Data {
    var data = npyHeaderOnly(descr: "<f4", shape: shape, dataBytes: 0)
    for value in values { withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
    return data
}

/// An .npy header with any dtype, followed by `dataBytes` zero bytes.
func npyHeaderOnly(descr: String, shape: [Int], dataBytes: Int) -> Data {
    let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    var data = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
    data.append(contentsOf: [UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)])
    data.append(contentsOf: Array(header.utf8))
    data.append(Data(count: dataBytes))
    return data
}
