#if BITFLEET_AVX2
import _Builtin_intrinsics.intel
#endif

/// Binary GEMM kernels: popcount(a_i OP b_j) for every pair of packed rows.
///
/// `a` is the activation side (samples, or sample bit planes), `b` the weight side (output channels). Rows are
/// `words` UInt64 long with zero padding bits. Tiles are 2 samples × 4 channels in registers; channels are blocked
/// so a block of weight rows stays in L1.
///
/// Two inner loops compute a tile. The portable one is plain Swift over unsafe pointers with wrapping arithmetic
/// (`&+=`), which the compiler vectorises once a target CPU is set (64-bit popcounts: `vpshufb` nibble lookup, then
/// `vpsadbw` and a 64-bit add for every 256 bits, ~88 binary MACs per cycle on Zen 3). The AVX2 one (compiled when
/// the build defines `BITFLEET_AVX2`, which `Ops/env.sh` does together with `-march=x86-64-v3`) keeps the
/// popcounts in byte lanes for up to 31 steps and folds them with one `vpsadbw` per step block: two instructions
/// fewer per 256 MACs, ~100 MACs per cycle.
public protocol BinaryCombine {
    static func combine(_ a: UInt64, _ b: UInt64) -> UInt64
    #if BITFLEET_AVX2
    static func combine(_ a: __m256i, _ b: __m256i) -> __m256i
    #endif
}

/// XNOR-popcount layers count disagreements: `dot = K − 2·popcount(a XOR b)`.
public enum XorCombine: BinaryCombine {
    @inline(__always) public static func combine(_ a: UInt64, _ b: UInt64) -> UInt64 { a ^ b }
    #if BITFLEET_AVX2
    @inline(__always) public static func combine(_ a: __m256i, _ b: __m256i) -> __m256i { _mm256_xor_si256(a, b) }
    #endif
}

/// The stem counts agreements of +1 weights with set plane bits: `popcount(w AND plane)`.
public enum AndCombine: BinaryCombine {
    @inline(__always) public static func combine(_ a: UInt64, _ b: UInt64) -> UInt64 { a & b }
    #if BITFLEET_AVX2
    @inline(__always) public static func combine(_ a: __m256i, _ b: __m256i) -> __m256i { _mm256_and_si256(a, b) }
    #endif
}

/// Popcounts of a 2 × 4 tile: `s[r][c] = Σ_k popcount(a_r[k] OP b_c[k])` over `words` words.
@usableFromInline typealias Tile2x4 = (Int, Int, Int, Int, Int, Int, Int, Int)

@inlinable @inline(__always)
func scalarTile2x4<Op: BinaryCombine>(_: Op.Type, _ a0: UnsafePointer<UInt64>, _ a1: UnsafePointer<UInt64>,
                                      _ b0: UnsafePointer<UInt64>, _ b1: UnsafePointer<UInt64>,
                                      _ b2: UnsafePointer<UInt64>, _ b3: UnsafePointer<UInt64>,
                                      from: Int, to words: Int) -> Tile2x4 {
    var s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0
    for k in from..<words {
        let x0 = a0[k], x1 = a1[k]
        let y0 = b0[k], y1 = b1[k], y2 = b2[k], y3 = b3[k]
        s00 &+= Op.combine(x0, y0).nonzeroBitCount
        s01 &+= Op.combine(x0, y1).nonzeroBitCount
        s02 &+= Op.combine(x0, y2).nonzeroBitCount
        s03 &+= Op.combine(x0, y3).nonzeroBitCount
        s10 &+= Op.combine(x1, y0).nonzeroBitCount
        s11 &+= Op.combine(x1, y1).nonzeroBitCount
        s12 &+= Op.combine(x1, y2).nonzeroBitCount
        s13 &+= Op.combine(x1, y3).nonzeroBitCount
    }
    return (s00, s01, s02, s03, s10, s11, s12, s13)
}

#if BITFLEET_AVX2
/// The AVX2 tile: byte-lane popcounts (`vpshufb` nibble lookup), summed in bytes for up to 31 steps of 256 bits
/// (31 × 8 = 248 fits a byte), then folded into 64-bit lanes with `vpsadbw`. Words past the last whole 256-bit step
/// go through the scalar loop.
@inlinable @inline(__always)
func avx2Tile2x4<Op: BinaryCombine>(_: Op.Type, _ a0: UnsafePointer<UInt64>, _ a1: UnsafePointer<UInt64>,
                                    _ b0: UnsafePointer<UInt64>, _ b1: UnsafePointer<UInt64>,
                                    _ b2: UnsafePointer<UInt64>, _ b3: UnsafePointer<UInt64>, words: Int) -> Tile2x4 {
    let steps = words &>> 2
    let lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4)
    let low = _mm256_set1_epi8(0x0F)
    let zero = _mm256_setzero_si256()
    @inline(__always) func load(_ p: UnsafePointer<UInt64>, _ v: Int) -> __m256i {
        UnsafeRawPointer(p).loadUnaligned(fromByteOffset: v &* 32, as: __m256i.self)
    }
    @inline(__always) func popcount8(_ x: __m256i) -> __m256i {
        _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)),
                        _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)))
    }
    // byte sums → one Int (registers are scarce: 8 byte accumulators, 6 loads and 3 constants are live in the loop)
    @inline(__always) func total(_ s: __m256i) -> Int {
        Int(_mm256_sad_epu8(s, zero).wrappedSum())   // __m256i imports as SIMD4<Int64>
    }
    var t00 = 0, t01 = 0, t02 = 0, t03 = 0, t10 = 0, t11 = 0, t12 = 0, t13 = 0
    var v = 0
    while v < steps {
        let end = min(steps, v &+ 31)
        var s00 = zero, s01 = zero, s02 = zero, s03 = zero, s10 = zero, s11 = zero, s12 = zero, s13 = zero
        while v < end {
            let x0 = load(a0, v), x1 = load(a1, v)
            let y0 = load(b0, v), y1 = load(b1, v), y2 = load(b2, v), y3 = load(b3, v)
            s00 = _mm256_add_epi8(s00, popcount8(Op.combine(x0, y0)))
            s01 = _mm256_add_epi8(s01, popcount8(Op.combine(x0, y1)))
            s02 = _mm256_add_epi8(s02, popcount8(Op.combine(x0, y2)))
            s03 = _mm256_add_epi8(s03, popcount8(Op.combine(x0, y3)))
            s10 = _mm256_add_epi8(s10, popcount8(Op.combine(x1, y0)))
            s11 = _mm256_add_epi8(s11, popcount8(Op.combine(x1, y1)))
            s12 = _mm256_add_epi8(s12, popcount8(Op.combine(x1, y2)))
            s13 = _mm256_add_epi8(s13, popcount8(Op.combine(x1, y3)))
            v &+= 1
        }
        t00 &+= total(s00); t01 &+= total(s01); t02 &+= total(s02); t03 &+= total(s03)
        t10 &+= total(s10); t11 &+= total(s11); t12 &+= total(s12); t13 &+= total(s13)
    }
    var r = (t00, t01, t02, t03, t10, t11, t12, t13)
    if steps &* 4 < words {
        let tail = scalarTile2x4(Op.self, a0, a1, b0, b1, b2, b3, from: steps &* 4, to: words)
        r = (r.0 &+ tail.0, r.1 &+ tail.1, r.2 &+ tail.2, r.3 &+ tail.3,
             r.4 &+ tail.4, r.5 &+ tail.5, r.6 &+ tail.6, r.7 &+ tail.7)
    }
    return r
}
#endif

/// Receives each popcount as the kernel produces it (sample row `i`, weight row `j`).
public protocol PopcountSink {
    func store(_ i: Int, _ j: Int, _ pop: Int)
}

/// Stores raw popcounts into an Int32 matrix `[n × ld]`.
public struct PopcountMatrixSink: PopcountSink {
    public let out: UnsafeMutablePointer<Int32>
    public let ld: Int
    public init(out: UnsafeMutablePointer<Int32>, ld: Int) {
        self.out = out
        self.ld = ld
    }
    @inline(__always) public func store(_ i: Int, _ j: Int, _ pop: Int) { out[i &* ld &+ j] = Int32(truncatingIfNeeded: pop) }
}

/// Fused threshold: sets bit `j` of output row `i` when `popcount ≤ maxPop[j]`
/// (i.e. `K − 2·pop ≥ threshold[j]`). Output rows must be zeroed beforehand.
struct ThresholdBitsSink: PopcountSink {
    let maxPop: UnsafePointer<Int32>
    let out: UnsafeMutablePointer<UInt64>
    let ldWords: Int
    @inline(__always) func store(_ i: Int, _ j: Int, _ pop: Int) {
        // branch-free: thresholds sit at the median, so a branch would mispredict half the time
        let fire = UInt64(bitPattern: Int64(Int(maxPop[j]) &- pop)) &>> 63 ^ 1
        out[i &* ldWords &+ (j &>> 6)] |= fire &<< UInt64(j & 63)
    }
}

/// `popcount(K − 2·pop ≥ t)` ⇔ `pop ≤ floor((K − t) / 2)`; clamped into Int32.
@inline(__always) func maxPopcount(bits k: Int, threshold t: Int32) -> Int32 {
    let diff = k - Int(t)
    let q = diff >= 0 ? diff / 2 : -((-diff + 1) / 2)   // floor division
    return Int32(clamping: q)
}

public enum BinaryKernels {
    /// Calls `sink.store(i, j, popcount(a_i OP b_j))` for `i < n`, `j < m`.
    @inlinable @inline(__always)
    public static func gemm<Op: BinaryCombine, Sink: PopcountSink>(
        _ op: Op.Type, a: UnsafePointer<UInt64>, lda: Int, n: Int,
        b: UnsafePointer<UInt64>, ldb: Int, m: Int, words: Int, sink: Sink
    ) {
        let block = max(4, ((16 * 1024 / 8) / max(1, words)) & ~3)
        var j0 = 0
        while j0 < m {
            let j1 = min(m, j0 + block)
            var i = 0
            while i + 2 <= n {
                let a0 = a + i * lda, a1 = a0 + lda
                var j = j0
                while j + 4 <= j1 {
                    let b0 = b + j * ldb, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb
                    #if BITFLEET_AVX2
                    let (s00, s01, s02, s03, s10, s11, s12, s13) = avx2Tile2x4(Op.self, a0, a1, b0, b1, b2, b3, words: words)
                    #else
                    let (s00, s01, s02, s03, s10, s11, s12, s13) = scalarTile2x4(Op.self, a0, a1, b0, b1, b2, b3, from: 0, to: words)
                    #endif
                    sink.store(i, j, s00); sink.store(i, j + 1, s01); sink.store(i, j + 2, s02); sink.store(i, j + 3, s03)
                    sink.store(i + 1, j, s10); sink.store(i + 1, j + 1, s11); sink.store(i + 1, j + 2, s12); sink.store(i + 1, j + 3, s13)
                    j += 4
                }
                while j < j1 {
                    let b0 = b + j * ldb
                    var s0 = 0, s1 = 0
                    for k in 0..<words {
                        let y = b0[k]
                        s0 &+= Op.combine(a0[k], y).nonzeroBitCount
                        s1 &+= Op.combine(a1[k], y).nonzeroBitCount
                    }
                    sink.store(i, j, s0); sink.store(i + 1, j, s1)
                    j += 1
                }
                i += 2
            }
            if i < n {
                let a0 = a + i * lda
                var j = j0
                while j + 4 <= j1 {
                    let b0 = b + j * ldb, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb
                    var s0 = 0, s1 = 0, s2 = 0, s3 = 0
                    for k in 0..<words {
                        let x = a0[k]
                        s0 &+= Op.combine(x, b0[k]).nonzeroBitCount
                        s1 &+= Op.combine(x, b1[k]).nonzeroBitCount
                        s2 &+= Op.combine(x, b2[k]).nonzeroBitCount
                        s3 &+= Op.combine(x, b3[k]).nonzeroBitCount
                    }
                    sink.store(i, j, s0); sink.store(i, j + 1, s1); sink.store(i, j + 2, s2); sink.store(i, j + 3, s3)
                    j += 4
                }
                while j < j1 {
                    let b0 = b + j * ldb
                    var s = 0
                    for k in 0..<words { s &+= Op.combine(a0[k], b0[k]).nonzeroBitCount }
                    sink.store(i, j, s)
                    j += 1
                }
            }
            j0 = j1
        }
    }

    /// Raw XOR popcounts into `out[i * ldo + j]` (non-generic entry point, used by the benchmark).
    @inline(never)
    public static func xorPopcounts(a: UnsafePointer<UInt64>, lda: Int, n: Int, b: UnsafePointer<UInt64>, ldb: Int,
                                    m: Int, words: Int, out: UnsafeMutablePointer<Int32>, ldo: Int) {
        gemm(XorCombine.self, a: a, lda: lda, n: n, b: b, ldb: ldb, m: m, words: words,
             sink: PopcountMatrixSink(out: out, ld: ldo))
    }

    /// Fused XNOR layer: output bit j of sample i is set when `pop(a_i XOR b_j) ≤ maxPop[j]`. `out` is zeroed here.
    @inline(never)
    static func xnorThresholdLayer(a: UnsafePointer<UInt64>, lda: Int, n: Int, b: UnsafePointer<UInt64>, ldb: Int,
                                   m: Int, words: Int, maxPop: UnsafePointer<Int32>,
                                   out: UnsafeMutablePointer<UInt64>, ldo: Int) {
        out.initialize(repeating: 0, count: n * ldo)
        gemm(XorCombine.self, a: a, lda: lda, n: n, b: b, ldb: ldb, m: m, words: words,
             sink: ThresholdBitsSink(maxPop: maxPop, out: out, ldWords: ldo))
    }

    /// Stem: `acc[i × m + j] = Σ_b 2^b · popcount(plane_{i,b} AND w_j)` over `n` samples of `planeCount` planes
    /// (sample i's plane b is the row at `planes + (i × planeCount + b) × words`). Overwrites `acc`.
    ///
    /// The plane loop sits inside the word loop and is unrolled for each plane count, so the weighted sum stays
    /// in vector registers across all planes and words: one horizontal reduction per (sample, channel) instead of
    /// one per plane.
    @inline(never)
    public static func stemPopcounts(planes: UnsafePointer<UInt64>, n: Int, planeCount: Int, weights: UnsafePointer<UInt64>,
                                     m: Int, words: Int, acc: UnsafeMutablePointer<Int32>) {
        switch planeCount {
        case 1: stemKernel(Planes1.self, planes, n, weights, m, words, acc)
        case 2: stemKernel(Planes2.self, planes, n, weights, m, words, acc)
        case 3: stemKernel(Planes3.self, planes, n, weights, m, words, acc)
        case 4: stemKernel(Planes4.self, planes, n, weights, m, words, acc)
        case 5: stemKernel(Planes5.self, planes, n, weights, m, words, acc)
        case 6: stemKernel(Planes6.self, planes, n, weights, m, words, acc)
        case 7: stemKernel(Planes7.self, planes, n, weights, m, words, acc)
        default: stemKernel(Planes8.self, planes, n, weights, m, words, acc)
        }
    }

    @inline(__always)
    static func stemKernel<Pl: PlaneCount>(_: Pl.Type, _ planes: UnsafePointer<UInt64>, _ n: Int,
                                           _ b: UnsafePointer<UInt64>, _ m: Int, _ words: Int,
                                           _ acc: UnsafeMutablePointer<Int32>) {
        let P = Pl.count
        let block = max(4, ((16 * 1024 / 8) / max(1, words)) & ~3)
        var j0 = 0
        while j0 < m {
            let j1 = min(m, j0 + block)
            for i in 0..<n {
                let p = planes + i &* P &* words
                let out = acc + i &* m
                var j = j0
                while j + 4 <= j1 {
                    let b0 = b + j &* words, b1 = b0 + words, b2 = b1 + words, b3 = b2 + words
                    var s0 = 0, s1 = 0, s2 = 0, s3 = 0
                    for k in 0..<words {
                        let w0 = b0[k], w1 = b1[k], w2 = b2[k], w3 = b3[k]
                        for plane in 0..<P {
                            let x = p[plane &* words &+ k]
                            s0 &+= (x & w0).nonzeroBitCount &<< plane
                            s1 &+= (x & w1).nonzeroBitCount &<< plane
                            s2 &+= (x & w2).nonzeroBitCount &<< plane
                            s3 &+= (x & w3).nonzeroBitCount &<< plane
                        }
                    }
                    out[j] = Int32(truncatingIfNeeded: s0)
                    out[j + 1] = Int32(truncatingIfNeeded: s1)
                    out[j + 2] = Int32(truncatingIfNeeded: s2)
                    out[j + 3] = Int32(truncatingIfNeeded: s3)
                    j += 4
                }
                while j < j1 {
                    let b0 = b + j * words
                    var s0 = 0
                    for k in 0..<words {
                        let w0 = b0[k]
                        for plane in 0..<P { s0 &+= (p[plane &* words &+ k] & w0).nonzeroBitCount &<< plane }
                    }
                    out[j] = Int32(truncatingIfNeeded: s0)
                    j += 1
                }
            }
            j0 = j1
        }
    }

    /// Raw AND popcounts into `out[i * ldo + j]`.
    @inline(never)
    static func andPopcounts(a: UnsafePointer<UInt64>, lda: Int, n: Int, b: UnsafePointer<UInt64>, ldb: Int,
                             m: Int, words: Int, out: UnsafeMutablePointer<Int32>, ldo: Int) {
        gemm(AndCombine.self, a: a, lda: lda, n: n, b: b, ldb: ldb, m: m, words: words,
             sink: PopcountMatrixSink(out: out, ld: ldo))
    }
}

/// A plane count known at compile time, so the stem kernel's plane loop unrolls.
public protocol PlaneCount { static var count: Int { get } }
public enum Planes1: PlaneCount { @inline(__always) public static var count: Int { 1 } }
public enum Planes2: PlaneCount { @inline(__always) public static var count: Int { 2 } }
public enum Planes3: PlaneCount { @inline(__always) public static var count: Int { 3 } }
public enum Planes4: PlaneCount { @inline(__always) public static var count: Int { 4 } }
public enum Planes5: PlaneCount { @inline(__always) public static var count: Int { 5 } }
public enum Planes6: PlaneCount { @inline(__always) public static var count: Int { 6 } }
public enum Planes7: PlaneCount { @inline(__always) public static var count: Int { 7 } }
public enum Planes8: PlaneCount { @inline(__always) public static var count: Int { 8 } }
