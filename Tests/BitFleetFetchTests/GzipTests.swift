import Foundation
import Testing

@testable import BitFleetFetch

/// gzip bytes made by Python's zlib (an independent implementation) at a given level.
func pythonGzip(_ data: [UInt8], level: Int) throws -> [UInt8] {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", "import gzip,sys; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read(), compresslevel=\(level), mtime=0))"]
    let inPipe = Pipe(), outPipe = Pipe()
    p.standardInput = inPipe
    p.standardOutput = outPipe
    try p.run()
    let writer = Thread {
        inPipe.fileHandleForWriting.write(Data(data))
        try? inPipe.fileHandleForWriting.close()
    }
    writer.start()
    let out = outPipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Array(out)
}

@Suite("gzip decoder")
struct GzipTests {
    static func corpus() -> [(String, [UInt8])] {
        var rng = SplitMix64(seed: 42)
        let random = (0..<70_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var text = ""
        for i in 0..<20_000 { text += "[\(i % 13), \(i % 7), 0.\(i % 10)]," }
        let skewed = (0..<100_000).map { _ in UInt8(Int.random(in: 0..<100, using: &rng) < 90 ? 65 : Int.random(in: 0...255, using: &rng)) }
        return [("empty", []), ("one byte", [7]), ("short text", bytes("hello, hello, hello world\n")),
                ("json text", bytes(text)), ("random", random), ("zeros", [UInt8](repeating: 0, count: 300_000)),
                ("skewed", skewed)]
    }

    @Test(arguments: [0, 1, 6, 9])
    func roundTripsPythonOutput(level: Int) throws {
        for (name, data) in GzipTests.corpus() {
            let gz = try pythonGzip(data, level: level)
            let out = try Gzip.decompress(gz, limit: 1 << 24)
            #expect(out == data, "\(name) at level \(level)")
        }
    }

    @Test func concatenatedMembers() throws {
        let a = try pythonGzip(bytes("first part "), level: 6)
        let b = try pythonGzip(bytes("second part"), level: 1)
        #expect(try Gzip.decompress(a + b, limit: 1000) == bytes("first part second part"))
        #expect(try Gzip.decompress(a + [0, 0, 0], limit: 1000) == bytes("first part "))
        #expect(throws: Gzip.Failure.self) { try Gzip.decompress(a + bytes("junk"), limit: 1000) }
    }

    @Test func everyTruncationFails() throws {
        for level in [0, 6] {
            let gz = try pythonGzip(bytes(String(repeating: "[1, 2, 3, 4],", count: 300)), level: level)
            for cut in 0..<gz.count {
                do {
                    _ = try Gzip.decompress(Array(gz.prefix(cut)), limit: 1 << 20)
                    Issue.record("a gzip stream cut at \(cut) of \(gz.count) bytes decoded (level \(level))")
                } catch {
                    #expect(error.message.contains("truncated") || error.kind == .corrupt, "cut \(cut): \(error.message)")
                }
            }
        }
    }

    @Test func corruptionIsDetected() throws {
        let data = bytes(String(repeating: "abcdefgh", count: 500))
        let gz = try pythonGzip(data, level: 9)
        var crc = gz
        crc[crc.count - 6] ^= 0x55
        #expect { try Gzip.decompress(crc, limit: 1 << 20) } throws: { ($0 as? Gzip.Failure)?.message.contains("CRC-32 mismatch") ?? false }
        var size = gz
        size[size.count - 2] ^= 1
        #expect { try Gzip.decompress(size, limit: 1 << 20) } throws: { ($0 as? Gzip.Failure)?.message.contains("length mismatch") ?? false }
        var method = gz
        method[2] = 7
        #expect { try Gzip.decompress(method, limit: 1 << 20) } throws: { ($0 as? Gzip.Failure)?.message.contains("compression method") ?? false }
    }

    @Test func bombStopsAtLimit() throws {
        let gz = try pythonGzip([UInt8](repeating: 0, count: 5_000_000), level: 9)
        #expect(gz.count < 10_000)
        #expect { try Gzip.decompress(gz, limit: 100_000) } throws: {
            ($0 as? Gzip.Failure)?.kind == .tooLarge && ($0 as? Gzip.Failure)?.message.contains("exceeds the limit of 100000 bytes") == true
        }
    }

    @Test func decoderAcceptsGzippedBodies() throws {
        let npy = Npy.uint8([1, 2, 3, 4, 5, 6, 7, 8], shape: [2, 4])
        let b = try InputDecoder.decode(try pythonGzip(npy, level: 6), format: nil, contentType: "application/gzip", url: "http://h/x.npy.gz", features: 4)
        #expect(b.samples == 2 && b.format == .npy)
        let j = try InputDecoder.decode(try pythonGzip(bytes("{\"input\": [1,2,3,4]}\n"), level: 1), format: nil, contentType: nil, url: "http://h/x.ndjson.gz?sig=1", features: 4)
        #expect(j.format == .ndjson && j.samples == 1)
        let cut = try pythonGzip(npy, level: 6).dropLast(5)
        let e = decodeError(Array(cut))
        #expect(e.message.contains("input is gzip-compressed and cannot be decompressed: gzip data is truncated"))
    }

    @Test func gzipMutations() throws {
        let seeds = [try pythonGzip(bytes(String(repeating: "[0.5, 1, 2, 3],", count: 40)), level: 6),
                     try pythonGzip(bytes("[[1,2,3,4]]"), level: 0),
                     try pythonGzip(Npy.uint8([1, 2, 3, 4], shape: [1, 4]), level: 9)]
        var rng = SplitMix64(seed: 0x6219)
        var ok = 0, rejected = 0
        for n in 0..<4000 {
            let body = MutationTests.mutate(seeds[n % seeds.count], &rng)
            do {
                _ = try Gzip.decompress(body, limit: 1 << 20)
                ok += 1
            } catch {
                rejected += 1
            }
        }
        print("gzip mutations: \(ok + rejected) executions, \(ok) decoded, \(rejected) rejected")
        #expect(rejected > 0)
    }
}
