/// The portable stem kernel (bit planes). The XNOR-popcount kernels of the router and the experts, and the
/// lookup and int8 stem kernels, are C with one function per instruction set (CEngineSupport: `xnor_gemm.c`,
/// `lut_stem.c`, `stem_int8.c`), chosen at run time (`XNORPath`, `StemKernel`).

/// `popcount(K − 2·pop ≥ t)` ⇔ `pop ≤ floor((K − t) / 2)`; clamped into Int32.
@inline(__always) func maxPopcount(bits k: Int, threshold t: Int32) -> Int32 {
    let diff = k - Int(t)
    let q = diff >= 0 ? diff / 2 : -((-diff + 1) / 2)   // floor division
    return Int32(clamping: q)
}

public enum BinaryKernels {
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
