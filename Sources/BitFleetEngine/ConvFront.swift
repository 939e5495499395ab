import CEngineSupport

/// Which algorithm runs a conv front where a conv kernel of its own can (`BITFLEET_CONV_KERNEL`). Both compute the
/// same bits.
public enum ConvAlgorithm: String, Sendable, CaseIterable, Codable {
    /// The table kernel where it applies (the AVX2 lookup stem kernel, and a shape it fits), else the direct kernel.
    case automatic
    /// The direct kernels (`conv_direct.c`): u8 × s8 dot products.
    case direct
    /// The table kernel (`conv_table.c`, AVX2): per image row, the 16 sums of every sign pattern of a 4-tap filter
    /// row, then 4 table reads per channel and 16 positions. Only stride 2 with 2 × 2 pooling, k ≤ 4 (padding
    /// below k), at most 8 × 8 pooled cells and 64 channels (the models' conv fronts).
    case table
}

/// The kernel a conv model's front runs on (the direct or the table kernel), with its filters packed at load.
struct ConvFront {
    enum Kind: Equatable {
        case direct(Int32)
        case table
    }
    let kind: Kind
    /// For logs, metrics and `bitfleet bench`: `table-avx2`, `direct-avx2`, `direct-avx512bw` or `direct-vnni`.
    let name: String
    let packed: UnsafePointer<UInt8>
    let byteCount: Int

    /// True when the table kernel runs shape `g` (and this CPU has AVX2).
    static func tableFits(_ g: ConvGeometry) -> Bool {
        bf_conv_direct_supported(Int32(BF_CONV_AVX2)) != 0
            && bf_conv_table_fits(g.height, g.width, g.kernel, g.stride, g.padding, g.pool, g.outHeight, g.outWidth,
                                  g.channels) != 0
    }

    /// The conv kernel that stands for `stem` on shape `g` with `algorithm`, or nil when the conv runs as windows
    /// through the stem kernel (bit planes, AMX, a CPU without the stem kernel's direct conv, or 2-bit filters too
    /// wide for its int16 sums). `filters` are the integer layer's rows (2-bit: `PackedMatrix.loadTwoBit`'s). The table kernel
    /// stands only for the AVX2 lookup stem kernel: on AVX-512 CPUs the 512-bit direct kernels stand for theirs.
    /// Throws when `algorithm` names a kernel that cannot run here.
    static func kind(for stem: StemKernel, _ g: ConvGeometry, _ algorithm: ConvAlgorithm) throws(ModelError) -> (Kind, String)? {
        let table = stem == .lookup && tableFits(g)
        if algorithm == .table && !table {
            throw ModelError(.config, "BITFLEET_CONV_KERNEL=table: the table conv kernel needs the lookup stem kernel "
                + "(this model: \(stem.rawValue)), a CPU with AVX2 and stride 2, 2 × 2 pooling, kernel ≤ 4 (padding below it), "
                + "at most 8 × 8 pooled cells and 64 channels (this model: \(g.channels) filters \(g.kernel) × \(g.kernel), "
                + "stride \(g.stride), padding \(g.padding), pool \(g.pool), \(g.pooledHeight) × \(g.pooledWidth) cells)")
        }
        if table && algorithm != .direct { return (.table, "table-avx2") }
        return stem.convDirect(for: g).map { (.direct($0.code), $0.name) }
    }

    init(kind: Kind, name: String, geometry g: ConvGeometry, filters: PackedMatrix, thresholds: [Int32],
         owned: inout [UnsafeMutableRawPointer]) {
        self.kind = kind
        self.name = name
        let count = switch kind {
        case .direct(let code): bf_conv_direct_bytes(code, g.channels, g.kernel, g.weightBits)
        case .table: bf_conv_table_bytes(g.channels, g.weightBits)
        }
        let storage = UnsafeMutableRawPointer.allocate(byteCount: max(1, count), alignment: 64)
        let dst = storage.assumingMemoryBound(to: UInt8.self)
        thresholds.withUnsafeBufferPointer { t in
            switch kind {
            case .direct(let code):
                bf_conv_direct_pack(code, filters.base, filters.words, g.weightBits, t.baseAddress!, g.channels, g.kernel, dst)
            case .table:
                bf_conv_table_pack(filters.base, filters.words, g.weightBits, t.baseAddress!, g.channels, g.kernel, dst)
            }
        }
        owned.append(storage)
        packed = UnsafePointer(dst)
        byteCount = count
    }

    /// One image `x` through the filters and the OR-pooling: the pooled cells' words into `pooled`. `work` holds
    /// `bf_conv_work_bytes` bytes (the direct kernels' padded image).
    @inline(__always)
    func run(_ x: UnsafePointer<UInt8>, _ g: ConvGeometry, shift: Int32, work: UnsafeMutablePointer<UInt8>,
             pooled: UnsafeMutablePointer<UInt64>) {
        switch kind {
        case .direct(let code):
            bf_conv_direct(code, x, g.height, g.width, g.kernel, g.weightBits, g.stride, g.padding, g.outHeight,
                           g.outWidth, g.pool, shift, packed, g.channels, work, pooled)
        case .table:
            bf_conv_table(x, g.height, g.width, g.kernel, g.weightBits, g.stride, g.padding, g.outHeight, g.outWidth,
                          g.pool, shift, packed, g.channels, pooled)
        }
    }
}
