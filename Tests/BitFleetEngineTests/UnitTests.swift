import Foundation
import Testing
import CEngineSupport
@testable import BitFleetEngine

@Suite("SHA-256")
struct SHA256Tests {
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
    ])
    func vectors(input: String, digest: String) {
        #expect(SHA256.hexDigest(Array(input.utf8)) == digest)
    }

    @Test func millionAs() {
        #expect(SHA256.hexDigest([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func incrementalEqualsOneShot() {
        var rng = SplitMix64(state: 42)
        let data = (0..<5000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for cut in [0, 1, 55, 56, 63, 64, 65, 127, 128, 4999, 5000] {
            var h = SHA256()
            h.update(data[0..<cut])
            h.update(data[cut...])
            #expect(SHA256.hex(h.finalize()) == SHA256.hexDigest(data), "split at \(cut)")
        }
        // lengths around the padding boundary against Python's hashlib
        let lengths = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 1000]
        let script = "import hashlib\nfor n in \(lengths): print(hashlib.sha256(bytes((i * 7 + 3) % 256 for i in range(n))).hexdigest())"
        guard let out = try? TestSupport.run(["python3", "-c", script]) else { return }
        let expected = out.split(separator: "\n").map(String.init)
        for (n, want) in zip(lengths, expected) {
            #expect(SHA256.hexDigest((0..<n).map { UInt8(($0 * 7 + 3) % 256) }) == want, "length \(n)")
        }
    }
}

@Suite("Input quantizer")
struct QuantizerTests {
    @Test func roundsHalfToEvenAndChecksRange() throws {
        #expect(try InputQuantizer.quantize([0, 1, 0.5, 1.5, 2.5, 254.5, 255, 0.2], scale: 1) == [0, 1, 0, 2, 2, 254, 255, 0])
        #expect(try InputQuantizer.quantize([0, 0.5, 1, -0.001], scale: 255) == [0, 128, 255, 0])
        #expect(try InputQuantizer.quantize([], scale: 1) == [])
    }

    /// The quantizer's fast path must equal `(x · scale).rounded(.toNearestOrEven)` for every value it accepts:
    /// near every half-way point of 0…255 (the Floats next to k + ½ for a few scales) and at random.
    @Test func theFastPathRoundsExactlyLikeRoundedToNearestOrEven() throws {
        var values: [Float] = []
        for scale: Float in [1, 255, 0.5, 100] {
            values.removeAll()
            for k in 0...255 {
                let half = (Float(k) + 0.5) / scale
                var x = half
                for _ in 0..<4 { x = x.nextDown }
                for _ in 0..<9 { values.append(x); x = x.nextUp }
                values.append(Float(k) / scale)
            }
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<20_000 { values.append(Float.random(in: 0...(255 / scale), using: &rng)) }
            let expected = values.map { x -> UInt8? in
                let r = (x * scale).rounded(.toNearestOrEven)
                return r >= 0 && r <= 255 ? UInt8(r) : nil
            }
            let inRange = values.indices.filter { expected[$0] != nil }
            let got = try InputQuantizer.quantize(inRange.map { values[$0] }, scale: scale)
            #expect(got == inRange.map { expected[$0]! }, "scale \(scale)")
        }
    }

    @Test func namesSampleAndFeature() {
        do {
            _ = try InputQuantizer.quantize([0, 0.5, 1, 0.2, 2, 0.1], scale: 255, features: 3)
            Issue.record("accepted 2 * 255")
        } catch let e as InputQuantizer.OutOfRange {
            #expect(e.index == 4 && e.sample == 1 && e.feature == 1)
            #expect(e.description.contains("sample 1 feature 1"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test(arguments: [Float.nan, .infinity, -.infinity, 255.6, -0.6, 1e30])
    func rejects(bad: Float) {
        do {
            _ = try InputQuantizer.quantize([1, 2, bad, 3], scale: 1)
            Issue.record("accepted \(bad)")
        } catch let e as InputQuantizer.OutOfRange {
            #expect(e.index == 2)
            #expect(e.description.contains("index 2"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

@Suite("Kernels")
struct KernelTests {
    /// Runs the C XNOR kernel on `path` over interleaved weights: raw popcounts, and the fused threshold. Where the
    /// AVX2 lookup kernel runs for this shape (`bf_xnor_lut_used`), its threshold bits too (`lookupBits`).
    static func xnor(_ path: XNORPath, _ a: [UInt64], n: Int, _ b: [UInt64], m: Int, words: Int,
                     maxPop: [Int32]? = nil) -> (out: [Int32], bits: [UInt64], lookupBits: [UInt64]?) {
        let blocks = (m + 7) / 8
        var w = [UInt64](repeating: 0, count: max(1, blocks * 8 * words))
        b.withUnsafeBufferPointer { bp in w.withUnsafeMutableBufferPointer { wp in
            bf_xnor_interleave(bp.baseAddress!, words, m, words, wp.baseAddress!)
        }}
        var out = [Int32](repeating: -1, count: n * m)
        a.withUnsafeBufferPointer { ap in w.withUnsafeBufferPointer { wp in out.withUnsafeMutableBufferPointer { op in
            bf_xnor_popcounts(path.code, ap.baseAddress!, words, n, wp.baseAddress!, m, words, op.baseAddress!, m)
        }}}
        let ldBits = (m + 63) / 64 + 1   // one spare word per row: the kernel must not write past ceil(m / 64)
        var bits = [UInt64](repeating: 0xDEAD_BEEF, count: n * ldBits)
        guard let mp = maxPop else { return (out, bits, nil) }
        a.withUnsafeBufferPointer { ap in w.withUnsafeBufferPointer { wp in
            mp.withUnsafeBufferPointer { mpp in bits.withUnsafeMutableBufferPointer { bp in
                bf_xnor_threshold(path.code, ap.baseAddress!, words, n, wp.baseAddress!, m, words, mpp.baseAddress!,
                                  bp.baseAddress!, ldBits)
            }}
        }}
        guard bf_xnor_lut_used(path.code, m, words) != 0 else { return (out, bits, nil) }
        var lut = [UInt8](repeating: 0xA5, count: bf_xnor_lut_bytes(m, words, 1))
        b.withUnsafeBufferPointer { bp in mp.withUnsafeBufferPointer { mpp in lut.withUnsafeMutableBufferPointer { lp in
            bf_xnor_lut_layout(bp.baseAddress!, words, m, words, mpp.baseAddress!, 1, lp.baseAddress!)
        }}}
        var lookupBits = [UInt64](repeating: 0xDEAD_BEEF, count: n * ldBits)
        a.withUnsafeBufferPointer { ap in w.withUnsafeBufferPointer { wp in lut.withUnsafeBufferPointer { lp in
            mp.withUnsafeBufferPointer { mpp in lookupBits.withUnsafeMutableBufferPointer { bp in
                bf_xnor_threshold_lut(path.code, ap.baseAddress!, words, n, wp.baseAddress!, lp.baseAddress!, m, words,
                                      mpp.baseAddress!, 1, bp.baseAddress!, ldBits, 0, nil, 0)
            }}
        }}}
        return (out, bits, lookupBits)
    }

    /// Two threshold levels (format v6) through `bf_xnor_threshold_lut` on every XNOR path this CPU supports, with
    /// and without the AVX2 lookup layout: each output row holds the first level's bits, then, `levelWords` words
    /// later, the second's; both against naive popcounts, the padding bits of each level's last word zero, the word
    /// after the row untouched. Shapes: rows not a multiple of 8, 32 or 64 (the second level then starts mid-panel's
    /// worth of words), 1 to 3 samples (the lookup kernel needs 2), 33 (a last group of 1), words across a chunk.
    @Test(arguments: [(2, 40, 3), (3, 192, 37), (33, 100, 5), (1, 64, 2), (5, 7, 1), (2, 256, 31)])
    func twoLevelThresholdsMatchNaive(n: Int, m: Int, words: Int) {
        var rng = SplitMix64(state: UInt64(7 + n * 1000 + m * 10 + words))
        let (a, b, expected) = Self.randomProduct(&rng, n: n, m: m, words: words)
        // level 0 near the median, level 1 a quarter lower (fewer bits fire); one row of each far outside a 16-bit
        // compare
        var maxPop: [Int32] = (0..<m).map { j in Int32(32 * words - 8 + j % 17) }
        maxPop += (0..<m).map { j in j == m - 1 ? -70_000 : Int32(24 * words - 4 + j % 9) }
        if m > 2 { maxPop[1] = 100_000 }
        let blocks = (m + 7) / 8
        var w = [UInt64](repeating: 0, count: max(1, blocks * 8 * words))
        b.withUnsafeBufferPointer { bp in w.withUnsafeMutableBufferPointer { wp in
            bf_xnor_interleave(bp.baseAddress!, words, m, words, wp.baseAddress!)
        }}
        let levelWords = (m + 63) / 64, ldBits = 2 * levelWords + 1
        for path in XNORPath.allCases where path.isSupported {
            var lut: [UInt8]? = nil
            if bf_xnor_lut_used(path.code, m, words) != 0 {
                var l = [UInt8](repeating: 0xA5, count: bf_xnor_lut_bytes(m, words, 2))
                b.withUnsafeBufferPointer { bp in maxPop.withUnsafeBufferPointer { mpp in l.withUnsafeMutableBufferPointer { lp in
                    bf_xnor_lut_layout(bp.baseAddress!, words, m, words, mpp.baseAddress!, 2, lp.baseAddress!)
                }}}
                lut = l
            }
            for useLookup in lut == nil ? [false] : [false, true] {
                var bits = [UInt64](repeating: 0xDEAD_BEEF, count: n * ldBits)
                let table = useLookup ? lut! : [0]
                a.withUnsafeBufferPointer { ap in w.withUnsafeBufferPointer { wp in table.withUnsafeBufferPointer { lp in
                    maxPop.withUnsafeBufferPointer { mpp in bits.withUnsafeMutableBufferPointer { bp in
                        bf_xnor_threshold_lut(path.code, ap.baseAddress!, words, n, wp.baseAddress!,
                                              useLookup ? lp.baseAddress! : nil, m, words, mpp.baseAddress!, 2,
                                              bp.baseAddress!, ldBits, levelWords, nil, 0)
                    }}
                }}}
                let what = "\(path)\(useLookup ? " lookup" : "")"
                var wrong = 0
                for i in 0..<n {
                    for level in 0..<2 {
                        let row = i * ldBits + level * levelWords
                        for j in 0..<m where ((bits[row + j / 64] >> UInt64(j % 64)) & 1 == 1) != (expected[i * m + j] <= maxPop[level * m + j]) {
                            wrong += 1
                        }
                        if m % 64 != 0 { #expect(bits[row + m / 64] >> UInt64(m % 64) == 0, "\(what) level \(level) padding bits") }
                    }
                    #expect(bits[i * ldBits + ldBits - 1] == 0xDEAD_BEEF, "\(what) wrote past the row")
                }
                #expect(wrong == 0, "\(what): \(wrong) two-level threshold bits wrong")
            }
        }
    }

    /// Random activations `a` (n rows) and weight rows `b` (m rows) of `words` words, and their popcounts of
    /// `a_i XOR b_j` counted bit by bit.
    static func randomProduct(_ rng: inout SplitMix64, n: Int, m: Int, words: Int) -> (a: [UInt64], b: [UInt64], expected: [Int32]) {
        let a = (0..<(n * words)).map { _ in rng.next() }
        let b = (0..<(m * words)).map { _ in rng.next() }
        var expected = [Int32](repeating: 0, count: n * m)
        for i in 0..<n {
            for j in 0..<m {
                var x = 0
                for w in 0..<words {
                    for bit in 0..<64 { x += Int(((a[i * words + w] ^ b[j * words + w]) >> UInt64(bit)) & 1) }
                }
                expected[i * m + j] = Int32(x)
            }
        }
        return (a, b, expected)
    }

    /// Threshold bits against naive popcounts: every bit right, the padding bits of the last word zero, the spare
    /// word after each row untouched. Returns how many bits were wrong.
    static func checkThreshold(_ bits: [UInt64], expected: [Int32], maxPop: [Int32], n: Int, m: Int,
                               _ what: String) -> Int {
        let ldBits = (m + 63) / 64 + 1
        var wrong = 0
        for i in 0..<n {
            for j in 0..<m where ((bits[i * ldBits + j / 64] >> UInt64(j % 64)) & 1 == 1) != (expected[i * m + j] <= maxPop[j]) {
                wrong += 1
            }
            if m % 64 != 0 { #expect(bits[i * ldBits + m / 64] >> UInt64(m % 64) == 0, "\(what) padding bits") }
            #expect(bits[i * ldBits + ldBits - 1] == 0xDEAD_BEEF, "\(what) wrote past the row")
        }
        #expect(wrong == 0, "\(what) threshold bits")
        return wrong
    }

    /// Naive bit-by-bit XOR popcount against every XNOR kernel path this CPU supports, over shapes that hit every
    /// tail: sample counts not a multiple of the 4-sample tiles, row counts not a multiple of 8 or 32, word counts
    /// 1…130 (the AVX2 path's byte counters fold every 31 words). From 4 samples and up to 128 words the AVX2 path
    /// splits both operands into nibbles, in groups of samples and chunks of row blocks: 131 samples of 64 words
    /// are three groups (the last odd), 67 × 100 rows of 49 words many chunks of 2 blocks with a partial last block.
    /// From 32 rows the AVX2 path's thresholds also run the lookup kernel: groups of 32 samples (33, 131: a last
    /// group of 1 or 3), tiles of 3 row vectors of 32 (700 rows: 22 vectors, the last of 28 rows), K in chunks of 31
    /// bytes (words 31: 8 chunks), up to 511 words. Some thresholds lie outside a 16-bit compare (below −1, above
    /// 32 767), as a foreign file's may.
    @Test(arguments: [(1, 1, 1), (2, 4, 1), (3, 5, 2), (7, 9, 3), (2, 700, 4), (5, 3, 70), (64, 33, 5), (4, 8, 8),
                      (3, 6, 125), (2, 5, 130), (9, 40, 16), (5, 257, 17), (131, 17, 64), (67, 100, 49),
                      (6, 9, 129), (33, 96, 31), (131, 64, 2), (4, 45, 511), (3, 32, 512)])
    func gemmMatchesNaive(n: Int, m: Int, words: Int) {
        var rng = SplitMix64(state: UInt64(n * 1000 + m * 10 + words))
        let (a, b, expected) = Self.randomProduct(&rng, n: n, m: m, words: words)
        // thresholds around the median popcount, so about half the bits fire; every 13th far below 0 (no bit
        // fires), every 11th far above any count (every bit fires)
        var maxPop: [Int32] = []
        for j in 0..<m {
            let jitter = Int(rng.next() % 17)
            maxPop.append(j % 13 == 12 ? -70_000 : j % 11 == 10 ? 100_000 : Int32(32 * words - 8 + jitter))
        }
        for path in XNORPath.allCases where path.isSupported {
            let (out, bits, lookupBits) = Self.xnor(path, a, n: n, b, m: m, words: words, maxPop: maxPop)
            #expect(out == expected, "\(path) popcounts")
            _ = Self.checkThreshold(bits, expected: expected, maxPop: maxPop, n: n, m: m, "\(path)")
            if let lookupBits {
                _ = Self.checkThreshold(lookupBits, expected: expected, maxPop: maxPop, n: n, m: m, "\(path) lookup")
            }
            #expect((lookupBits != nil) == (path == .avx2 && m >= 32 && words <= 511), "\(path): lookup kernel used")
        }
    }

    /// The lookup kernel's 16-bit counters at their largest: every bit differing over 511 words (32 704 per row),
    /// thresholds one below, at and above the count.
    @Test func lookupKernelSaturated() {
        let n = 3, m = 40, words = 511, k = Int32(64 * words)
        let a = [UInt64](repeating: ~0, count: n * words), b = [UInt64](repeating: 0, count: m * words)
        let maxPop = (0..<m).map { j in k - 1 + Int32(j % 3) }
        let expected = [Int32](repeating: k, count: n * m)
        for path in XNORPath.allCases where path.isSupported {
            let (_, bits, lookupBits) = Self.xnor(path, a, n: n, b, m: m, words: words, maxPop: maxPop)
            _ = Self.checkThreshold(bits, expected: expected, maxPop: maxPop, n: n, m: m, "\(path)")
            if let lookupBits {
                _ = Self.checkThreshold(lookupBits, expected: expected, maxPop: maxPop, n: n, m: m, "\(path) lookup")
            }
        }
    }

    /// Every bit differing is the worst case for the AVX2 byte-lane counters (8 per byte per word, 31 words).
    @Test(arguments: [4, 31, 32, 123, 124, 128, 260])
    func saturatedPopcounts(words: Int) {
        let n = 5, m = 12
        let a = [UInt64](repeating: ~0, count: n * words), b = [UInt64](repeating: 0, count: m * words)
        for path in XNORPath.allCases where path.isSupported {
            let (out, _, _) = Self.xnor(path, a, n: n, b, m: m, words: words)
            #expect(out == [Int32](repeating: Int32(64 * words), count: n * m), "\(path)")
        }
    }

    /// The int8 stem kernels (VNNI, AMX) against a naive sum, at shapes with partial tiles (samples not a multiple
    /// of 16 or 32, rows not a multiple of 16 or 32, inputs not a multiple of 64), and at the largest values.
    @Test(arguments: [(1, 16, 64), (3, 20, 100), (17, 33, 784), (40, 64, 130), (33, 48, 65)])
    func int8StemMatchesNaive(n: Int, rows: Int, features: Int) {
        var rng = SplitMix64(state: UInt64(n * 7 + rows * 13 + features))
        let words = (features + 63) / 64
        var w = [UInt64](repeating: 0, count: rows * words)
        for j in 0..<rows {
            for k in 0..<features where rng.next() & 1 == 1 { w[j * words + k / 64] |= 1 << UInt64(k % 64) }
        }
        let x = (0..<(n * features)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let shift = 4
        var expected = [Int32](repeating: 0, count: n * rows)
        for i in 0..<n {
            for j in 0..<rows {
                var s = 0
                for k in 0..<features where (w[j * words + k / 64] >> UInt64(k % 64)) & 1 == 1 { s += Int(x[i * features + k] >> 4) }
                expected[i * rows + j] = Int32(s)
            }
        }
        let kpad = (features + 63) / 64 * 64, blocks = (rows + 15) / 16, ld = blocks * 16
        let padded = (n + 31) / 32 * 32
        var packed = [UInt8](repeating: 0, count: bf_stem_int8_bytes(rows, features))
        w.withUnsafeBufferPointer { wp in packed.withUnsafeMutableBufferPointer { pp in
            bf_stem_int8_pack(wp.baseAddress!, rows, features, pp.baseAddress!)
        }}
        for kernel in [StemKernel.vnni, .amx] where kernel.isSupportedByCPU {
            var q = [UInt8](repeating: 0, count: padded * kpad)
            var sumQ = [Int](repeating: 0, count: n)
            var acc = [Int32](repeating: -1, count: padded * ld)
            x.withUnsafeBufferPointer { xp in
                bf_stem_int8_activations(xp.baseAddress!, n, features, Int32(shift), &q, &sumQ)
            }
            packed.withUnsafeBufferPointer { pp in
                bf_stem_int8(kernel.int8Code!, q, n, features, pp.baseAddress!, blocks, &acc, ld)
            }
            var got = [Int32](repeating: 0, count: n * rows)
            for i in 0..<n { for j in 0..<rows { got[i * rows + j] = acc[i * ld + j] } }
            #expect(got == expected, "\(kernel)")
            #expect(sumQ == (0..<n).map { i in (0..<features).reduce(0) { $0 + Int(x[i * features + $1] >> 4) } })
        }
    }

    /// The stem threshold (`2·acc − sumQ ≥ t`, bits packed per 64 channels) on every path this CPU has against a
    /// plain loop: widths around the 8- and 64-channel steps, row strides wider than the words, values at the
    /// boundary (equal, one below) and at the extremes of 784 inputs × 255.
    @Test func stemThresholdPathsMatchPlainLoop() {
        let paths = [(BF_THRESHOLD_PORTABLE, "portable"), (BF_THRESHOLD_AVX2, "avx2"), (BF_THRESHOLD_AVX512, "avx512")]
        let run = paths.filter { bf_stem_threshold_path_supported(Int32($0.0)) != 0 }
        print("stem threshold paths run on this CPU: \(run.map(\.1)); not run (the CPU lacks them): "
              + "\(paths.filter { bf_stem_threshold_path_supported(Int32($0.0)) == 0 }.map(\.1))")
        #expect(run.contains { $0.1 == "avx2" } || !CPUFeatures.running.avx2)
        var rng = SplitMix64(state: 11)
        let limit = 784 * 255
        for S in [1, 7, 8, 9, 63, 64, 65, 100, 512, 513] {
            let n = 5, ldacc = S + 3, words = (S + 63) / 64, ldh = words + 1
            let sumQ = (0..<n).map { _ in Int(rng.next() % UInt64(limit + 1)) }
            let t = (0..<S).map { _ in Int32(Int(rng.next() % UInt64(2 * limit + 1)) - limit) }
            var acc = [Int32](repeating: 0, count: n * ldacc)
            for i in 0..<n {
                for j in 0..<S {
                    // a third exactly at the threshold, a third one below it, a third anywhere in range
                    let exact = (Int(t[j]) + sumQ[i])
                    switch rng.next() % 3 {
                    case 0 where exact % 2 == 0: acc[i * ldacc + j] = Int32(exact / 2)
                    case 1 where exact % 2 == 0: acc[i * ldacc + j] = Int32(exact / 2 - 1)
                    default: acc[i * ldacc + j] = Int32(Int(rng.next() % UInt64(2 * limit + 1)) - limit)
                    }
                }
            }
            var want = [UInt64](repeating: 0xDEAD, count: n * ldh)
            for i in 0..<n {
                for w in 0..<words { want[i * ldh + w] = 0 }
                for j in 0..<S where 2 * Int(acc[i * ldacc + j]) - sumQ[i] >= Int(t[j]) {
                    want[i * ldh + j / 64] |= 1 << UInt64(j % 64)
                }
            }
            for (path, name) in run {
                var got = [UInt64](repeating: 0xDEAD, count: n * ldh)
                let ok = bf_stem_threshold_with(Int32(path), acc, ldacc, n, S, sumQ, t, &got, ldh)
                #expect(ok == 1 && got == want, "\(name): S \(S)")
            }
        }
    }

    /// The direct conv kernels (`conv_direct.c`) against a plain loop of the format's rule and OR-pooling, on every
    /// path this CPU has: odd shapes, kernels up to 15 (4 groups per row), 1 to 64 channels (1 to 8 blocks), 8 and 4 input bits,
    /// thresholds taken from the conv's own values (so `≥` is tested at equality), and the int16 sums' extremes
    /// (k = 15 on the 4-tap groups and k = 11 on AVX2's 2-tap groups, every q = 255, every weight +1 or −1).
    @Test func directConvAgainstPlainLoop() throws {
        let paths = [(Int32(BF_CONV_AVX2), "avx2"), (Int32(BF_CONV_AVX512BW), "avx512bw"), (Int32(BF_CONV_VNNI), "vnni")]
        let run = paths.filter { bf_conv_direct_supported($0.0) != 0 }
        print("direct conv paths run on this CPU: \(run.map(\.1)); not run (the CPU lacks them): "
              + "\(paths.filter { bf_conv_direct_supported($0.0) == 0 }.map(\.1))")
        try #require(!run.isEmpty || !CPUFeatures.running.avx2, "AVX2 is here but its direct conv path is not")
        // (H, W, k, stride, pad, channels, shift, weights: 0 random, 1 all +1, 2 all −1, pixels: 0 random, 1 all 255)
        let shapes: [(Int, Int, Int, Int, Int, Int, Int32, Int, Int)] = [
            (28, 28, 5, 2, 2, 32, 4, 0, 0), (28, 28, 5, 1, 2, 32, 0, 0, 0), (23, 19, 13, 2, 6, 40, 4, 0, 0),
            (10, 13, 3, 1, 1, 7, 0, 0, 0), (16, 16, 15, 1, 7, 64, 0, 0, 0), (6, 6, 1, 1, 0, 1, 4, 0, 0),
            (9, 11, 8, 3, 0, 17, 0, 0, 0), (20, 17, 3, 1, 0, 64, 5, 0, 0),
            (15, 15, 15, 1, 0, 33, 0, 1, 1), (17, 16, 15, 1, 1, 9, 0, 2, 1), (20, 32, 4, 2, 1, 32, 3, 0, 0),
            (28, 28, 4, 2, 1, 48, 0, 0, 0), (19, 21, 5, 2, 2, 56, 0, 0, 0),   // AVX2: one pass of 6 blocks; 4 + 3
            // AVX2's 2-tap groups (k ≤ 11): 16 channels per block, blocks packed in pairs and a lone last block
            // (1, 3 blocks), every weight ±1 at k = 11 with q = 255 (|sum| = 30 855, the int16 extreme), and k = 12,
            // the first kernel size on the 4-tap layout
            (28, 28, 4, 2, 1, 64, 0, 0, 0), (14, 13, 2, 1, 0, 16, 0, 0, 0), (12, 15, 3, 2, 1, 47, 1, 0, 0),
            (11, 11, 11, 1, 0, 64, 0, 1, 1), (13, 12, 11, 1, 1, 23, 0, 2, 1), (14, 14, 12, 1, 0, 40, 0, 1, 1),
            (16, 15, 7, 2, 3, 5, 2, 0, 0),
            // the widths compiled as constants (3, 4, 5) with 1 to 4 blocks of 16 channels, odd position counts (a
            // short last step in every row)
            (28, 28, 4, 2, 1, 16, 0, 0, 0), (13, 17, 5, 1, 2, 9, 0, 0, 0), (18, 18, 5, 2, 1, 48, 1, 0, 0),
            (11, 14, 3, 2, 0, 30, 0, 0, 0), (15, 13, 4, 1, 0, 61, 0, 2, 1), (9, 10, 3, 1, 1, 20, 0, 1, 1),
        ]
        // 2-bit filters (format v5, weights −3 … 3): the model's shape, the int16 extremes (every q = 255, every
        // weight 3 or −3) at k = 6 (AVX2's 2-tap groups: 27 540) and k = 8 (the 4-tap groups: 24 480), k = 7 (AVX2's
        // first 2-bit kernel size on the 4-tap layout), and k = 9, which only VNNI's int32 sums take
        let shapes2: [(Int, Int, Int, Int, Int, Int, Int32, Int, Int)] = [
            (28, 28, 4, 2, 1, 48, 0, 0, 0), (28, 28, 4, 2, 1, 64, 4, 0, 0), (13, 17, 5, 1, 2, 9, 0, 0, 0),
            (12, 12, 6, 1, 0, 33, 0, 1, 1), (13, 12, 6, 1, 1, 20, 0, 2, 1), (16, 15, 7, 2, 3, 5, 2, 0, 0),
            (14, 14, 8, 1, 0, 40, 0, 1, 1), (15, 16, 8, 1, 1, 17, 0, 2, 1), (18, 18, 9, 1, 0, 24, 0, 0, 0),
            (10, 13, 3, 1, 1, 7, 0, 0, 0),
        ]
        var rng = SplitMix64(state: 77)
        for ((H, W, k, stride, pad, C, shift, wkind, xkind), bits) in shapes.map({ ($0, 1) }) + shapes2.map({ ($0, 2) }) {
            let Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, kk = k * k
            let words = (kk * (bits == 2 ? 3 : 1) + 63) / 64
            let (wbits, x, a) = plainConv(H, W, k, stride, pad, C, shift, wkind, xkind, &rng, bits: bits)
            if xkind == 1 && shift == 0 && bits == 2 {
                #expect(a.map(abs).max()! == kk * 255 * 3, "2-bit k\(k): the extreme sum")
            }
            // each channel's threshold: its value at a pseudo-random position (ties at that position)
            let thresholds: [Int32] = (0..<C).map { c in Int32(a[Int(rng.next() % UInt64(Ho * Wo)) * C + c]) }
            var expected = [UInt64](repeating: 0, count: Ho * Wo)
            for r in 0..<(Ho * Wo) { for c in 0..<C where a[r * C + c] >= Int(thresholds[c]) { expected[r] |= 1 << UInt64(c) } }
            let work = UnsafeMutableRawPointer.allocate(byteCount: bf_conv_work_bytes(H, W, k, pad, Wo), alignment: 64)
            defer { work.deallocate() }
            for (code, name) in run {
                let fits = bf_conv_direct_fits(code, k, bits) == 1
                #expect(fits == (bits == 1 || k <= 8 || code == Int32(BF_CONV_VNNI)), "\(name): k\(k) \(bits)-bit fits")
                let packed = UnsafeMutableRawPointer.allocate(byteCount: bf_conv_direct_bytes(code, C, k, bits), alignment: 64)
                defer { packed.deallocate() }
                let p8 = packed.assumingMemoryBound(to: UInt8.self)
                wbits.withUnsafeBufferPointer { w in thresholds.withUnsafeBufferPointer { t in
                    bf_conv_direct_pack(code, w.baseAddress!, words, bits, t.baseAddress!, C, k, p8)
                }}
                // pool 1: every position's word; pools 2 and 3: the OR over each window, trailing positions dropped
                for pool in [1, 2, 3] where pool <= min(Ho, Wo) {
                    let Hq = Ho / pool, Wq = Wo / pool
                    var want = [UInt64](repeating: 0, count: Hq * Wq)
                    for py in 0..<Hq { for px in 0..<Wq { for dy in 0..<pool { for dx in 0..<pool {
                        want[py * Wq + px] |= expected[(py * pool + dy) * Wo + px * pool + dx]
                    }}}}
                    var got = [UInt64](repeating: 0xDEAD, count: Hq * Wq)
                    let ok = x.withUnsafeBufferPointer { xp in
                        bf_conv_direct(code, xp.baseAddress!, H, W, k, bits, stride, pad, Ho, Wo, pool, shift, p8, C,
                                       work.assumingMemoryBound(to: UInt8.self), &got)
                    }
                    let label = "\(name): \(H)x\(W) k\(k) \(bits)-bit s\(stride) p\(pad) C\(C) shift \(shift) pool \(pool)"
                    if fits {
                        #expect(ok == 1 && got == want, "\(label)")
                    } else {   // refused (the int16 sums could overflow), nothing written
                        #expect(ok == 0 && got.allSatisfy { $0 == 0xDEAD }, "\(label): should be refused")
                    }
                }
            }
        }
        // out of the format's limits: refused, nothing written
        if let (code, _) = run.first {
            var bits = [UInt64](repeating: 7, count: 4)
            let x = [UInt8](repeating: 1, count: 4)
            let packed = [UInt8](repeating: 0, count: 64)
            var work = [UInt8](repeating: 0, count: 256)
            #expect(bf_conv_direct(code, x, 2, 2, 1, 1, 1, 0, 2, 2, 1, 0, packed, 65, &work, &bits) == 0)
            #expect(bf_conv_direct(code, x, 2, 2, 1, 1, 1, 0, 2, 2, 0, 0, packed, 8, &work, &bits) == 0)
            #expect(bf_conv_direct(code, x, 2, 2, 1, 3, 1, 0, 2, 2, 1, 0, packed, 8, &work, &bits) == 0)   // 3 bits
            #expect(bits == [7, 7, 7, 7])
        }
    }

    /// The windows the stem kernels read (`bf_conv_patches`, and the int8 kernels' `bf_conv_activations`) against a
    /// plain loop: each window once, or three times back to back (a 2-bit conv's rows, format v5), the 8-byte row
    /// copies (k ≤ 8) and the wider ones, padding, strides; the int8 rows shifted, and their sums.
    @Test func convWindowsAgainstPlainLoop() {
        var rng = SplitMix64(state: 79)
        // (H, W, k, stride, pad, shift)
        for (H, W, k, stride, pad, shift) in [(28, 28, 4, 2, 1, 0), (10, 13, 3, 1, 1, 4), (18, 18, 9, 1, 0, 4),
                                              (7, 9, 5, 2, 2, 1), (6, 6, 1, 1, 0, 7)] {
            let Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, kk = k * k
            let x: [UInt8] = (0..<(H * W)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            func pixel(_ y: Int, _ xx: Int) -> UInt8 { y < 0 || y >= H || xx < 0 || xx >= W ? 0 : x[y * W + xx] }
            var work = [UInt8](repeating: 0, count: bf_conv_work_bytes(H, W, k, pad, Wo))
            for reps in [1, 3] {
                let row = reps * kk
                var want = [UInt8](repeating: 0, count: Ho * Wo * row)
                for oy in 0..<Ho { for ox in 0..<Wo { for j in 0..<reps { for ky in 0..<k { for kx in 0..<k {
                    want[(oy * Wo + ox) * row + j * kk + ky * k + kx] = pixel(oy * stride + ky - pad, ox * stride + kx - pad)
                }}}}}
                var patches = [UInt8](repeating: 0xEE, count: Ho * Wo * row + 8)
                bf_conv_patches(x, H, W, k, stride, pad, Ho, Wo, reps, &work, &patches)
                #expect(Array(patches.prefix(Ho * Wo * row)) == want, "patches \(H)x\(W) k\(k) s\(stride) p\(pad) reps \(reps)")
                let kpad = (row + 63) / 64 * 64
                var q = [UInt8](repeating: 0xEE, count: Ho * Wo * kpad + 8)
                var sumQ = [Int](repeating: -1, count: Ho * Wo)
                bf_conv_activations(x, H, W, k, stride, pad, Ho, Wo, reps, Int32(shift), &work, &q, kpad, &sumQ)
                var ok = true
                for r in 0..<(Ho * Wo) {
                    let w = want[(r * row)..<((r + 1) * row)].map { $0 >> UInt8(shift) }
                    ok = ok && Array(q[(r * kpad)..<(r * kpad + row)]) == w && sumQ[r] == w.reduce(0) { $0 + Int($1) }
                }
                #expect(ok, "activations \(H)x\(W) k\(k) s\(stride) p\(pad) shift \(shift) reps \(reps)")
            }
        }
    }

    /// `bf_conv_pack` (the direct conv's feature layout) against a bit-by-bit loop: every channel count, cell counts
    /// that end inside and on word boundaries, garbage bits above the channels ignored, the tail words zeroed.
    @Test func convPackMatchesBitLoop() {
        var rng = SplitMix64(state: 5)
        for channels in 1...64 {
            for count in [1, 2, 3, 7, 49, 64] {
                let cells = (0..<count).map { _ in rng.next() }
                let F = count * channels, wf = (F + 63) / 64 + 1   // one spare word, which must come back zero
                var want = [UInt64](repeating: 0, count: wf)
                for i in 0..<count { for c in 0..<channels where (cells[i] >> UInt64(c)) & 1 == 1 {
                    let j = i * channels + c
                    want[j / 64] |= 1 << UInt64(j % 64)
                }}
                var got = [UInt64](repeating: ~0, count: wf)
                bf_conv_pack(cells, count, channels, &got, wf)
                #expect(got == want, "channels \(channels), cells \(count)")
            }
        }
    }

    /// The table conv kernel (`conv_table.c`) against a plain loop of the format's rule and OR-pooling, on the shapes
    /// it takes (stride 2, 2 × 2 pooling, k ≤ 4 with padding below k, up to 8 × 8 cells, 1 to 64 channels: lone
    /// channels in the last group of 4, one or two halves of the channel bytes), at its sums' extremes (every
    /// q = 255 and every weight +1 or −1: ±4 080), with thresholds taken from the conv's own values (`≥` at equality),
    /// and the shapes it refuses (nothing written).
    @Test func tableConvAgainstPlainLoop() throws {
        try #require(bf_conv_direct_supported(Int32(BF_CONV_AVX2)) != 0 || !CPUFeatures.running.avx2)
        guard CPUFeatures.running.avx2 else {
            print("table conv kernel not run on this CPU (it lacks AVX2)")
            return
        }
        // (H, W, k, pad, channels, shift, weights: 0 random, 1 all +1, 2 all −1, pixels: 0 random, 1 all 255)
        let shapes: [(Int, Int, Int, Int, Int, Int32, Int, Int)] = [
            (28, 28, 4, 1, 64, 0, 0, 0), (28, 28, 4, 1, 32, 0, 0, 0), (28, 28, 4, 1, 48, 3, 0, 0),
            (28, 28, 4, 0, 63, 0, 0, 0), (28, 28, 3, 1, 17, 1, 0, 0), (28, 28, 4, 2, 5, 0, 0, 0),
            (32, 32, 4, 1, 33, 0, 0, 0), (31, 30, 4, 3, 1, 4, 0, 0), (10, 13, 3, 1, 7, 0, 0, 0),
            (6, 6, 2, 1, 31, 0, 0, 0), (16, 16, 1, 0, 64, 7, 0, 0), (5, 7, 2, 0, 4, 0, 0, 0),
            (28, 28, 4, 1, 64, 0, 1, 1), (28, 28, 4, 1, 64, 0, 2, 1), (30, 29, 4, 2, 40, 0, 1, 1),
        ]
        // 2-bit filters (format v5): the model's shape, lone channels, k < 4, and the extremes (±12 240)
        let shapes2: [(Int, Int, Int, Int, Int, Int32, Int, Int)] = [
            (28, 28, 4, 1, 48, 0, 0, 0), (28, 28, 4, 1, 64, 2, 0, 0), (28, 28, 3, 1, 17, 1, 0, 0),
            (10, 13, 3, 1, 7, 0, 0, 0), (6, 6, 2, 1, 31, 0, 0, 0), (28, 28, 4, 1, 64, 0, 1, 1),
            (30, 29, 4, 2, 40, 0, 2, 1),
        ]
        var rng = SplitMix64(state: 78)
        for ((H, W, k, pad, C, shift, wkind, xkind), bits) in shapes.map({ ($0, 1) }) + shapes2.map({ ($0, 2) }) {
            let Ho = (H + 2 * pad - k) / 2 + 1, Wo = (W + 2 * pad - k) / 2 + 1, Hq = Ho / 2, Wq = Wo / 2
            let name = "\(H)x\(W) k\(k) \(bits)-bit p\(pad) C\(C) shift \(shift)"
            try #require(bf_conv_table_fits(H, W, k, 2, pad, 2, Ho, Wo, C) == 1, "\(name) should fit")
            let words = (k * k * (bits == 2 ? 3 : 1) + 63) / 64
            let (wbits, x, a) = plainConv(H, W, k, 2, pad, C, shift, wkind, xkind, &rng, bits: bits)
            if xkind == 1 && shift == 0 {
                // the extremes: every tap 255 inside the image, all signs equal
                let extreme = a.map(abs).max()!
                #expect(extreme == k * k * 255 * (bits == 2 ? 3 : 1), "\(name): largest |sum| \(extreme)")
            }
            let thresholds: [Int32] = (0..<C).map { c in Int32(a[Int(rng.next() % UInt64(Ho * Wo)) * C + c]) }
            var want = [UInt64](repeating: 0, count: Hq * Wq)
            for py in 0..<Hq { for px in 0..<Wq { for dy in 0..<2 { for dx in 0..<2 { for c in 0..<C
                where a[((py * 2 + dy) * Wo + px * 2 + dx) * C + c] >= Int(thresholds[c]) {
                want[py * Wq + px] |= 1 << UInt64(c)
            }}}}}
            let packed = UnsafeMutableRawPointer.allocate(byteCount: bf_conv_table_bytes(C, bits), alignment: 64)
            defer { packed.deallocate() }
            let p8 = packed.assumingMemoryBound(to: UInt8.self)
            wbits.withUnsafeBufferPointer { w in thresholds.withUnsafeBufferPointer { t in
                bf_conv_table_pack(w.baseAddress!, words, bits, t.baseAddress!, C, k, p8)
            }}
            var got = [UInt64](repeating: 0xDEAD, count: Hq * Wq + 1)
            let ok = bf_conv_table(x, H, W, k, bits, 2, pad, Ho, Wo, 2, shift, p8, C, &got)
            #expect(ok == 1 && Array(got.prefix(Hq * Wq)) == want && got.last == 0xDEAD, "\(name)")
            if wkind == 0 && Hq * Wq >= 4 && C >= 8 {
                let all: UInt64 = C == 64 ? ~0 : (1 << UInt64(C)) - 1
                #expect(want.contains { $0 != 0 } && want.contains { $0 != all }, "\(name): the bits should not all be equal")
            }
        }
        // shapes it does not take: refused, nothing written (stride 1, pool 3, k 5, padding k, 9 cells per row,
        // 65 channels, a Wo that is not the image's)
        let refused: [(Int, Int, Int, Int, Int, Int, Int, Int, Int)] = [
            (28, 28, 4, 1, 1, 2, 27, 27, 8), (28, 28, 4, 2, 1, 3, 14, 14, 8), (28, 28, 5, 2, 2, 2, 14, 14, 8),
            (28, 28, 3, 2, 3, 2, 16, 16, 8), (36, 36, 4, 2, 1, 2, 18, 18, 8), (28, 28, 4, 2, 1, 2, 14, 14, 65),
            (28, 28, 4, 2, 1, 2, 14, 13, 8),
        ]
        let x = [UInt8](repeating: 9, count: 36 * 36)
        let packed = [UInt8](repeating: 0, count: bf_conv_table_bytes(64, 2))
        for (H, W, k, stride, pad, pool, Ho, Wo, C) in refused {
            #expect(bf_conv_table_fits(H, W, k, stride, pad, pool, Ho, Wo, C) == 0)
            var bits = [UInt64](repeating: 7, count: 81)
            #expect(bf_conv_table(x, H, W, k, 1, stride, pad, Ho, Wo, pool, 0, packed, C, &bits) == 0)
            #expect(bits.allSatisfy { $0 == 7 })
        }
        var bits = [UInt64](repeating: 7, count: 81)   // 3 weight bits: refused
        #expect(bf_conv_table(x, 28, 28, 4, 3, 2, 1, 14, 14, 2, 0, packed, 8, &bits) == 0 && bits.allSatisfy { $0 == 7 })
    }

    @Test func kernelSelectionFromEnvironment() throws {
        #expect(try KernelSelection.fromEnvironment([:]) == KernelSelection())
        let s = try KernelSelection.fromEnvironment(["BITFLEET_KERNEL_PATH": "avx2", "BITFLEET_STEM_KERNEL": "amx"])
        #expect(s.xnor == .avx2 && s.stem == .amx && s.conv == .automatic)
        #expect(try KernelSelection.fromEnvironment(["BITFLEET_CONV_KERNEL": "direct"]).conv == .direct)
        #expect(try KernelSelection.fromEnvironment(["BITFLEET_CONV_KERNEL": "table"]).conv == .table)
        do {
            _ = try KernelSelection.fromEnvironment(["BITFLEET_CONV_KERNEL": "fft"])
            Issue.record("accepted an unknown conv kernel")
        } catch {
            #expect(error.message.contains("fft") && error.message.contains("automatic, direct, table"))
        }
        do {
            _ = try KernelSelection.fromEnvironment(["BITFLEET_KERNEL_PATH": "avx1024"])
            Issue.record("accepted an unknown path")
        } catch {
            #expect(error.message.contains("avx1024") && error.message.contains("portable, avx2, avx512-vpopcntdq"))
        }
        #expect(throws: ModelError.self) { try KernelSelection.fromEnvironment(["BITFLEET_STEM_KERNEL": "fast"]) }
    }

    /// The lookup stem kernel's largest row sum: every input 255 (q = 15), every weight +1, at its feature limit.
    @Test func lookupStemAtItsLimit() throws {
        try #require(CPUFeatures.running.avx2, "the lookup kernel needs AVX2")
        let D = StemLookupWeights.maxFeatures, S = 70
        let rowBytes = (D + 7) / 8
        let bits = [UInt8](repeating: 0xFF, count: S * rowBytes)
        var owned: [UnsafeMutableRawPointer] = []
        defer { for p in owned { p.deallocate() } }
        let stem = bits.withUnsafeBytes { PackedMatrix.load(source: $0.baseAddress!, rows: S, bits: D, owned: &owned) }
        let lookup = StemLookupWeights(stem: stem, owned: &owned)
        let n = 3, ld = lookup.blocks * 16
        let x = [UInt8](repeating: 255, count: n * D)
        for wide in [false, true] where !wide || StemKernel.lookupAVX512.isSupportedByCPU {
            var tables = [UInt8](repeating: 0, count: n * lookup.tableBytes)
            var sumQ = [Int](repeating: 0, count: n)
            var acc = [Int32](repeating: -1, count: n * ld)
            x.withUnsafeBufferPointer { xp in
                lookup.accumulate(x: xp.baseAddress!, n: n, features: D, shift: 4, tables: &tables, sumQ: &sumQ,
                                  acc: &acc, ld: ld, wide: wide)
            }
            #expect(sumQ == [Int](repeating: 15 * D, count: n))
            for i in 0..<n { #expect(Array(acc[(i * ld)..<(i * ld + S)]) == [Int32](repeating: Int32(15 * D), count: S), "wide \(wide)") }
        }
        #expect(15 * D <= Int(UInt16.max) && 15 * (D + 8) > Int(UInt16.max))
    }

    @Test func maxPopcountIsFloorDivision() {
        for k in [1, 2, 7, 64, 65] {
            for t in Int32(-70)...Int32(70) {
                let mp = Int(maxPopcount(bits: k, threshold: t))
                for pop in 0...k {
                    #expect((k - 2 * pop >= Int(t)) == (pop <= mp), "k \(k) t \(t) pop \(pop)")
                }
            }
        }
    }

    @Test func benchmarkRuns() {
        let r = KernelBenchmark.run(m: 64, n: 64, k: 256, threads: 2, minSeconds: 0.01)
        #expect(r.macs == 64 * 64 * 256)
        #expect(r.macsPerSecond > 0)
        for path in XNORPath.allCases where path.isSupported {
            #expect(r.checksum == KernelBenchmark.run(m: 64, n: 64, k: 256, threads: 1, minSeconds: 0.01, path: path).checksum)
        }
    }

    @Test func clockIsPlausible() {
        let c = CPUClock.measure(seconds: 0.05)
        // any server core of the last 20 years runs between 0.8 and 6 GHz (a folded add chain read 10–12 GHz)
        #expect(c.hertz > 0.8e9 && c.hertz < 6.5e9, "\(c.hertz) Hz from \(c.source)")
    }
}

@Suite("Router top-k")
struct TopKTests {
    /// The rule the kernels implement: strictly better score; NaN ranks below everything.
    static func ranksAbove(_ a: Float, _ b: Float) -> Bool {
        if a.isNaN { return false }
        if b.isNaN { return true }
        return a > b
    }

    /// `bf_select_topk` (AVX-512 or AVX2 one vector pair up to 16 scores, two-pass bound or prefilter where the CPU has it, scalar
    /// otherwise and for the tail; it also ranks the classes of every sample)
    /// against a stable sort: larger first, ties by lower index, NaN last; many lengths around the 16-wide blocks,
    /// heavy ties, NaNs, infinities and signed zeros.
    @Test func selectsTheSameExpertsAsAStableSort() {
        var rng = SplitMix64(state: 77)
        for trial in 0..<3200 {
            let n = [1, 2, 3, 5, 10, 15, 16, 17, 31, 32, 33, 47, 64, 100, 456, 1000][trial % 16]
            // k up to 20: the two-pass bound covers k ≤ 16 without NaN, the one-pass scan the rest
            let k = min(n, 1 + Int(rng.next() % (trial % 3 == 0 ? 20 : 8)))
            let palette: [Float] = [0, -0.0, 1, -1, 0.5, .infinity, -.infinity, .nan, 2.5, 2.5]
            var r = [Float](repeating: 0, count: n)
            for i in 0..<n {
                switch trial % 4 {
                case 0: r[i] = Float(Int(rng.next() % 2001) - 1000) / 100          // random
                case 1: r[i] = palette[Int(rng.next() % UInt64(palette.count))]     // ties, NaN, ±inf, ±0
                case 2: r[i] = Float(i % 7)                                         // rising runs
                default: r[i] = rng.next() % 50 == 0 ? .nan : Float(n - i)          // descending, a few NaN
                }
            }
            let expected = (0..<n).sorted { a, b in
                if Self.ranksAbove(r[a], r[b]) { return true }
                if Self.ranksAbove(r[b], r[a]) { return false }
                if r[a].isNaN != r[b].isNaN { return !r[a].isNaN }
                return a < b
            }.prefix(k).map { Int32($0) }
            var out = [Int32](repeating: -1, count: k)
            bf_select_topk(r, n, k, &out)
            #expect(out == Array(expected), "trial \(trial) n \(n) k \(k) scores \(r.prefix(40))")
            if out != Array(expected) { break }
        }
    }

    /// `bf_router_select` (scores and top-k fused on AVX-512) gives the bit-identical scores of `bf_router_scores` and
    /// the selection of `bf_select_topk` on them: expert counts around the 16-wide blocks, k up to 20, negative and
    /// zero scales, ties (equal popcounts and scales), and infinite scales that make NaN (∞ × 0) and ±∞ scores.
    @Test func fusedRouterSelectionEqualsScoresThenTopK() {
        var rng = SplitMix64(state: 91)
        for trial in 0..<2000 {
            let E = [1, 16, 31, 32, 33, 48, 100, 456, 1000][trial % 9]
            let k = min(E, 1 + Int(rng.next() % (trial % 3 == 0 ? 20 : 4)))
            let S: Int32 = [64, 1024, 7][trial % 3]
            let pops = (0..<E).map { _ in Int32(rng.next() % UInt64(S + 1)) }
            let scale: [Float] = (0..<E).map { _ in
                switch trial % 5 {
                case 0: return [0.5, 0.5, -0.25, 0][Int(rng.next() % 4)]                                   // ties
                case 1: return rng.next() % 40 == 0 ? .infinity : Float(Int(rng.next() % 200) - 100) / 37  // NaN, ±∞
                default: return Float(Int(rng.next() % 2000) - 1000) / 1013
                }
            }
            let bias = (0..<E).map { _ in trial % 5 == 0 ? 0 : Float(Int(rng.next() % 200) - 100) / 29 }
            var expectedScores = [Float](repeating: 0, count: E)
            bf_router_scores(pops, E, S, scale, bias, &expectedScores)
            var expected = [Int32](repeating: -1, count: k)
            bf_select_topk(expectedScores, E, k, &expected)
            var scores = [Float](repeating: 0, count: E)
            var selected = [Int32](repeating: -1, count: k)
            bf_router_select(pops, E, S, scale, bias, &scores, k, &selected)
            #expect(scores.map(\.bitPattern) == expectedScores.map(\.bitPattern), "trial \(trial) E \(E): scores differ")
            #expect(selected == expected, "trial \(trial) E \(E) k \(k): \(selected) vs \(expected)")
            if selected != expected { break }
        }
    }
}

@Suite("Thread pool and CPU features")
struct PoolTests {
    /// A batch is cut in proportion to the chunk positions' measured samples/s, on multiples of 16, each chunk
    /// keeping a floor; without usable rates it is cut evenly.
    @Test func chunkBoundsFollowTheMeasuredSpeeds() {
        let cut = BinaryMoEModel.chunkBounds
        #expect(cut(256, 2, [], 16) == [0, 128, 256])
        #expect(cut(256, 2, [1, 0], 16) == [0, 128, 256])                 // a position not measured yet
        #expect(cut(256, 2, [1, .nan], 16) == [0, 128, 256])
        #expect(cut(256, 2, [410_000, 220_000], 16) == [0, 160, 256])     // 256 · 410/630 = 166.6 → 160
        #expect(cut(256, 2, [220_000, 410_000], 16) == [0, 96, 256])
        #expect(cut(256, 2, [1, 1_000_000], 16) == [0, 64, 256])          // the floor: a quarter of the batch
        #expect(cut(256, 2, [1_000_000, 1], 16) == [0, 192, 256])
        #expect(cut(300, 3, [1, 1, 1], 16) == [0, 96, 208, 300])
        #expect(cut(17, 2, [1, 5], 16) == [0, 9, 17])                     // no room for the floor: even
        for count in [32, 33, 100, 256, 511] {
            for rates in [[1.0, 2.0], [3.0, 1.0, 2.0], [1.0, 1.0, 1.0, 9.0]] where count >= 16 * rates.count {
                let b = cut(count, rates.count, rates, 16)
                #expect(b.count == rates.count + 1 && b.first == 0 && b.last == count)
                #expect(zip(b, b.dropFirst()).allSatisfy { $0 < $1 }, "\(count) \(rates) \(b)")
            }
        }
    }

    @Test func parallelForRunsEveryIndexOnce() {
        let pool = ThreadPool(helpers: 3)
        for count in [0, 1, 2, 7, 100] {
            let hits = UnsafeMutablePointer<Int>.allocate(capacity: max(1, count))
            hits.initialize(repeating: 0, count: max(1, count))
            let box = PointerBox(hits)
            pool.parallelFor(count) { i in box.p[i] += 1 }
            for i in 0..<count { #expect(hits[i] == 1) }
            hits.deallocate()
        }
    }

    @Test func concurrentCallers() async {
        let pool = ThreadPool(helpers: 2)
        let sums = await withTaskGroup(of: Int.self) { group in
            for t in 0..<6 {
                group.addTask {
                    let cells = UnsafeMutablePointer<Int>.allocate(capacity: 50)
                    defer { cells.deallocate() }
                    let box = PointerBox(cells)
                    pool.parallelFor(50) { i in box.p[i] = i * t }
                    return (0..<50).reduce(0) { $0 + cells[$1] }
                }
            }
            var out: [Int] = []
            for await s in group { out.append(s) }
            return out.sorted()
        }
        #expect(sums == (0..<6).map { 1225 * $0 })
    }

    @Test func cpuFeatureMessages() {
        let v3 = CPUFeatures(avx2: true, popcnt: true, bmi2: true, fma: true)
        let old = CPUFeatures(avx2: false, popcnt: true, bmi2: false, fma: false)
        #expect(CPUFeatures.unsupportedMessage(built: v3, running: v3) == nil)
        let msg = CPUFeatures.unsupportedMessage(built: v3, running: old)
        #expect(msg?.contains("avx2") == true && msg?.contains("bmi2") == true)
        #expect(CPUFeatures.unsupportedMessage(built: old, running: v3) == nil)
        // this test binary runs on the CPU it was built on
        #expect(CPUFeatures.unsupportedMessage() == nil)
        #expect(CPUFeatures.running.popcnt)
    }
}

struct PointerBox: @unchecked Sendable {
    let p: UnsafeMutablePointer<Int>
    init(_ p: UnsafeMutablePointer<Int>) { self.p = p }
}

/// A conv test case and its plain-loop sums: filters (`wkind` 0 random, 1 all +1, 2 all −1), an `H × W` image
/// (`xkind` 0 random, 1 all 255), and `a[(oy·Wo + ox)·C + c] = Σ w · (x >> shift)` over each window, 0 outside.
/// With `bits` 2 the filter rows are the integer layer's 2-bit rows (`PackedMatrix.loadTwoBit`): `3k²` bits, the
/// high plane h twice, then the low plane l, weight `2·h + l` (all +1: 3, all −1: −3).
private func plainConv(_ H: Int, _ W: Int, _ k: Int, _ stride: Int, _ pad: Int, _ C: Int, _ shift: Int32, _ wkind: Int,
                       _ xkind: Int, _ rng: inout SplitMix64, bits: Int = 1) -> (wbits: [UInt64], x: [UInt8], sums: [Int]) {
    let Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, kk = k * k
    let words = (kk * (bits == 2 ? 3 : 1) + 63) / 64
    var wbits: [UInt64] = (0..<(C * words)).map { _ in wkind == 1 ? ~0 : wkind == 2 ? 0 : rng.next() }
    func bit(_ c: Int, _ t: Int) -> Int { Int((wbits[c * words + t / 64] >> UInt64(t % 64)) & 1) }
    if bits == 2 {   // the second copy of h equal to the first (the kernels read h at t and l at 2k² + t)
        for c in 0..<C { for t in 0..<kk {
            let j = kk + t
            wbits[c * words + j / 64] = wbits[c * words + j / 64] & ~(1 << UInt64(j % 64)) | UInt64(bit(c, t)) << UInt64(j % 64)
        }}
    }
    let x: [UInt8] = (0..<(H * W)).map { _ in xkind == 1 ? 255 : UInt8(truncatingIfNeeded: rng.next()) }
    func q(_ y: Int, _ xx: Int) -> Int {
        y < 0 || y >= H || xx < 0 || xx >= W ? 0 : Int(x[y * W + xx] >> UInt8(shift))
    }
    var a = [Int](repeating: 0, count: Ho * Wo * C)
    for oy in 0..<Ho { for ox in 0..<Wo { for c in 0..<C {
        var sum = 0
        for ky in 0..<k { for kx in 0..<k {
            let t = ky * k + kx
            let w = bits == 2 ? 2 * (2 * bit(c, t) - 1) + (2 * bit(c, 2 * kk + t) - 1) : 2 * bit(c, t) - 1
            sum += w * q(oy * stride + ky - pad, ox * stride + kx - pad)
        }}
        a[(oy * Wo + ox) * C + c] = sum
    }}}
    return (wbits, x, a)
}
