/// Binary GEMM kernels: popcount(a_i OP b_j) for every pair of packed rows.
///
/// `a` is the activation side (samples, or sample bit planes), `b` the weight side (output channels). Rows are
/// `words` UInt64 long with zero padding bits. The kernels are plain Swift over unsafe pointers with wrapping
/// arithmetic (`&+=`), which the compiler vectorises (AVX2 `vpshufb` popcount) once a target CPU is set.
/// Tiles are 2 samples × 4 channels in registers; channels are blocked so a block of weight rows stays in L1.
public protocol BinaryCombine {
    static func combine(_ a: UInt64, _ b: UInt64) -> UInt64
}

/// XNOR-popcount layers count disagreements: `dot = K − 2·popcount(a XOR b)`.
public enum XorCombine: BinaryCombine {
    @inline(__always) public static func combine(_ a: UInt64, _ b: UInt64) -> UInt64 { a ^ b }
}

/// The stem counts agreements of +1 weights with set plane bits: `popcount(w AND plane)`.
public enum AndCombine: BinaryCombine {
    @inline(__always) public static func combine(_ a: UInt64, _ b: UInt64) -> UInt64 { a & b }
}

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
                    var s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0
                    for k in 0..<words {
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
