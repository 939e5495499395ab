import CEngineSupport

/// The input layer's kernel.
public enum StemKernel: String, Sendable, CaseIterable {
    /// Lookup when the model and CPU allow it, else bit planes.
    case automatic
    /// One AND-popcount pass per input bit plane (any plane count, any CPU).
    case bitPlanes = "bit-planes"
    /// Table lookup, 4-bit activations × one-bit weights in the style of T-MAC (≤ 4 planes, AVX2).
    case lookup
}

/// The stem's weights re-laid for the table-lookup kernel (`bf_lut_stem` in CEngineSupport/lut_stem.c).
///
/// With at most 4 input bit planes every activation `q` is 0…15, so for a group of four inputs all 16 possible
/// sums `Σ q_t·w_t` (w ∈ {0, 1}) fit a byte, and a row's four weight bits index them: one AVX2 `vpshufb` is 128
/// multiply-adds where the bit-plane kernel spends four AND-popcount passes. The layout is one byte (a 4-bit index)
/// per row and group of four inputs, by blocks of 16 rows: 2 bits per weight, private to the process (~200 KB for
/// a 784 × 1024 stem), next to the memory-mapped packed weights.
struct StemLookupWeights: @unchecked Sendable {
    /// Input feature limit: the kernel sums a row in 16 bits, and a row's sum is at most 15 × D ≤ 65 535.
    static let maxFeatures = 4_368

    let base: UnsafePointer<UInt8>
    /// Pairs of four-input groups (`ceil(D / 8)`).
    let pairs: Int
    /// Blocks of 16 rows (`ceil(S / 16)`).
    let blocks: Int
    var byteCount: Int { blocks * pairs * 32 }
    /// Lookup-table bytes per sample.
    var tableBytes: Int { pairs * 32 }

    static func supports(_ config: ModelConfig) -> Bool {
        config.inputBitPlanes <= 4 && config.inputFeatures <= maxFeatures && bf_lut_available() != 0
    }

    init(stem: PackedMatrix, owned: inout [UnsafeMutableRawPointer]) {
        let D = stem.bits, S = stem.rows
        pairs = (D + 7) / 8
        blocks = (S + 15) / 16
        let count = max(1, blocks * pairs * 32)
        let storage = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64)
        let bytes = storage.bindMemory(to: UInt8.self, capacity: count)
        bytes.initialize(repeating: 0, count: count)
        for j in 0..<S {
            let row = stem.row(j)
            let b = j >> 4, r = j & 15
            for g in 0..<(2 * pairs) {
                var nibble: UInt8 = 0
                for t in 0..<4 {
                    let k = 4 * g + t
                    if k < D && (row[k >> 6] >> UInt64(k & 63)) & 1 == 1 { nibble |= 1 << t }
                }
                let p = g >> 1, lane = g & 1
                bytes[(b * pairs + p) * 32 + lane * 16 + r] = nibble
            }
        }
        owned.append(storage)
        base = UnsafePointer(bytes)
    }

    /// `acc[i × ld + j] = Σ_k q_ik·[w_jk = +1]` and `sumQ[i] = Σ_k q_ik` for `q = x >> shift`, samples `i < n`.
    func accumulate(x: UnsafePointer<UInt8>, n: Int, features: Int, shift: Int, tables: UnsafeMutablePointer<UInt8>,
                    sumQ: UnsafeMutablePointer<Int>, acc: UnsafeMutablePointer<Int32>, ld: Int) {
        for i in 0..<n {
            sumQ[i] = bf_lut_build_tables(x + i * features, features, Int32(shift), pairs, tables + i * tableBytes)
        }
        bf_lut_stem(tables, n, pairs, base, blocks, acc, ld)
    }
}
