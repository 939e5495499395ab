import Testing

@testable import BitFleetFetch

/// Deterministic PRNG (SplitMix64) so a failure reproduces from the printed seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random mutations and truncations of valid inputs: every one must decode or throw DecodeError (typed throws
/// make any other error impossible), never trap, and a success must be self-consistent.
@Suite("Decoder mutation (property) tests")
struct MutationTests {
    static let tokens: [[UInt8]] = [
        "NaN", "Infinity", "-", "1e999", "1e-999", "[", "]", "{", "}", ",", ":", "\"", "\\u", "\\ud800", "null", "true",
        "'descr'", "'shape'", "(", ")", "False", "True", "<f4", "|u1", "<f8", "99999999999999999999", "0", "\n", "\r\n",
        "\"custom_id\":", "\"input\":", "\u{0}", "\u{93}NUMPY", "-0", ".5", "1.", "e5", "4294967296",
        "9223372036854775807", "6000000000000002660", "1099511627776", "0, ", "(0, ", ", 0)",
    ].map { Array($0.utf8) }

    static func mutate(_ input: [UInt8], _ rng: inout SplitMix64) -> [UInt8] {
        var b = input
        let rounds = Int.random(in: 1...4, using: &rng)
        for _ in 0..<rounds {
            let op = Int.random(in: 0..<9, using: &rng)
            let i = b.isEmpty ? 0 : Int.random(in: 0..<b.count, using: &rng)
            switch op {
            case 0: if !b.isEmpty { b[i] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng) }
            case 1: if !b.isEmpty { b[i] = UInt8.random(in: 0...255, using: &rng) }
            case 2: b = Array(b.prefix(Int.random(in: 0...b.count, using: &rng)))   // truncate
            case 3: b.insert(contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: i)
            case 4: if !b.isEmpty { b.removeSubrange(i..<min(b.count, i + Int.random(in: 1...16, using: &rng))) }
            case 5: if !b.isEmpty { let j = min(b.count, i + Int.random(in: 1...32, using: &rng)); b.insert(contentsOf: b[i..<j], at: Int.random(in: 0...b.count, using: &rng)) }
            case 6: b.insert(contentsOf: tokens.randomElement(using: &rng)!, at: i)
            case 7: if !b.isEmpty { let t = tokens.randomElement(using: &rng)!; b.replaceSubrange(i..<min(b.count, i + t.count), with: t) }
            default:   // digits are where sizes live: bump one
                if let d = b.indices.filter({ b[$0] >= 48 && b[$0] <= 57 }).randomElement(using: &rng) {
                    b[d] = UInt8.random(in: 48...57, using: &rng)
                }
            }
        }
        return b
    }

    struct Tally { var ok = 0; var rejected = 0 }

    static func run(_ seeds: [[UInt8]], format: String?, features: Int, iterations: Int, seed: UInt64) -> Tally {
        var rng = SplitMix64(seed: seed)
        var t = Tally()
        for n in 0..<iterations {
            let base = seeds[n % seeds.count]
            let body = mutate(base, &rng)
            do {
                let batch = try InputDecoder.decode(body, format: format, contentType: nil, url: "http://h/in", features: features, maxSamples: 10_000)
                #expect(batch.samples >= 1 && batch.values.count == batch.samples * features, "seed \(seed) iteration \(n)")
                if let ids = batch.customIDs { #expect(ids.count == batch.samples) }
                if case .float32(let v) = batch.values { #expect(v.allSatisfy { $0.isFinite }, "seed \(seed) iteration \(n)") }
                t.ok += 1
            } catch {
                #expect(!error.message.isEmpty)
                t.rejected += 1
            }
        }
        return t
    }

    static let iterations = 6000

    @Test func npyMutations() {
        let seeds = [
            Npy.uint8((0..<32).map { UInt8($0) }, shape: [8, 4]),
            Npy.float32((0..<16).map { Float($0) / 16 }, shape: [4, 4], version: 2),
            Npy.float32([0.5, 0.25, 0, 1], shape: [4], version: 3),
            Npy.uint8((0..<16).map { UInt8($0) }, shape: [4, 2, 2]),
        ]
        let t = MutationTests.run(seeds, format: nil, features: 4, iterations: MutationTests.iterations, seed: 0xB17F1EE7)
        print("npy mutations: \(t.ok + t.rejected) executions, \(t.ok) decoded, \(t.rejected) rejected")
        #expect(t.ok + t.rejected == MutationTests.iterations)
        #expect(t.ok > 0 && t.rejected > 0)
    }

    @Test func npyShapeProperty() {
        // Random shapes built from boundary values, with random dtype and body sizes: decode or DecodeError.
        let dims = [0, 1, 2, 3, 4, 7, 255, 65_536, 1 << 31, 1 << 32, 1 << 40, (1 << 40) + 1, 1 << 62, Int.max]
        let descrs = ["|u1", "<f4", "<f8", ">f4", "u1"]
        var rng = SplitMix64(seed: 0x5A9E)
        var ok = 0, rejected = 0
        for _ in 0..<5000 {
            let shape = (0..<Int.random(in: 0...4, using: &rng)).map { _ in dims.randomElement(using: &rng)! }
            let text = Npy.header(descr: descrs.randomElement(using: &rng)!, shape: shape)
            let data = [UInt8](repeating: 0, count: [0, 4, 16, 64].randomElement(using: &rng)!)
            do {
                let b = try InputDecoder.decode(Npy.file(version: UInt8.random(in: 1...3, using: &rng), headerText: text, data: data), format: "npy", contentType: nil, url: "", features: 4)
                #expect(b.values.count == b.samples * 4)
                ok += 1
            } catch {
                rejected += 1
            }
        }
        print("npy shape property: \(ok + rejected) executions, \(ok) decoded, \(rejected) rejected")
        #expect(ok > 0 && rejected > 0)
    }

    @Test func jsonMutations() {
        let seeds = [
            bytes("[[0.1, 0.2, 0.3, 0.4], [1, 0, 0.5, 0.25], [1e-2, 2E-1, -0.0, 3]]"),
            bytes("[0.5, 1, 0, 0.25]"),
            bytes(#"[{"custom_id": "a\"b", "input": [1,2,3,4], "m": {"k": [null, true]}}, {"input": [0,0,0,0]}]"#),
        ]
        let t = MutationTests.run(seeds, format: "json", features: 4, iterations: MutationTests.iterations, seed: 0x15_0B1F)
        print("json mutations: \(t.ok + t.rejected) executions, \(t.ok) decoded, \(t.rejected) rejected")
        #expect(t.ok > 0 && t.rejected > 0)
    }

    @Test func ndjsonMutations() {
        let seeds = [
            bytes("{\"custom_id\": \"r1\", \"input\": [1,2,3,4]}\n[0.5,0.5,0.5,0.5]\n{\"input\": [4,3,2,1], \"custom_id\": null}\n"),
            bytes("[1,2,3,4]\r\n[5,6,7,8]\r\n"),
        ]
        let t = MutationTests.run(seeds, format: "ndjson", features: 4, iterations: MutationTests.iterations, seed: 0x2D_15_0B1F)
        print("ndjson mutations: \(t.ok + t.rejected) executions, \(t.ok) decoded, \(t.rejected) rejected")
        #expect(t.ok > 0 && t.rejected > 0)
    }

    @Test func detectionMutations() {
        // Format detection plus whichever decoder it picks, over all seeds mixed.
        let seeds = [
            Npy.uint8((0..<8).map { UInt8($0) }, shape: [2, 4]),
            bytes("[[1,2,3,4]]"),
            bytes("{\"input\": [1,2,3,4]}\n"),
        ]
        let t = MutationTests.run(seeds, format: nil, features: 4, iterations: MutationTests.iterations, seed: 0xDE7EC7)
        print("detect mutations: \(t.ok + t.rejected) executions, \(t.ok) decoded, \(t.rejected) rejected")
        #expect(t.ok > 0 && t.rejected > 0)
    }

    @Test func rawMutations() {
        var f: [UInt8] = []
        for x: Float in [1, 2, 3, 4, 0.5, 0.25, 0, 1] { withUnsafeBytes(of: x.bitPattern.littleEndian) { f += $0 } }
        var t = MutationTests.run([f], format: "raw:float32:4", features: 4, iterations: 2000, seed: 0x4A3)
        let u = MutationTests.run([[UInt8](repeating: 9, count: 16)], format: "raw:uint8:4x4", features: 4, iterations: 2000, seed: 0x4A4)
        t.ok += u.ok
        t.rejected += u.rejected
        print("raw mutations: \(t.ok + t.rejected) executions, \(t.ok) decoded, \(t.rejected) rejected")
        #expect(t.ok > 0 && t.rejected > 0)
    }
}
