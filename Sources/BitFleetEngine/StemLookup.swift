import CEngineSupport
import Synchronization

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

    static func supports(planes: Int, features: Int) -> Bool {
        planes <= 4 && features <= maxFeatures && bf_lut_available() != 0
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
    /// `wide` runs the AVX-512BW kernel over the same tables and weights.
    func accumulate(x: UnsafePointer<UInt8>, n: Int, features: Int, shift: Int, tables: UnsafeMutablePointer<UInt8>,
                    sumQ: UnsafeMutablePointer<Int>, acc: UnsafeMutablePointer<Int32>, ld: Int, wide: Bool = false) {
        for i in 0..<n {
            sumQ[i] = bf_lut_build_tables(x + i * features, features, Int32(shift), pairs, tables + i * tableBytes)
        }
        if wide {
            bf_lut_stem_avx512(tables, n, pairs, base, blocks, acc, ld)
        } else {
            bf_lut_stem(tables, n, pairs, base, blocks, acc, ld)
        }
    }
}

/// Picks the stem kernels by measurement: every kernel this CPU and model allow is timed on the model's own stem
/// shape (pseudo-random samples, best of 5 runs), once for large micro-batches (64 samples) and once for small ones
/// (1 sample), and the fastest of each is kept. A conv front is timed once, image by image (`timeConv`: the direct
/// conv kernels, or AMX over the windows), and its choice serves every batch size. All of them compute the same
/// integers, so the choice only affects speed. Measured once per shape per process.
enum StemChoice {
    private static let cache = Mutex<[String: (large: StemKernel, small: StemKernel)]>([:])

    static func fastest(config: ModelConfig, stem: PackedMatrix,
                        convAlgorithm: ConvAlgorithm = .automatic) -> (large: StemKernel, small: StemKernel) {
        let P = config.inputBitPlanes
        let candidates = [StemKernel.lookup, .lookupAVX512, .vnni, .amx].filter { $0.supports(config) }
        guard let first = candidates.first else { return (.bitPlanes, .bitPlanes) }
        if candidates.count == 1 { return (first, first) }
        if let g = config.convGeometry {
            let key = "conv \(g.height)x\(g.width) \(g.channels)x\(g.kernel)/\(g.stride)+\(g.padding) pool \(g.pool) P\(P) \(convAlgorithm.rawValue)"
            if let known = cache.withLock({ $0[key] }) { return known }
            let best = candidates.map { ($0, timeConv($0, g, planes: P, stem: stem, convAlgorithm: convAlgorithm)) }
                .min { $0.1 < $1.1 }!.0
            cache.withLock { $0[key] = (best, best) }
            return (best, best)
        }
        let rows = [64, 1]
        let key = "\(stem.bits)x\(stem.rows)x\(P)x\(rows)"
        if let known = cache.withLock({ $0[key] }) { return known }
        let large = candidates.map { ($0, time($0, samples: rows[0], planes: P, stem: stem)) }.min { $0.1 < $1.1 }!.0
        let small = rows.count == 1 ? large
            : candidates.map { ($0, time($0, samples: rows[1], planes: P, stem: stem)) }.min { $0.1 < $1.1 }!.0
        cache.withLock { $0[key] = (large, small) }
        return (large, small)
    }

    /// Best-of-5 seconds for a conv front over 4 pseudo-random images with `kernel`: the conv kernel that stands for
    /// it with `convAlgorithm` (`ConvFront`: the table or a direct kernel, pooling included), or (AMX) the windows
    /// through the int8 stem kernel and the threshold (its pooling, a few hundred word ORs, not timed).
    static func timeConv(_ kernel: StemKernel, _ g: ConvGeometry, planes: Int, stem: PackedMatrix,
                         convAlgorithm: ConvAlgorithm = .automatic) -> Double {
        let images = 4, D = g.height * g.width, kk = g.windowTaps, C = g.channels
        let shift = Int32(8 - planes)
        var rng = SplitMix64(state: 0x5EED)
        let x = (0..<(images * D)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let thresholds = [Int32](repeating: 0, count: C)
        let work = UnsafeMutableRawPointer.allocate(byteCount: bf_conv_work_bytes(g.height, g.width, g.kernel, g.padding, g.outWidth), alignment: 64)
        let bits = UnsafeMutablePointer<UInt64>.allocate(capacity: g.positions)
        var owned: [UnsafeMutableRawPointer] = [work, UnsafeMutableRawPointer(bits)]
        defer { for p in owned { p.deallocate() } }
        let w8 = work.assumingMemoryBound(to: UInt8.self)
        let run: () -> Void
        let front: (ConvFront.Kind, String)?
        do { front = try ConvFront.kind(for: kernel, g, convAlgorithm) } catch { return .infinity }
        if let (kind, name) = front {
            let f = ConvFront(kind: kind, name: name, geometry: g, filters: stem, thresholds: thresholds, owned: &owned)
            run = {
                x.withUnsafeBufferPointer { xs in
                    for i in 0..<images { f.run(xs.baseAddress! + i * D, g, shift: shift, work: w8, pooled: bits) }
                }
            }
        } else {
            // a lookup kernel's conv runs directly, except 2-bit filters wider than 8 × 8 (windows: not timed here)
            guard let code = kernel.int8Code else { return .infinity }
            let w = UnsafeMutableRawPointer.allocate(byteCount: bf_stem_int8_bytes(C, kk), alignment: 64)
            owned.append(w)
            bf_stem_int8_pack(stem.base, C, kk, w.assumingMemoryBound(to: UInt8.self))
            let kpad = (kk + 63) / 64 * 64, ld = (C + 15) / 16 * 16, rows = (g.positions + 31) / 32 * 32
            let q = UnsafeMutablePointer<UInt8>.allocate(capacity: rows * kpad + 8)
            let acc = UnsafeMutablePointer<Int32>.allocate(capacity: rows * ld)
            let sumQ = UnsafeMutablePointer<Int>.allocate(capacity: g.positions)
            owned += [UnsafeMutableRawPointer(q), UnsafeMutableRawPointer(acc), UnsafeMutableRawPointer(sumQ)]
            run = {
                x.withUnsafeBufferPointer { xs in
                    thresholds.withUnsafeBufferPointer { t in
                        for i in 0..<images {
                            bf_conv_activations(xs.baseAddress! + i * D, g.height, g.width, g.kernel, g.stride, g.padding,
                                                g.outHeight, g.outWidth, g.windowCopies, shift, w8, q, kpad, sumQ)
                            bf_stem_int8(code, q, g.positions, kk, w.assumingMemoryBound(to: UInt8.self), (C + 15) / 16, acc, ld)
                            bf_stem_threshold(acc, ld, g.positions, C, sumQ, t.baseAddress!, bits, 1)
                        }
                    }
                }
            }
        }
        return bestOf5(run)
    }

    private static func bestOf5(_ run: () -> Void) -> Double {
        run()
        var best = Double.infinity
        for _ in 0..<5 {
            let t0 = bf_monotonic_seconds()
            run()
            best = min(best, bf_monotonic_seconds() - t0)
        }
        return best
    }

    /// Best-of-5 seconds for one stem pass over `n` samples (rows) with `kernel`.
    static func time(_ kernel: StemKernel, samples n: Int, planes: Int, stem: PackedMatrix) -> Double {
        let D = stem.bits, S = stem.rows
        let shift = 8 - planes
        var rng = SplitMix64(state: 0x5EED)
        let x = (0..<(n * D)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let ld = (S + 15) / 16 * 16
        var owned: [UnsafeMutableRawPointer] = []
        defer { for p in owned { p.deallocate() } }
        let padded = (n + 31) / 32 * 32
        let acc = UnsafeMutablePointer<Int32>.allocate(capacity: padded * ld)
        let sumQ = UnsafeMutablePointer<Int>.allocate(capacity: n)
        defer { acc.deallocate(); sumQ.deallocate() }
        let run: () -> Void
        switch kernel {
        case .lookup, .lookupAVX512:
            let lookup = StemLookupWeights(stem: stem, owned: &owned)
            let wide = kernel == .lookupAVX512
            let tables = UnsafeMutablePointer<UInt8>.allocate(capacity: n * lookup.tableBytes)
            owned.append(UnsafeMutableRawPointer(tables))
            run = {
                x.withUnsafeBufferPointer {
                    lookup.accumulate(x: $0.baseAddress!, n: n, features: D, shift: shift, tables: tables, sumQ: sumQ,
                                      acc: acc, ld: ld, wide: wide)
                }
            }
        default:
            let code = kernel.int8Code!
            let w = UnsafeMutableRawPointer.allocate(byteCount: bf_stem_int8_bytes(S, D), alignment: 64)
            owned.append(w)
            bf_stem_int8_pack(stem.base, S, D, w.assumingMemoryBound(to: UInt8.self))
            let kpad = (D + 63) / 64 * 64
            let q = UnsafeMutablePointer<UInt8>.allocate(capacity: padded * kpad)
            owned.append(UnsafeMutableRawPointer(q))
            run = {
                x.withUnsafeBufferPointer {
                    bf_stem_int8_activations($0.baseAddress!, n, D, Int32(shift), q, sumQ)
                }
                bf_stem_int8(code, q, n, D, w.assumingMemoryBound(to: UInt8.self), (S + 15) / 16, acc, ld)
            }
        }
        return bestOf5(run)
    }
}
