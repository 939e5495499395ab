import BitFleetEngine
import BitFleetFetch
import BitFleetPostgres
import BitFleetTestSupport
import Foundation
import Testing

@testable import BitFleetWorker

/// Issue 14, item 4: what one slot may hold is bounded by settings the operator sees (--max-input-bytes,
/// --max-result-bytes); an input past them fails permanently with a clear error, and the worker keeps serving.
@Suite("Bounds: decompressed inputs and result documents")
struct BoundsTests {
    /// `.npy` of `rows` × 40 zero bytes, gzip-compressed (served as a plain .gz file, no Content-Encoding), made by
    /// Python's zlib in a streaming way: about 1 KB of gzip per MB of input.
    static func gzipBomb(rows: Int) throws -> Data {
        let script = """
            import sys, zlib
            rows = int(sys.argv[1])
            d = "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, 40), }" % rows
            d += " " * ((64 - (10 + len(d) + 1) % 64) % 64) + "\\n"
            head = b"\\x93NUMPY\\x01\\x00" + len(d).to_bytes(2, "little") + d.encode()
            c = zlib.compressobj(9, zlib.DEFLATED, 31)
            out = [c.compress(head)]
            left, block = rows * 40, bytes(1 << 20)
            while left > 0:
                out.append(c.compress(block[:min(left, len(block))]))
                left -= len(block)
            out.append(c.flush())
            sys.stdout.buffer.write(b"".join(out))
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, String(rows)]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TestSetupError("python gzip bomb failed") }
        return data
    }

    @Test func gzipBombsOnEverySlotFailPermanentlyAtTheInputLimit() throws {
        let fleet = try FleetFixture()
        // 400 MiB of samples (past the decoder's own 256 MiB cap) in well under a megabyte of gzip.
        let bomb = try Self.gzipBomb(rows: (400 << 20) / 40)
        let limit = 1 << 20
        #expect(bomb.count < limit)
        let bombURL = try fleet.serve("bomb.npy.gz", bytes: bomb)
        var bombs: [Int] = []
        for i in 0..<8 {
            bombs.append(try fleet.client.enqueue(.init(model: "tiny", inputURL: bombURL + "?copy=\(i)")))
        }
        let good = try fleet.serveNPY("ok.npy", samples: FleetFixture.randomSamples(3, seed: 1404))
        let goods = try (0..<2).map { _ in try fleet.client.enqueue(.init(model: "tiny", inputURL: good)) }
        // Four slots, one job each at a time: four bombs are expanded at once.
        _ = try fleet.drain {
            $0.concurrency = 4
            $0.claimBatch = 1
            $0.fetchPolicy.maxBodyBytes = limit
        }
        for id in bombs {
            let job = try #require(try fleet.client.job(id))
            #expect(job.state == "dead")
            #expect(job.attempt == 1)   // permanent: not retried
            let error = job.lastError ?? ""
            #expect(error.hasPrefix("fetch: "), "\(error)")
            #expect(error.contains("is gzip data that decompresses past the limit of \(limit) bytes"), "\(error)")
            #expect(job.output == nil)
        }
        for id in goods { #expect(try fleet.client.job(id)?.state == "succeeded") }
        #expect(try fleet.scalar("SELECT count(*) FROM bitfleet.job_costs WHERE job_id = ANY($1::bigint[])", [bombs]) == "0")
    }

    @Test func aGzipInputWithinTheLimitStillWorks() throws {
        let fleet = try FleetFixture()
        let bomb = try Self.gzipBomb(rows: 1000)   // 40 000 bytes decompressed
        let url = try fleet.serve("small.npy.gz", bytes: bomb)
        let id = try fleet.client.enqueue(.init(model: "tiny", inputURL: url))
        _ = try fleet.drain { $0.fetchPolicy.maxBodyBytes = 50_000 }
        #expect(try fleet.client.job(id)?.state == "succeeded")
    }

    // MARK: result documents

    static func document(samples: Int, classes: Int, label: String = "Ankle boot", customIDs: Bool = false,
                         maxBytes: Int) -> ResultDocument {
        let input = InputBatch(samples: samples, features: 1, values: .uint8([UInt8](repeating: 1, count: samples)),
                               customIDs: customIDs ? (0..<samples).map { $0 % 2 == 0 ? "id-\($0)" : nil } : nil,
                               format: .npy)
        let ranked = RankedClasses(
            indices: (0..<samples).flatMap { _ in (0..<classes).map { Int32($0) } }, perSample: classes,
            probabilities: (0..<samples).flatMap { _ in (0..<classes).map { 1 / Float($0 + 3) } },
            labels: Array(repeating: label, count: classes))
        return ResultDocument(model: RegisteredModel(name: "m", version: "1", uri: "", sha256: ""), input: input,
                              ranked: ranked, samples: 0..<samples, maxBytes: maxBytes)
    }

    @Test func aResultPastTheLimitFailsPermanentlyBeforeItIsBuilt() throws {
        let doc = Self.document(samples: 100_000, classes: 10, maxBytes: 1 << 20)
        #expect(doc.minimumBytes > 1 << 20)
        let failure = #expect(throws: JobFailure.self) { _ = try doc.json() }
        #expect(failure?.errorClass == .permanent)
        #expect(failure?.phase == "result")
        #expect(failure?.message.contains("the limit of 1048576 bytes (--max-result-bytes)") == true, "\(String(describing: failure))")
        #expect(failure?.message.contains("100000 samples × 10 classes") == true)
    }

    @Test func aResultThatOnlyLongLabelsPushPastTheLimitIsStoppedWhileWriting() throws {
        let doc = Self.document(samples: 1000, classes: 5, label: String(repeating: "x", count: 300), maxBytes: 500_000)
        #expect(doc.minimumBytes < 500_000)
        let failure = #expect(throws: JobFailure.self) { _ = try doc.json() }
        #expect(failure?.message.contains("exceeds the limit of 500000 bytes") == true, "\(String(describing: failure))")
    }

    @Test func resultDocumentsAreValidJSON() throws {
        let doc = Self.document(samples: 3, classes: 2, label: "a \"quoted\"\\ label\n\u{1}/ü", customIDs: true, maxBytes: 1 << 20)
        let text = try doc.json()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["model"] as? String == "m" && object["version"] as? String == "1")
        let predictions = try #require(object["predictions"] as? [[String: Any]])
        #expect(predictions.count == 3)
        #expect(predictions[0]["custom_id"] as? String == "id-0")
        #expect(predictions[1]["custom_id"] == nil)
        let top = try #require(predictions[2]["top"] as? [[String: Any]])
        #expect(top[1]["class"] as? Int == 1)
        #expect(top[1]["label"] as? String == "a \"quoted\"\\ label\n\u{1}/ü")
        #expect(abs((top[1]["p"] as? Double ?? 0) - 0.25) < 1e-6)
        #expect(text.utf8.count <= 1 << 20)
        #expect(ResultDocument.number(1) == "1" && ResultDocument.number(.nan) == "0")
        #expect(Self.document(samples: 1, classes: 1, maxBytes: 5).maxBytes == 5)
    }

    /// The document's exact bytes (what `bitfleet.results.output` stores and clients parse): keys in order, labels
    /// escaped, integers without a fraction, probabilities in the shortest form that reads back the same Float.
    @Test func resultDocumentsHaveTheseExactBytes() throws {
        let doc = Self.document(samples: 12, classes: 2, label: "T-shirt \"top\"", customIDs: true, maxBytes: 1 << 20)
        let text = try doc.json()
        var expected = "{\"model\":\"m\",\"predictions\":["
        for sample in 0..<12 {
            if sample > 0 { expected += "," }
            expected += "{"
            if sample % 2 == 0 { expected += "\"custom_id\":\"id-\(sample)\"," }
            expected += "\"sample\":\(sample),\"top\":[{\"class\":0,\"label\":\"T-shirt \\\"top\\\"\",\"p\":0.33333334},"
            expected += "{\"class\":1,\"label\":\"T-shirt \\\"top\\\"\",\"p\":0.25}]}"
        }
        expected += "],\"version\":\"1\"}"
        #expect(text == expected)
        #expect(ResultDocument.number(0.97) == "0.97" && ResultDocument.number(1e-7) == "1e-07"
                && ResultDocument.number(-3) == "-3" && ResultDocument.number(.infinity) == "0")
    }

    /// The setting end to end: the `bitfleet worker` binary with BITFLEET_MAX_RESULT_BYTES fails a job whose result
    /// is larger, permanently, and writes the small one.
    @Test func theWorkerBinaryAppliesMaxResultBytes() throws {
        let fleet = try FleetFixture()
        let big = try fleet.serveNPY("big.npy", samples: FleetFixture.randomSamples(200, seed: 1405))
        let small = try fleet.serveNPY("small.npy", samples: FleetFixture.randomSamples(1, seed: 1406))
        let bigID = try fleet.client.enqueue(.init(model: "tiny", inputURL: big))
        let smallID = try fleet.client.enqueue(.init(model: "tiny", inputURL: small))
        let binary = repositoryRoot.appendingPathComponent(".build/debug/bitfleet").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["worker", "--exit-when-drained", "--health-port", "0", "--poll-seconds", "0.2"]
        var environment = ProcessInfo.processInfo.environment
        environment["DATABASE_URL"] = fleet.database.url
        environment["BITFLEET_MAX_RESULT_BYTES"] = "4096"
        environment["BITFLEET_ALLOW_NETWORKS"] = "127.0.0.1"
        p.environment = environment
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let failed = try #require(try fleet.client.job(bigID))
        #expect(failed.state == "dead" && failed.attempt == 1)
        #expect(failed.lastError?.hasPrefix("result: the result document") == true, "\(failed.lastError ?? "")")
        #expect(failed.lastError?.contains("the limit of 4096 bytes") == true)
        #expect(try fleet.client.job(smallID)?.state == "succeeded")
    }
}
