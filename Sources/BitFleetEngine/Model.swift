import CEngineSupport
import Synchronization

/// A loaded binary mixture-of-experts model (docs/MODEL_FORMAT.md). Immutable after loading; `predict` may be
/// called from any number of threads at once.
public final class BinaryMoEModel: @unchecked Sendable {
    public let config: ModelConfig
    /// SHA-256 of `model.safetensors`, lowercase hex.
    public let sha256: String
    public let directory: String

    /// Size of the memory-mapped weights file.
    public var mappedBytes: Int { file.count }
    /// Bytes of repacked weights held privately by this process (0 when every matrix is a view of the mapping).
    public let privateBytes: Int
    /// Of `privateBytes`, the packed matrices that could not be views of the mapping (odd row lengths).
    let repackedBytes: Int

    let file: MappedFile
    private var owned: [UnsafeMutableRawPointer] = []

    /// The integer input layer: the stem (`S` rows of `D` input weights), or for a conv model (format v2) the conv
    /// front's filters (`channels` rows of `kernel²` weights; 2-bit filters, format v5: `3 × kernel²`, see
    /// `PackedMatrix.loadTwoBit`), which the same kernels run on each image's patches.
    let stem: PackedMatrix
    let stemThreshold: [Int32]
    /// A conv model's shapes (nil for a v1 model).
    let conv: ConvGeometry?
    /// A conv model's stem: a binary layer over the pooled conv features (nil without one: `stem_width` 0).
    let binaryStem: InterleavedMatrix?
    /// Per stem row: the largest XOR popcount that still fires (`floor((F − t) / 2)`).
    let binaryStemMaxPop: [Int32]
    let binaryStemRows: PackedMatrix?
    /// A format-v4 model's second conv layer: its shapes, filters (XNOR blocks) and per-filter largest XOR popcount
    /// that still fires (nil and empty without one).
    let conv2: Conv2Geometry?
    let conv2Rows: PackedMatrix?
    let conv2Blocks: InterleavedMatrix?
    let conv2MaxPop: [Int32]
    /// The stem weights re-laid for the table-lookup kernel (nil unless a chosen stem kernel is `.lookup`).
    let stemLookup: StemLookupWeights?
    /// The stem weights as {0, 1} bytes for the int8 kernels (nil unless a chosen stem kernel is `.vnni`/`.amx`).
    let stemInt8: UnsafePointer<UInt8>?
    /// A conv model's own conv kernel, standing for `stemKernel` (`ConvFront.kind`: the table or a direct kernel),
    /// with its filters and thresholds; nil for a v1 model, or when the conv runs as windows through the stem kernels.
    let convFront: ConvFront?
    /// Which stem kernel `predict` uses for micro-batches of at least 16 samples (never `.automatic`).
    public let stemKernel: StemKernel
    /// The stem kernel for micro-batches of fewer than 16 samples: a 16 × 16 AMX tile wastes most of its work on
    /// one sample, so the automatic choice is timed separately for small batches (the same as `stemKernel` when
    /// a kernel was forced).
    public let stemKernelSmallBatch: StemKernel
    /// Micro-batches below this many samples use `stemKernelSmallBatch`.
    static let smallBatch = 16
    /// How a conv model's front runs, for logs, metrics and `bitfleet bench`: `table-avx2` (the table kernel),
    /// `direct-vnni`, `direct-avx512bw` or `direct-avx2` (the direct kernels), else `windows-` and the stem kernel
    /// that runs the windows; nil without a conv front.
    public var convKernel: String? {
        guard conv != nil else { return nil }
        return convFront?.name ?? "windows-\(stemKernel.rawValue)"
    }
    /// True when this conv model's front runs on the table kernel (`ConvAlgorithm.table`).
    public var convRunsTable: Bool { convFront?.kind == .table }
    /// Models with at least this many experts prefetch the next active expert's first layer while one runs: their
    /// experts' weights do not stay in L2 between micro-batches (16 experts' do).
    static let prefetchMinExperts = 64
    /// Samples per stem block (a multiple of 32: the AMX kernel works on pairs of 16-sample tiles).
    static let stemBlock = 64
    /// Working memory kept between calls, one per thread that called (keyed by `pthread_self`): a thread gets its own
    /// back, so its caches still hold it; handing it to another core would move ~1.5 MB between caches per call.
    private let scratchPool = Mutex<[UInt: Scratch]>([:])
    /// Samples/s of each chunk position of the last multi-threaded passes (0: the calling thread), smoothed: the next
    /// batch is split in proportion, so a faster core takes more samples (see `chunkBounds`).
    private let chunkRates = Mutex<[Double]>([])
    /// Which XNOR-popcount path the router and the experts use.
    public let xnorPath: XNORPath
    /// Row stride of the stem accumulators (`S`, or `S` rounded up to 16 for the lookup and int8 kernels).
    let stemLd: Int
    let router: PackedMatrix
    /// Router, hidden and output weights re-laid for the XNOR kernels (one part per expert).
    let routerBlocks: InterleavedMatrix
    let hiddenBlocks: [InterleavedMatrix]
    let outputBlocks: InterleavedMatrix
    let routerScale: [Float]
    let routerBias: [Float]
    /// Format v3 two-level router: the group scores' weights (nil: one flat router; with groups `routerBlocks` holds
    /// one part per group of `experts / groups` experts).
    let groupRouter: PackedMatrix?
    let groupBlocks: InterleavedMatrix?
    let groupScale: [Float]
    let groupBias: [Float]
    /// Per layer: rows `E × H_{l+1}` (expert e's rows start at `e × H_{l+1}`).
    let hidden: [PackedMatrix]
    /// Per layer: `floor((H_l − t) / 2)`, the largest XOR popcount that still fires.
    let hiddenMaxPop: [[Int32]]
    /// Rows `E × C`.
    let output: PackedMatrix
    let outScale: [Float]
    let outBias: [Float]

    deinit {
        for p in owned { p.deallocate() }
        scratchPool.withLock { pool in for s in pool.values { s.deallocate() } }
    }

    /// Loads `directory/config.json` and memory-maps `directory/model.safetensors`, validating every tensor
    /// against the config. With `expectedSHA256`, a file that hashes differently is refused.
    ///
    /// `stemKernel` picks the input layer's kernel, `xnorPath` the instruction set of the XNOR-popcount kernels and
    /// `convAlgorithm` a conv front's own kernel; every choice computes the same integers. `.automatic` and `nil`
    /// take `BITFLEET_STEM_KERNEL`, `BITFLEET_KERNEL_PATH` and `BITFLEET_CONV_KERNEL` from the environment when set,
    /// else the fastest this CPU offers: for models with at most 4 input bit planes the stem kernels this CPU
    /// supports (AVX2 and AVX-512 lookup, VNNI, AMX) are timed once per process on the model's shape, for small and
    /// for large micro-batches, and the fastest of each is kept (`StemChoice`); otherwise the bit-plane kernel.
    public static func load(directory: String, expectedSHA256: String? = nil,
                            stemKernel: StemKernel = .automatic, xnorPath: XNORPath? = nil,
                            convAlgorithm: ConvAlgorithm = .automatic) throws -> BinaryMoEModel {
        let env = try KernelSelection.fromProcessEnvironment()
        return try BinaryMoEModel(directory: directory, expectedSHA256: expectedSHA256,
                                  stemKernel: stemKernel == .automatic ? env.stem : stemKernel,
                                  xnorPath: xnorPath ?? env.xnor,
                                  convAlgorithm: convAlgorithm == .automatic ? env.conv : convAlgorithm)
    }

    private init(directory: String, expectedSHA256: String?, stemKernel: StemKernel, xnorPath: XNORPath?,
                 convAlgorithm: ConvAlgorithm) throws(ModelError) {
        var dir = directory
        if dir.hasPrefix("file://") {
            dir.removeFirst("file://".count)
            if !dir.hasPrefix("/") {  // file://host/path: only the local host is supported
                if dir.hasPrefix("localhost/") { dir.removeFirst("localhost".count) } else {
                    throw ModelError(.io, "\(directory): only local file:// URIs are supported")
                }
            }
            dir = Self.percentDecoded(dir)
        }
        while dir.count > 1 && dir.hasSuffix("/") { dir.removeLast() }
        self.directory = dir
        let configPath = dir + "/config.json"
        let weightsPath = dir + "/model.safetensors"
        let config = try ModelConfig.parse(try readSmallFile(configPath), source: configPath)
        self.config = config

        let file = try MappedFile(path: weightsPath)
        self.file = file
        let digest = SHA256.hexDigest(file.bytes)
        self.sha256 = digest
        if let expected = expectedSHA256 {
            let want = expected.lowercased().trimmingPrefix("sha256:")
            if want != digest {
                throw ModelError(.checksum, "\(weightsPath): sha256 mismatch: the file hashes to \(digest), expected \(want)")
            }
        }
        let st = try SafeTensorsFile(file: file)
        if !stemKernel.supports(config) {
            throw ModelError(.config, "\(configPath): the \(stemKernel.rawValue) stem kernel needs \(stemKernel.requirement)")
        }
        let xnor = xnorPath ?? .best
        if !xnor.isSupported {
            throw ModelError(.config, "the \(xnor.rawValue) kernel path is not supported by this CPU "
                + "(supported: \(XNORPath.allCases.filter(\.isSupported).map(\.rawValue).joined(separator: ", ")))")
        }
        self.xnorPath = xnor

        let E = config.experts, C = config.classes.count
        let widths = config.expertWidths, reads = config.expertInputWidths
        let S = widths[0]
        func bytes(_ bits: Int) -> Int { (bits + 7) / 8 }
        var owned: [UnsafeMutableRawPointer] = []

        let conv = config.convGeometry
        self.conv = conv
        // the integer input layer: the stem, or a conv model's filters
        let D: Int, intRows: Int
        let stemW: SafeTensorsFile.Tensor, stemT: SafeTensorsFile.Tensor
        var binaryW: SafeTensorsFile.Tensor? = nil, binaryT: SafeTensorsFile.Tensor? = nil
        var conv2W: SafeTensorsFile.Tensor? = nil, conv2T: SafeTensorsFile.Tensor? = nil
        let conv2 = config.conv2Geometry
        self.conv2 = conv2
        let frontFeatures = config.stemInputWidth   // what the stem (or the router and experts) read
        if let g2 = conv2 {
            let why = "conv2.channels=\(g2.channels), conv2.kernel=\(g2.kernel), \(g2.inChannels) conv channels"
            conv2W = try st.tensor("conv2.weight", .U8, [g2.channels, bytes(g2.taps)], why: why)
            conv2T = try st.tensor("conv2.threshold", .I32, [g2.channels], why: why)
        }
        if let g = conv {
            D = g.windowTaps
            intRows = g.channels
            stemW = g.weightBits == 2
                ? try st.tensor("conv.weight", .U8, [2, g.channels, bytes(g.taps)],
                                why: "conv.weight_bits=2, conv.channels=\(g.channels), conv.kernel=\(g.kernel)")
                : try st.tensor("conv.weight", .U8, [g.channels, bytes(g.taps)], why: "conv.channels=\(g.channels), conv.kernel=\(g.kernel)")
            stemT = try st.tensor("conv.threshold", .I32, [g.channels], why: "conv.channels=\(g.channels)")
            if config.stemWidth > 0 {
                let why = "stem_width=\(config.stemWidth), \(frontFeatures) conv features"
                binaryW = try st.tensor("stem.weight", .U8, [config.stemWidth, bytes(frontFeatures)], why: why)
                binaryT = try st.tensor("stem.threshold", .I32, [config.stemWidth], why: why)
            }
        } else {
            D = config.inputFeatures
            intRows = S
            stemW = try st.tensor("stem.weight", .U8, [S, bytes(D)], why: "stem_width=\(S), input_features=\(D)")
            stemT = try st.tensor("stem.threshold", .I32, [S], why: "stem_width=\(S)")
        }
        let routerW = try st.tensor("router.weight", .U8, [E, bytes(S)], why: "experts=\(E), input width \(S)")
        let routerS = try st.tensor("router.scale", .F32, [E], why: "experts=\(E)")
        let routerB = try st.tensor("router.bias", .F32, [E], why: "experts=\(E)")
        var groupW: SafeTensorsFile.Tensor? = nil, groupS: SafeTensorsFile.Tensor? = nil, groupB: SafeTensorsFile.Tensor? = nil
        if let G = config.routerGroups {
            groupW = try st.tensor("router.group.weight", .U8, [G, bytes(S)], why: "router_groups=\(G), input width \(S)")
            groupS = try st.tensor("router.group.scale", .F32, [G], why: "router_groups=\(G)")
            groupB = try st.tensor("router.group.bias", .F32, [G], why: "router_groups=\(G)")
        }
        var hiddenW: [SafeTensorsFile.Tensor] = []
        var hiddenT: [SafeTensorsFile.Tensor] = []
        for l in 0..<config.expertHidden.count {
            let L = config.hiddenLevels(l)
            let why = "experts=\(E), expert_hidden[\(l)]=\(widths[l + 1]), input width \(reads[l])"
                + (L == 1 ? "" : ", expert_hidden_levels[\(l)]=\(L)")
            hiddenW.append(try st.tensor("experts.hidden.\(l).weight", .U8, [E, widths[l + 1], bytes(reads[l])], why: why))
            hiddenT.append(try st.tensor("experts.hidden.\(l).threshold", .I32,
                                         L == 1 ? [E, widths[l + 1]] : [E, L, widths[l + 1]], why: why))
        }
        let last = reads.last!
        let outW = try st.tensor("experts.out.weight", .U8, [E, C, bytes(last)], why: "experts=\(E), classes=\(C), input width \(last)")
        let outS = try st.tensor("experts.out.scale", .F32, [E, C], why: "experts=\(E), classes=\(C)")
        let outB = try st.tensor("experts.out.bias", .F32, [E, C], why: "experts=\(E), classes=\(C)")

        func int32s(_ t: SafeTensorsFile.Tensor) -> [Int32] {
            let p = st.pointer(t)
            return (0..<(t.byteCount / 4)).map { Int32(littleEndian: p.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        }
        func floats(_ t: SafeTensorsFile.Tensor) throws(ModelError) -> [Float] {
            let p = st.pointer(t)
            var out: [Float] = []
            out.reserveCapacity(t.byteCount / 4)
            for i in 0..<(t.byteCount / 4) {
                let v = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                if !v.isFinite {
                    throw ModelError(.tensor, "\(weightsPath): tensor \"\(t.name)\" holds a non-finite value at element \(i)")
                }
                out.append(v)
            }
            return out
        }

        // Everything that can throw happens before any weight storage is allocated (nothing leaks on error).
        routerScale = try floats(routerS)
        routerBias = try floats(routerB)
        groupScale = try groupS.map(floats) ?? []
        groupBias = try groupB.map(floats) ?? []
        outScale = try floats(outS)
        outBias = try floats(outB)
        stemThreshold = int32s(stemT)
        stem = conv?.weightBits == 2
            ? PackedMatrix.loadTwoBit(source: st.pointer(stemW), rows: intRows, taps: conv!.taps, owned: &owned)
            : PackedMatrix.load(source: st.pointer(stemW), rows: intRows, bits: D, owned: &owned)
        if let w = conv2W, let t = conv2T, let g2 = conv2 {
            let rows = PackedMatrix.load(source: st.pointer(w), rows: g2.channels, bits: g2.taps, owned: &owned)
            conv2Rows = rows
            conv2MaxPop = int32s(t).map { maxPopcount(bits: g2.taps, threshold: $0) }
            conv2Blocks = InterleavedMatrix(rows, parts: 1, thresholds: (xnor, conv2MaxPop), owned: &owned)
        } else {
            conv2Rows = nil
            conv2Blocks = nil
            conv2MaxPop = []
        }
        if let w = binaryW, let t = binaryT, conv != nil {
            let rows = PackedMatrix.load(source: st.pointer(w), rows: config.stemWidth, bits: frontFeatures, owned: &owned)
            binaryStemRows = rows
            binaryStemMaxPop = int32s(t).map { maxPopcount(bits: frontFeatures, threshold: $0) }
            binaryStem = InterleavedMatrix(rows, parts: 1, thresholds: (xnor, binaryStemMaxPop), owned: &owned)
        } else {
            binaryStemRows = nil
            binaryStem = nil
            binaryStemMaxPop = []
        }
        router = PackedMatrix.load(source: st.pointer(routerW), rows: E, bits: S, owned: &owned)
        var hidden: [PackedMatrix] = []
        var maxPops: [[Int32]] = []
        // a layer after a 2-level one reads its input with each level's bits starting on a word, as the engine
        // holds that activation (PackedMatrix.load(levels:)); `[E, L, H]` thresholds keep their order
        func readerLevels(_ l: Int) -> (unit: Int, levels: Int) {
            l == 0 ? (S, 1) : (widths[l], config.hiddenLevels(l - 1))
        }
        for l in 0..<config.expertHidden.count {
            let (unit, levels) = readerLevels(l)
            hidden.append(PackedMatrix.load(source: st.pointer(hiddenW[l]), rows: E * widths[l + 1], bits: reads[l],
                                            unit: unit, levels: levels, owned: &owned))
            let k = reads[l]
            maxPops.append(int32s(hiddenT[l]).map { maxPopcount(bits: k, threshold: $0) })
        }
        self.hidden = hidden
        self.hiddenMaxPop = maxPops
        let (outUnit, outLevels) = readerLevels(config.expertHidden.count)
        output = PackedMatrix.load(source: st.pointer(outW), rows: E * C, bits: last, unit: outUnit, levels: outLevels,
                                   owned: &owned)
        routerBlocks = InterleavedMatrix(router, parts: config.routerGroups ?? 1, owned: &owned)
        if let w = groupW, let G = config.routerGroups {
            let rows = PackedMatrix.load(source: st.pointer(w), rows: G, bits: S, owned: &owned)
            groupRouter = rows
            groupBlocks = InterleavedMatrix(rows, parts: 1, owned: &owned)
        } else {
            groupRouter = nil
            groupBlocks = nil
        }
        hiddenBlocks = hidden.indices.map {
            InterleavedMatrix(hidden[$0], parts: E, thresholds: (xnor, maxPops[$0]), levels: config.hiddenLevels($0),
                              owned: &owned)
        }
        outputBlocks = InterleavedMatrix(output, parts: E, owned: &owned)
        let chosen = stemKernel == .automatic
            ? StemChoice.fastest(config: config, stem: stem, convAlgorithm: convAlgorithm)
            : (large: stemKernel, small: stemKernel)
        self.stemKernel = chosen.large
        stemKernelSmallBatch = chosen.small
        var stemBytes = 0
        if let g = conv, let (kind, name) = try ConvFront.kind(for: chosen.large, g, convAlgorithm) {
            // a conv front runs image by image with one kernel (the small-batch choice is the same)
            let front = ConvFront(kind: kind, name: name, geometry: g, filters: stem, thresholds: stemThreshold,
                                  owned: &owned)
            convFront = front
            stemBytes += front.byteCount
        } else {
            if convAlgorithm != .automatic, conv != nil {
                throw ModelError(.config, "BITFLEET_CONV_KERNEL=\(convAlgorithm.rawValue): the \(chosen.large.rawValue) "
                    + "stem kernel runs this model's conv as windows, not with a conv kernel of its own")
            }
            convFront = nil
        }
        let kernels = convFront == nil ? [chosen.large, chosen.small] : []
        if kernels.contains(.lookup) || kernels.contains(.lookupAVX512) {
            let lookup = StemLookupWeights(stem: stem, owned: &owned)
            stemLookup = lookup
            stemBytes += lookup.byteCount
        } else {
            stemLookup = nil
        }
        if kernels.contains(.vnni) || kernels.contains(.amx) {
            let count = bf_stem_int8_bytes(intRows, D)
            let storage = UnsafeMutableRawPointer.allocate(byteCount: max(1, count), alignment: 64)
            bf_stem_int8_pack(stem.base, intRows, D, storage.assumingMemoryBound(to: UInt8.self))
            owned.append(storage)
            stemInt8 = UnsafePointer(storage.assumingMemoryBound(to: UInt8.self))
            stemBytes += count
        } else {
            stemInt8 = nil
        }
        // the lookup and int8 kernels write whole 16-row blocks
        stemLd = stemLookup == nil && stemInt8 == nil ? intRows : (intRows + 15) / 16 * 16
        self.owned = owned
        repackedBytes = ([stem, router, output] + hidden + [binaryStemRows, groupRouter, conv2Rows].compactMap { $0 })
            .reduce(0) { $0 + $1.ownedBytes }
        privateBytes = repackedBytes + stemBytes
            + ([routerBlocks, outputBlocks] + hiddenBlocks + [binaryStem, groupBlocks, conv2Blocks].compactMap { $0 })
                .reduce(0) { $0 + $1.byteCount }
    }

    /// `%XX` escapes of a file URI path decoded (invalid escapes are kept as they are).
    static func percentDecoded(_ s: String) -> String {
        let bytes = Array(s.utf8)
        var out: [UInt8] = []
        var i = 0
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 65...70: return c - 55
            case 97...102: return c - 87
            default: return nil
            }
        }
        while i < bytes.count {
            if bytes[i] == 37, i + 2 < bytes.count, let h = hex(bytes[i + 1]), let l = hex(bytes[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: - Inference

    /// Samples per micro-batch: routed and grouped together, so experts see groups of useful size.
    static let maxMicroBatch = 256
    /// Samples whose second-conv windows are gathered and thresholded together (their windows stay in L2).
    static let conv2Block = 32

    /// Micro-batch size: up to 256 samples, fewer when one sample's working memory is large (very wide layers),
    /// so a thread's scratch stays under 64 MiB.
    var microBatch: Int {
        let c = config
        let wd = (c.inputFeatures + 63) / 64, ws = (c.representationWidth + 63) / 64
        let maxWords = c.expertActivationWords.max()!
        let perSample = c.inputBitPlanes * wd * 8 + c.representationWidth * 4 + 8 + 2 * ws * 8 + c.experts * 8 + c.topK * 12
            + maxWords * 16 + c.classes.count * 4 + c.topK * c.classes.count * 4
        return max(1, min(Self.maxMicroBatch, (64 << 20) / max(1, perSample)))
    }

    /// Runs the model over `count` samples (row-major `count × input_features` uint8 values).
    /// With `threads > 1` the batch is split across the shared thread pool.
    public func predict(samples: [UInt8], count: Int, topClasses: Int = 3, threads: Int = 1) throws -> InferenceResult {
        try samples.withUnsafeBufferPointer { x in
            try predict(samples: x, count: count, topClasses: topClasses, threads: threads)
        }
    }

    /// `predict` over caller-owned memory (no copy of the input), e.g. a decoded .npy body.
    public func predict(samples: UnsafeBufferPointer<UInt8>, count: Int, topClasses: Int = 3, threads: Int = 1) throws -> InferenceResult {
        try checkInput(samples.count, count)
        let C = config.classes.count
        var logits = [Float](repeating: 0, count: count * C)
        var probs = [Float](repeating: 0, count: count * C)
        var activations = [Int](repeating: 0, count: config.experts)
        var experts = [Int32](repeating: 0, count: count * config.topK)
        let k = max(0, min(topClasses, C))
        var top = [Int32](repeating: 0, count: count * k)
        if count > 0, let x = samples.baseAddress {
            logits.withUnsafeMutableBufferPointer { lg in
                probs.withUnsafeMutableBufferPointer { pr in
                    experts.withUnsafeMutableBufferPointer { ex in
                        activations.withUnsafeMutableBufferPointer { act in
                            top.withUnsafeMutableBufferPointer { tp in
                                let p = SendablePointer(UnsafePointer(pr.baseAddress!))
                                let t = SendablePointer(tp.baseAddress)
                                // each chunk of the forward pass ranks its own samples' classes as soon as it has them
                                // (a second parallel round for the ranking cost a second hand-off between threads)
                                run(x: x, count: count, threads: threads,
                                    outputs: Outputs(logits: lg.baseAddress!, probabilities: pr.baseAddress!, experts: ex.baseAddress),
                                    trace: nil, activations: act.baseAddress!) { range, _ in
                                        guard k > 0, let out = t.pointer else { return }
                                        for i in range { Self.rank(p.pointer + i * C, C, k, into: out + i * k) }
                                    }
                            }
                        }
                    }
                }
            }
        }
        var result = InferenceResult(
            logits: logits, ranked: RankedClasses(indices: top, perSample: k, probabilities: probs, labels: config.classes),
            stats: InferenceStats(samples: count, binaryOps: count * config.binaryMACsPerSample, expertActivations: activations))
        result.experts = experts
        result.topK = config.topK
        return result
    }

    /// Like `predict`, returning every intermediate value (for tests against the numpy reference).
    public func trace(samples: [UInt8], count: Int, threads: Int = 1) throws -> InferenceTrace {
        try checkInput(samples.count, count)
        let C = config.classes.count, S = config.representationWidth, E = config.experts, K = config.topK
        var t = InferenceTrace(
            stemPreActivations: [Int](repeating: 0, count: count * S), stemBits: [Bool](repeating: false, count: count * S),
            routerScores: [Float](repeating: 0, count: count * E), experts: [Int](repeating: 0, count: count * K),
            gates: [Float](repeating: 0, count: count * K), logits: [Float](repeating: 0, count: count * C),
            probabilities: [Float](repeating: 0, count: count * C))
        let F = conv == nil ? 0 : config.stemInputWidth
        t.convBits = [Bool](repeating: false, count: count * F)
        let G = config.routerGroups ?? 0
        t.routerGroupScores = [Float](repeating: 0, count: count * G)
        t.routerGroups = [Int](repeating: 0, count: G > 0 ? count : 0)
        var activations = [Int](repeating: 0, count: E)
        if count == 0 { return t }
        samples.withUnsafeBufferPointer { x in
            t.routerGroupScores.withUnsafeMutableBufferPointer { groupScores in
            t.routerGroups.withUnsafeMutableBufferPointer { groups in
            t.convBits.withUnsafeMutableBufferPointer { features in
            t.stemPreActivations.withUnsafeMutableBufferPointer { pre in
            t.stemBits.withUnsafeMutableBufferPointer { bits in
            t.routerScores.withUnsafeMutableBufferPointer { rs in
            t.experts.withUnsafeMutableBufferPointer { ex in
            t.gates.withUnsafeMutableBufferPointer { g in
            t.logits.withUnsafeMutableBufferPointer { lg in
            t.probabilities.withUnsafeMutableBufferPointer { pr in
            activations.withUnsafeMutableBufferPointer { act in
                var tr = TraceOutputs(stemPre: pre.baseAddress!, stemBits: bits.baseAddress!, routerScores: rs.baseAddress!,
                                      experts: ex.baseAddress!, gates: g.baseAddress!, features: F > 0 ? features.baseAddress : nil)
                if G > 0 {
                    tr.groupScores = groupScores.baseAddress
                    tr.groups = groups.baseAddress
                }
                run(x: x.baseAddress!, count: count, threads: threads,
                    outputs: Outputs(logits: lg.baseAddress!, probabilities: pr.baseAddress!, experts: nil), trace: tr,
                    activations: act.baseAddress!)
            }}}}}}}}}}}
        }
        return t
    }

    private func checkInput(_ length: Int, _ count: Int) throws(ModelError) {
        if count < 0 { throw ModelError(.input, "sample count must be >= 0 (got \(count))") }
        let want = count.multipliedReportingOverflow(by: config.inputFeatures)
        if want.overflow || length != want.partialValue {
            throw ModelError(.input, "model \(config.name): expected \(count) samples × \(config.inputFeatures) features = \(want.partialValue) input bytes, got \(length)")
        }
    }

    /// The `k` (≤ `C`) most probable of `C` classes at `p`, best first, into `out`, ties to the lower class index
    /// and NaN last: the router's top-k rule, so its kernel (one vector for up to 16 classes) ranks them.
    @inline(__always)
    static func rank(_ p: UnsafePointer<Float>, _ C: Int, _ k: Int, into best: UnsafeMutablePointer<Int32>) {
        bf_select_topk(p, C, k, best)
    }

    struct Outputs {
        let logits: UnsafeMutablePointer<Float>
        let probabilities: UnsafeMutablePointer<Float>
        /// `samples × top_k` selected experts, best first (nil: not wanted).
        let experts: UnsafeMutablePointer<Int32>?
    }

    struct TraceOutputs {
        let stemPre: UnsafeMutablePointer<Int>
        let stemBits: UnsafeMutablePointer<Bool>
        let routerScores: UnsafeMutablePointer<Float>
        let experts: UnsafeMutablePointer<Int>
        let gates: UnsafeMutablePointer<Float>
        /// A conv model's pooled features (`samples × F`, true where +1).
        let features: UnsafeMutablePointer<Bool>?
        /// A two-level router's group scores (`samples × G`) and chosen group per sample.
        var groupScores: UnsafeMutablePointer<Float>? = nil
        var groups: UnsafeMutablePointer<Int>? = nil
    }

    private struct Shared: @unchecked Sendable {
        let x: UnsafePointer<UInt8>
        let outputs: Outputs
        let trace: TraceOutputs?
        let chunkActivations: UnsafeMutablePointer<Int>
        /// Seconds each chunk took (written by the thread that ran it).
        let seconds: UnsafeMutablePointer<Double>
    }

    /// The forward pass of `count` samples in up to `threads` chunks on the shared pool; `after(range, chunk)` runs on
    /// the chunk's thread once the chunk's outputs are written (a chunk is a range of samples in order).
    private func run(x: UnsafePointer<UInt8>, count: Int, threads: Int, outputs: Outputs, trace: TraceOutputs?,
                     activations: UnsafeMutablePointer<Int>, after: ((Range<Int>, Int) -> Void)? = nil) {
        if count == 0 { return }
        let E = config.experts
        let pool = ThreadPool.shared
        let minPerChunk = 16
        let chunks = max(1, min(threads, pool.width, (count + minPerChunk - 1) / minPerChunk))
        if chunks == 1 {
            forwardRange(x: x, range: 0..<count, outputs: outputs, trace: trace, activations: activations)
            after?(0..<count, 0)
            return
        }
        let perChunk = UnsafeMutablePointer<Int>.allocate(capacity: chunks * E)
        perChunk.initialize(repeating: 0, count: chunks * E)
        defer { perChunk.deallocate() }
        let seconds = UnsafeMutablePointer<Double>.allocate(capacity: chunks)
        seconds.initialize(repeating: 0, count: chunks)
        defer { seconds.deallocate() }
        let shared = Shared(x: x, outputs: outputs, trace: trace, chunkActivations: perChunk, seconds: seconds)
        let bounds = Self.chunkBounds(count: count, chunks: chunks, rates: chunkRates.withLock { $0 },
                                      minPerChunk: minPerChunk)
        pool.parallelFor(chunks) { c in
            let lo = bounds[c], hi = bounds[c + 1]
            if lo < hi {
                let start = bf_monotonic_seconds()
                self.forwardRange(x: shared.x, range: lo..<hi, outputs: shared.outputs, trace: shared.trace,
                                  activations: shared.chunkActivations + c * E)
                after?(lo..<hi, c)
                shared.seconds[c] = bf_monotonic_seconds() - start
            }
        }
        for c in 0..<chunks {
            for e in 0..<E { activations[e] += perChunk[c * E + e] }
        }
        chunkRates.withLock { rates in
            if rates.count != chunks { rates = [Double](repeating: 0, count: chunks) }
            for c in 0..<chunks where seconds[c] > 0 {
                let rate = Double(bounds[c + 1] - bounds[c]) / seconds[c]
                rates[c] = rates[c] > 0 ? 0.7 * rates[c] + 0.3 * rate : rate
            }
        }
    }

    /// Where `count` samples are cut into `chunks` ranges (`chunks + 1` bounds): in proportion to the chunk
    /// positions' recent samples/s where all are known, else evenly. The cores of a shared host do not run at one
    /// speed (two single-thread processes on this project's 2-vCPU VMs measured 220 000 and 410 000 samples/s side
    /// by side), and an even split makes the faster core wait for the slower one. Cuts fall on multiples of 16
    /// samples (the AMX stem's tiles); every chunk keeps at least `1 / (2·chunks)` of the batch and `minPerChunk`
    /// samples, so one bad measurement cannot starve a thread (and every position keeps being measured).
    static func chunkBounds(count: Int, chunks: Int, rates: [Double], minPerChunk: Int) -> [Int] {
        let even = (0...chunks).map { min(count, $0 * ((count + chunks - 1) / chunks)) }
        guard chunks > 1, rates.count == chunks, rates.allSatisfy({ $0 > 0 && $0.isFinite }) else { return even }
        let total = rates.reduce(0, +)
        let floor = max(minPerChunk, count / (2 * chunks))
        var bounds = [0]
        var cumulative = 0.0
        for c in 0..<(chunks - 1) {
            cumulative += rates[c]
            var cut = Int((Double(count) * cumulative / total / 16).rounded()) * 16
            cut = max(cut, bounds[c] + floor)                       // this chunk keeps its floor
            cut = min(cut, count - (chunks - 1 - c) * floor)       // and leaves the rest theirs
            guard cut - bounds[c] >= floor, count - cut >= (chunks - 1 - c) * floor else { return even }
            bounds.append(cut)
        }
        bounds.append(count)
        return bounds
    }

    /// A key for the calling thread (`pthread_self`; an integer on Linux, a pointer on Darwin).
    private static var currentThreadKey: UInt {
        #if canImport(Darwin)
        UInt(bitPattern: pthread_self())
        #else
        UInt(pthread_self())
        #endif
    }

    /// Forward pass of samples `range`, micro-batch by micro-batch, on the calling thread.
    private func forwardRange(x: UnsafePointer<UInt8>, range: Range<Int>, outputs: Outputs, trace: TraceOutputs?,
                              activations: UnsafeMutablePointer<Int>) {
        let mb = microBatch
        // working memory is reused across calls (allocating and faulting in ~1.5 MB per call costs more than a
        // small batch's inference)
        let thread = Self.currentThreadKey
        let scratch = scratchPool.withLock { $0.removeValue(forKey: thread) }
            ?? Scratch(config: config, capacity: mb, stemLd: stemLd, tableBytes: stemLookup?.tableBytes ?? 0,
                       int8Bytes: stemInt8 == nil ? 0 : (stem.bits + 63) / 64 * 64, integerLayer: convFront == nil)
        defer {
            let spare = scratchPool.withLock { pool -> Scratch? in
                // threads come and go (tasks, tests): keep at most 64, the thread's own always
                if pool.count >= 64, let any = pool.first(where: { $0.key != thread }) {
                    pool.removeValue(forKey: any.key)
                    pool[thread] = scratch
                    return any.value
                }
                return pool.updateValue(scratch, forKey: thread)
            }
            spare?.deallocate()
        }
        var start = range.lowerBound
        while start < range.upperBound {
            let n = min(mb, range.upperBound - start)
            forwardMicroBatch(x: x, first: start, n: n, s: scratch, outputs: outputs, trace: trace, activations: activations)
            start += n
        }
    }

    /// Per-thread working memory for one micro-batch.
    final class Scratch: @unchecked Sendable {
        let capacity: Int
        let planes: UnsafeMutablePointer<UInt64>      // [n*P × Wd]
        let stemAcc: UnsafeMutablePointer<Int32>      // [n × stemLd]  Σ_k q_k·[w_k = +1]
        let tables: UnsafeMutablePointer<UInt8>       // [n × tableBytes] lookup tables (lookup stem kernel)
        let q: UnsafeMutablePointer<UInt8>            // [n₃₂ × kpad] int8 activations (VNNI/AMX stem kernels)
        let sumQ: UnsafeMutablePointer<Int>           // [n]
        let h: UnsafeMutablePointer<UInt64>           // [n × Ws]
        let routerPops: UnsafeMutablePointer<Int32>   // [n × E]
        let scores: UnsafeMutablePointer<Float>       // [n × E]
        let selected: UnsafeMutablePointer<Int32>     // [n × K]
        let gates: UnsafeMutablePointer<Float>        // [n × K]
        let groupStart: UnsafeMutablePointer<Int>     // [E + 1]
        let groupItems: UnsafeMutablePointer<Int32>   // [n × K] (sample * K + slot), grouped by expert
        let routerGroupPops: UnsafeMutablePointer<Int32>    // [n × G] two-level router: group popcounts
        let routerGroupScores: UnsafeMutablePointer<Float>  // [n × G]
        let routerGroupOf: UnsafeMutablePointer<Int32>      // [n] the chosen group
        let routerGroupOrder: UnsafeMutablePointer<Int32>   // [n] samples grouped by router group
        let routerGroupStart: UnsafeMutablePointer<Int>     // [G + 1]
        let actA: UnsafeMutablePointer<UInt64>        // [n × maxWords]
        let actB: UnsafeMutablePointer<UInt64>
        let pops: UnsafeMutablePointer<Int32>         // [n × C]
        let z: UnsafeMutablePointer<Float>            // [n × K × C]
        let patches: UnsafeMutablePointer<UInt8>      // conv: [positions × windowTaps + 8] one image's windows
        let convWork: UnsafeMutablePointer<UInt8>     // conv: the padded image and its row sums
        let convBits: UnsafeMutablePointer<UInt64>    // conv: [positions] thresholded filters, bit c = channel c
        let features: UnsafeMutablePointer<UInt64>    // conv with a stem: [n × Wf] pooled features
        let frontFeatures: UnsafeMutablePointer<UInt64>   // conv2: [n × Wf1] the conv front's pooled features
        let conv2Rows: UnsafeMutablePointer<UInt64>       // conv2: [block × positions × ceil(taps/64)] windows
        let conv2Bits: UnsafeMutablePointer<UInt64>       // conv2: [block × positions × ceil(channels/64)] bits
        private var all: [UnsafeMutableRawPointer] = []

        /// `integerLayer` false: a direct conv kernel does the model's integer layer, so its windows, planes, tables
        /// and accumulators are not allocated.
        init(config: ModelConfig, capacity n: Int, stemLd: Int, tableBytes: Int, int8Bytes: Int, integerLayer: Bool) {
            capacity = n
            let P = config.inputBitPlanes, E = config.experts
            let K = config.topK, C = config.classes.count
            let g = config.convGeometry
            // the integer layer's rows per pass: a block of samples, or one image's conv positions
            let D = g?.windowTaps ?? config.inputFeatures, S = g?.channels ?? config.stemWidth
            let ws = (config.representationWidth + 63) / 64
            let wd = (D + 63) / 64
            let maxWords = config.expertActivationWords.max()!
            var all: [UnsafeMutableRawPointer] = []
            func alloc<T>(_ type: T.Type, _ count: Int) -> UnsafeMutablePointer<T> {
                let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * MemoryLayout<T>.stride, alignment: 64)
                all.append(raw)
                return raw.bindMemory(to: T.self, capacity: max(1, count))
            }
            let block = g?.positions ?? min(n, BinaryMoEModel.stemBlock)   // the stem works on blocks of samples
            let rows = integerLayer ? block : 0
            planes = alloc(UInt64.self, tableBytes > 0 ? 0 : rows * P * wd)
            // the AMX kernel reads and writes whole 16-sample tiles (pairs of them): rows padded to 32
            let padded = (rows + 31) / 32 * 32
            stemAcc = alloc(Int32.self, padded * max(S, stemLd))
            tables = alloc(UInt8.self, rows * tableBytes)
            q = alloc(UInt8.self, padded * int8Bytes + 8)
            sumQ = alloc(Int.self, max(n, rows))
            h = alloc(UInt64.self, n * ws)
            routerPops = alloc(Int32.self, n * E)
            scores = alloc(Float.self, n * E)
            selected = alloc(Int32.self, n * K)
            gates = alloc(Float.self, n * K)
            groupStart = alloc(Int.self, E + 1)
            groupItems = alloc(Int32.self, n * K)
            let G = config.routerGroups ?? 0
            routerGroupPops = alloc(Int32.self, n * G)
            routerGroupScores = alloc(Float.self, n * G)
            routerGroupOf = alloc(Int32.self, G > 0 ? n : 0)
            routerGroupOrder = alloc(Int32.self, G > 0 ? n : 0)
            routerGroupStart = alloc(Int.self, G + 1)
            actA = alloc(UInt64.self, n * maxWords)
            actB = alloc(UInt64.self, n * maxWords)
            pops = alloc(Int32.self, n * C)
            z = alloc(Float.self, n * K * C)
            patches = alloc(UInt8.self, g.map { integerLayer ? $0.positions * $0.windowTaps + 8 : 0 } ?? 0)
            convWork = alloc(UInt8.self, g.map {
                bf_conv_work_bytes($0.height, $0.width, $0.kernel, $0.padding, $0.outWidth)
            } ?? 0)
            convBits = alloc(UInt64.self, g?.positions ?? 0)
            features = alloc(UInt64.self, g != nil && config.stemWidth > 0 ? n * ((config.stemInputWidth + 63) / 64) : 0)
            let g2 = config.conv2Geometry
            frontFeatures = alloc(UInt64.self, g2 != nil ? n * ((g!.features + 63) / 64) : 0)
            let block2 = min(n, BinaryMoEModel.conv2Block)
            conv2Rows = alloc(UInt64.self, g2.map { block2 * $0.positions * (($0.taps + 63) / 64) } ?? 0)
            conv2Bits = alloc(UInt64.self, g2.map { block2 * $0.positions * (($0.channels + 63) / 64) } ?? 0)
            self.all = all
        }

        func deallocate() {
            for p in all { p.deallocate() }
            all = []
        }
    }

    /// Top bits of every feature as `P` bit planes: `planes[(i*P + b) × Wd]`, bit j = bit b of `x_ij >> (8 − P)`.
    @inline(__always)
    private func buildPlanes(x: UnsafePointer<UInt8>, n: Int, planes: UnsafeMutablePointer<UInt64>, sumQ: UnsafeMutablePointer<Int>) {
        let D = stem.bits, P = config.inputBitPlanes
        let wd = (D + 63) / 64
        let shift = UInt64(8 - P)
        let byteMask: UInt64 = 0x0101_0101_0101_0101 &* (0xFF >> shift)
        planes.initialize(repeating: 0, count: n * P * wd)
        let fullGroups = D / 8
        for i in 0..<n {
            let row = x + i * D
            let out = planes + i * P * wd
            var total = 0
            @inline(__always) func put(_ g: Int, _ v: UInt64) {
                // gather bit b of 8 bytes into one byte (multiply trick), for every plane b
                let q = (v &>> shift) & byteMask
                let word = g &>> 3, bitShift = UInt64(truncatingIfNeeded: (g & 7) &* 8)
                var dst = out + word
                for b in 0..<P {
                    let t = (q &>> UInt64(truncatingIfNeeded: b)) & 0x0101_0101_0101_0101
                    let bits = (t &* 0x0102_0408_1020_4080) &>> 56
                    dst.pointee |= bits &<< bitShift
                    dst += wd
                }
            }
            for g in 0..<fullGroups {
                put(g, UnsafeRawPointer(row + g * 8).loadUnaligned(as: UInt64.self).littleEndian)
            }
            if D % 8 != 0 {
                var v: UInt64 = 0
                for j in (fullGroups * 8)..<D { v |= UInt64(row[j]) << UInt64((j - fullGroups * 8) * 8) }
                put(fullGroups, v)
            }
            for b in 0..<P {
                var c = 0
                for w in 0..<wd { c &+= out[b * wd + w].nonzeroBitCount }
                total &+= c << b
            }
            sumQ[i] = total
        }
    }

    private func forwardMicroBatch(x: UnsafePointer<UInt8>, first: Int, n: Int, s: Scratch, outputs: Outputs,
                                   trace: TraceOutputs?, activations: UnsafeMutablePointer<Int>) {
        if conv != nil {
            convStage(x: x, first: first, n: n, s: s, trace: trace)
        } else {
            stemStage(x: x, first: first, n: n, s: s, trace: trace)
        }
        routerStage(first: first, n: n, s: s, trace: trace)
        if let experts = outputs.experts {
            (experts + first * config.topK).update(from: s.selected, count: n * config.topK)
        }
        expertStage(n: n, s: s, activations: activations)
        combineStage(first: first, n: n, s: s, outputs: outputs)
    }

    /// The integer input layer over `m` rows of `D` uint8 inputs at `xs` (a block of samples, or one image's conv
    /// patches): `s.stemAcc = Σ_k q_k·[w_k = +1]` (lookup tables, int8 dot products, or AND-popcount of every bit
    /// plane with the +1 weight bits: `Σ_b 2^b·pop_b`) and `sumQ = Σ q`, then bit j of `bits` row i (stride `ldBits`
    /// words) is `2·acc − Σ q ≥ t_j`. With `int8Ready` (int8 kernels only) the caller has already written the rows'
    /// int8 activations to `s.q` and their sums to `sumQ` (a conv front writes its windows there directly) and
    /// `xs` is not read.
    @inline(__always)
    private func integerLayer(xs: UnsafePointer<UInt8>, m: Int, kernel: StemKernel, s: Scratch,
                              sumQ: UnsafeMutablePointer<Int>, bits: UnsafeMutablePointer<UInt64>, ldBits: Int,
                              int8Ready: Bool = false) {
        let D = stem.bits, S = stem.rows, P = config.inputBitPlanes
        let ld = stemLd
        if let w = stemInt8, let code = kernel.int8Code {
            if !int8Ready { bf_stem_int8_activations(xs, m, D, Int32(8 - P), s.q, sumQ) }
            bf_stem_int8(code, s.q, m, D, w, (S + 15) / 16, s.stemAcc, ld)
        } else if kernel == .lookup || kernel == .lookupAVX512, let lookup = stemLookup {
            lookup.accumulate(x: xs, n: m, features: D, shift: 8 - P, tables: s.tables, sumQ: sumQ,
                              acc: s.stemAcc, ld: ld, wide: kernel == .lookupAVX512)
        } else {
            buildPlanes(x: xs, n: m, planes: s.planes, sumQ: sumQ)
            BinaryKernels.stemPopcounts(planes: s.planes, n: m, planeCount: P, weights: stem.base, m: S,
                                        words: stem.words, acc: s.stemAcc)
        }
        stemThreshold.withUnsafeBufferPointer { t in
            bf_stem_threshold(s.stemAcc, ld, m, S, sumQ, t.baseAddress!, bits, ldBits)
        }
    }

    /// Stem of a v1 model: the integer layer over blocks of samples, its bits are `h`.
    @inline(never)
    private func stemStage(x: UnsafePointer<UInt8>, first: Int, n: Int, s: Scratch, trace: TraceOutputs?) {
        let D = config.inputFeatures, S = config.stemWidth
        let ws = (S + 63) / 64
        let ld = stemLd
        let kernel = n < Self.smallBatch ? stemKernelSmallBatch : stemKernel
        // blocks of `stemBlock` samples: their int32 accumulators (256 KB for a 1024-wide stem) stay in L2 between
        // the kernel and the threshold, and the working set of a thread fits its core's L2
        var i0 = 0
        while i0 < n {
            let m = min(Self.stemBlock, n - i0)
            let sumQ = s.sumQ + i0
            integerLayer(xs: x + (first + i0) * D, m: m, kernel: kernel, s: s, sumQ: sumQ, bits: s.h + i0 * ws, ldBits: ws)
            if let tr = trace {
                stemThreshold.withUnsafeBufferPointer { t in
                    for i in 0..<m {
                        let q = sumQ[i]
                        let acc = s.stemAcc + i * ld
                        let row = (first + i0 + i) * S
                        for j in 0..<S {
                            let a = 2 * Int(acc[j]) - q
                            tr.stemPre[row + j] = a
                            tr.stemBits[row + j] = a >= Int(t[j])
                        }
                    }
                }
            }
            i0 += m
        }
    }

    /// Conv front of a v2 model, image by image: the direct conv kernel (`bf_conv_direct`: filters, thresholds and
    /// OR-pooling in one pass), or the windows (`bf_conv_patches`) through the integer layer, whose bits are
    /// OR-pooled in place (`bf_conv_pool`); either way the pooled cells are laid out as features (`bf_conv_pack`);
    /// then the binary stem over the features gives `h`, or, without a stem, the features are `h`.
    @inline(never)
    private func convStage(x: UnsafePointer<UInt8>, first: Int, n: Int, s: Scratch, trace: TraceOutputs?) {
        guard let g = conv else { return }
        let D = config.inputFeatures, F = config.stemInputWidth, wf = (F + 63) / 64
        let out = binaryStem == nil ? s.h : s.features   // both rows of wf words (h is the features without a stem)
        // the front's own features: `out` itself, or with a second conv layer its input (rows of wf1 words)
        let wf1 = (g.features + 63) / 64
        let front = conv2 == nil ? out : s.frontFeatures
        let kernel = stemKernel
        let shift = Int32(8 - config.inputBitPlanes)
        for i in 0..<n {
            let xi = x + (first + i) * D
            if let f = convFront {
                // filters, thresholds and bits in registers, OR-pooled as they come; then only the pooled words are
                // laid out as features
                f.run(xi, g, shift: shift, work: s.convWork, pooled: s.convBits)
                bf_conv_pack(s.convBits, g.pooledHeight * g.pooledWidth, g.channels, front + i * wf1, wf1)
                continue
            } else if stemInt8 != nil, kernel.int8Code != nil {
                // the windows go straight into the int8 kernels' activation rows (one pass, no patch copy)
                let kpad = (g.windowTaps + 63) / 64 * 64
                bf_conv_activations(xi, g.height, g.width, g.kernel, g.stride, g.padding, g.outHeight, g.outWidth,
                                    g.windowCopies, shift, s.convWork, s.q, kpad, s.sumQ)
                integerLayer(xs: xi, m: g.positions, kernel: kernel, s: s, sumQ: s.sumQ, bits: s.convBits, ldBits: 1,
                             int8Ready: true)
            } else {
                bf_conv_patches(xi, g.height, g.width, g.kernel, g.stride, g.padding, g.outHeight, g.outWidth,
                                g.windowCopies, s.convWork, s.patches)
                integerLayer(xs: s.patches, m: g.positions, kernel: kernel, s: s, sumQ: s.sumQ, bits: s.convBits, ldBits: 1)
            }
            bf_conv_pool(s.convBits, g.outHeight, g.outWidth, g.pool)
            bf_conv_pack(s.convBits, g.pooledHeight * g.pooledWidth, g.channels, front + i * wf1, wf1)
        }
        if let g2 = conv2, let blocks = conv2Blocks {
            // the second conv: each position's window bits as a row, one XNOR product with thresholds in registers
            // for a block of samples, then OR-pooled and laid out as features
            let ldr = (g2.taps + 63) / 64, wb = (g2.channels + 63) / 64
            conv2MaxPop.withUnsafeBufferPointer { mp in
                var i0 = 0
                while i0 < n {
                    let m = min(Self.conv2Block, n - i0)
                    bf_conv2_windows(front + i0 * wf1, wf1, m, g2.height, g2.width, g2.inChannels, g2.kernel, g2.stride,
                                     g2.outHeight, g2.outWidth, s.conv2Rows, ldr)
                    bf_xnor_threshold_lut(xnorPath.code, s.conv2Rows, ldr, m * g2.positions, blocks.part(0),
                                          blocks.lookupPart(0), g2.channels, ldr, mp.baseAddress!, 1, s.conv2Bits, wb, 0, nil, 0)
                    bf_conv2_pool(s.conv2Bits, wb, m, g2.outHeight, g2.outWidth, g2.pool, g2.channels, out + i0 * wf, wf)
                    i0 += m
                }
            }
        }
        @inline(__always) func bit(_ p: UnsafePointer<UInt64>, _ j: Int) -> Bool { (p[j >> 6] >> UInt64(j & 63)) & 1 == 1 }
        if let tr = trace, let features = tr.features {
            for i in 0..<n {
                for j in 0..<F { features[(first + i) * F + j] = bit(out + i * wf, j) }
            }
        }
        guard let blocks = binaryStem else {
            if let tr = trace {
                for i in 0..<n {
                    for j in 0..<F {
                        let on = bit(out + i * wf, j)
                        tr.stemPre[(first + i) * F + j] = on ? 1 : -1
                        tr.stemBits[(first + i) * F + j] = on
                    }
                }
            }
            return
        }
        let S = config.stemWidth, ws = (S + 63) / 64
        binaryStemMaxPop.withUnsafeBufferPointer { mp in
            bf_xnor_threshold_lut(xnorPath.code, s.features, wf, n, blocks.part(0), blocks.lookupPart(0), S, wf,
                                  mp.baseAddress!, 1, s.h, ws, 0, nil, 0)
        }
        if let tr = trace {
            let pops = UnsafeMutablePointer<Int32>.allocate(capacity: n * S)
            defer { pops.deallocate() }
            bf_xnor_popcounts(xnorPath.code, s.features, wf, n, blocks.part(0), S, wf, pops, S)
            for i in 0..<n {
                for j in 0..<S {
                    tr.stemPre[(first + i) * S + j] = F - 2 * Int(pops[i * S + j])
                    tr.stemBits[(first + i) * S + j] = bit(s.h + i * ws, j)
                }
            }
        }
    }

    /// Router: `r_e = scale_e · (S − 2·pop) + bias_e`, top-k (ties to the lower index), softmax gates. A two-level
    /// router (format v3) scores the groups the same way, takes the best, and scores only that group's experts.
    @inline(never)
    private func routerStage(first: Int, n: Int, s: Scratch, trace: TraceOutputs?) {
        let S = config.representationWidth, E = config.experts, K = config.topK
        let ws = (S + 63) / 64
        let S32 = Int32(truncatingIfNeeded: S)
        if let G = config.routerGroups, let blocks = groupBlocks {
            groupedRouter(G: G, blocks: blocks, first: first, n: n, s: s, trace: trace)
        } else {
            bf_xnor_popcounts(xnorPath.code, s.h, ws, n, routerBlocks.part(0), E, ws, s.routerPops, E)
            routerScale.withUnsafeBufferPointer { scale in
                routerBias.withUnsafeBufferPointer { bias in
                    for i in 0..<n {
                        // int32 → float32 (exact: |d| ≤ S < 2^24), then the reference's mul and add, unfused
                        bf_router_select(s.routerPops + i * E, E, S32, scale.baseAddress!, bias.baseAddress!,
                                         s.scores + i * E, K, s.selected + i * K)
                    }
                }
            }
        }
        for i in 0..<n {
            let r = s.scores + i * E
            let g = s.gates + i * K
            let m = r[Int(s.selected[i * K])]
            var sum: Float = 0
            for slot in 0..<K {
                let v = expf(r[Int(s.selected[i * K + slot])] - m)
                g[slot] = v
                sum += v
            }
            for slot in 0..<K { g[slot] = g[slot] / sum }
            if let tr = trace {
                (tr.routerScores + (first + i) * E).update(from: r, count: E)
                for slot in 0..<K {
                    tr.experts[(first + i) * K + slot] = Int(s.selected[i * K + slot])
                    tr.gates[(first + i) * K + slot] = g[slot]
                }
            }
        }
    }

    /// The two-level router: group scores for every sample and the best group (the top-1 rule), the samples sorted
    /// by group, then per group one XNOR product of its samples with its `E / G` experts and their top k. Scores of
    /// experts outside a sample's group are not computed (−∞ in `s.scores`, which the trace shows).
    private func groupedRouter(G: Int, blocks: InterleavedMatrix, first: Int, n: Int, s: Scratch, trace: TraceOutputs?) {
        let S = config.representationWidth, E = config.experts, K = config.topK, EG = E / G
        let ws = (S + 63) / 64
        let S32 = Int32(truncatingIfNeeded: S)
        bf_xnor_popcounts(xnorPath.code, s.h, ws, n, blocks.part(0), G, ws, s.routerGroupPops, G)
        groupScale.withUnsafeBufferPointer { scale in
            groupBias.withUnsafeBufferPointer { bias in
                for i in 0..<n {
                    bf_router_select(s.routerGroupPops + i * G, G, S32, scale.baseAddress!, bias.baseAddress!,
                                     s.routerGroupScores + i * G, 1, s.routerGroupOf + i)
                }
            }
        }
        let start = s.routerGroupStart
        Self.countingSort(keys: s.routerGroupOf, count: n, buckets: G, start: start, order: s.routerGroupOrder)
        routerScale.withUnsafeBufferPointer { scale in
            routerBias.withUnsafeBufferPointer { bias in
                for j in 0..<G {
                    let lo = start[j], count = start[j + 1] - lo
                    if count == 0 { continue }
                    for r in 0..<count {
                        (s.actA + r * ws).update(from: s.h + Int(s.routerGroupOrder[lo + r]) * ws, count: ws)
                    }
                    bf_xnor_popcounts(xnorPath.code, s.actA, ws, count, routerBlocks.part(j), EG, ws, s.routerPops, EG)
                    for r in 0..<count {
                        let i = Int(s.routerGroupOrder[lo + r])
                        let row = s.scores + i * E
                        if trace != nil {
                            row.update(repeating: -.infinity, count: E)
                        }
                        bf_router_select(s.routerPops + r * EG, EG, S32, scale.baseAddress! + j * EG,
                                         bias.baseAddress! + j * EG, row + j * EG, K, s.selected + i * K)
                        for slot in 0..<K { s.selected[i * K + slot] += Int32(truncatingIfNeeded: j * EG) }
                    }
                }
            }
        }
        if let tr = trace {
            for i in 0..<n {
                tr.groups?[first + i] = Int(s.routerGroupOf[i])
                tr.groupScores.map { ($0 + (first + i) * G).update(from: s.routerGroupScores + i * G, count: G) }
            }
        }
    }

    /// Items `0..<count` ordered by their key (`keys[item]` in `0..<buckets`), stably: bucket `b` holds
    /// `order[start[b] ..< start[b + 1]]`. One pass to count, one to place (the experts' (sample, slot) pairs by
    /// expert, the samples by router group).
    @inline(__always)
    static func countingSort(keys: UnsafePointer<Int32>, count: Int, buckets: Int, start: UnsafeMutablePointer<Int>,
                             order: UnsafeMutablePointer<Int32>) {
        start.initialize(repeating: 0, count: buckets + 1)
        for item in 0..<count { start[Int(keys[item]) + 1] += 1 }
        for b in 0..<buckets { start[b + 1] += start[b] }
        for item in 0..<count {
            let b = Int(keys[item])
            // `start[b]` is advanced while filling and restored below.
            order[start[b]] = Int32(truncatingIfNeeded: item)
            start[b] += 1
        }
        for b in stride(from: buckets, to: 0, by: -1) { start[b] = start[b - 1] }
        start[0] = 0
    }

    /// Groups (sample, slot) pairs by expert with a counting sort, then runs one GEMM chain per expert.
    @inline(never)
    private func expertStage(n: Int, s: Scratch, activations: UnsafeMutablePointer<Int>) {
        let S = config.representationWidth, E = config.experts, K = config.topK, C = config.classes.count
        let ws = (S + 63) / 64
        let start = s.groupStart
        Self.countingSort(keys: s.selected, count: n * K, buckets: E, start: start, order: s.groupItems)

        let widths = config.expertWidths, actWords = config.expertActivationWords
        // with many experts, the next expert after e with samples (its first layer is prefetched while e runs)
        let prefetchNext = E >= Self.prefetchMinExperts
        var nextActive = 0
        for e in 0..<E {
            let lo = start[e], hi = start[e + 1]
            let g = hi - lo
            if g == 0 { continue }
            if prefetchNext && nextActive <= e {
                nextActive = e + 1
                while nextActive < E && start[nextActive + 1] == start[nextActive] { nextActive += 1 }
            }
            activations[e] += g
            // gather the group's stem bits
            for r in 0..<g {
                let sample = Int(s.groupItems[lo + r]) / K
                (s.actA + r * ws).update(from: s.h + sample * ws, count: ws)
            }
            var src = s.actA, dst = s.actB
            for l in 0..<hidden.count {
                let layer = hidden[l]
                let rows = widths[l + 1], levels = config.hiddenLevels(l)
                let inWords = layer.words, outWords = actWords[l + 1]
                let prefetch = prefetchNext && l == 0 && nextActive < E
                // a 2-level layer: `levels × rows` thresholds per expert, the second level's bits `outWords / 2`
                // words into each output row
                hiddenMaxPop[l].withUnsafeBufferPointer { mp in
                    bf_xnor_threshold_lut(xnorPath.code, src, inWords, g, hiddenBlocks[l].part(e),
                                          hiddenBlocks[l].lookupPart(e), rows, inWords,
                                          mp.baseAddress! + e * levels * rows, levels, dst, outWords, outWords / levels,
                                          prefetch ? hiddenBlocks[0].part(nextActive) : nil,
                                          prefetch ? hiddenBlocks[0].partWords * 8 : 0)
                }
                swap(&src, &dst)
            }
            let last = config.expertInputWidths.last!
            bf_xnor_popcounts(xnorPath.code, src, output.words, g, outputBlocks.part(e), C, output.words, s.pops, C)
            outScale.withUnsafeBufferPointer { scale in
                outBias.withUnsafeBufferPointer { bias in
                    for r in 0..<g {
                        let item = Int(s.groupItems[lo + r])
                        let z = s.z + item * C
                        let pops = s.pops + r * C
                        for c in 0..<C {
                            let d = Float(last - 2 * Int(pops[c]))
                            let prod = scale[e * C + c] * d
                            z[c] = prod + bias[e * C + c]
                        }
                    }
                }
            }
        }
    }

    /// `logits = Σ g_i · z_{e_i}` in selection order; `probabilities = softmax(logits)`.
    @inline(never)
    private func combineStage(first: Int, n: Int, s: Scratch, outputs: Outputs) {
        let K = config.topK, C = config.classes.count
        for i in 0..<n {
            let lg = outputs.logits + (first + i) * C
            let pr = outputs.probabilities + (first + i) * C
            for c in 0..<C { lg[c] = 0 }
            for slot in 0..<K {
                let g = s.gates[i * K + slot]
                let z = s.z + (i * K + slot) * C
                for c in 0..<C {
                    let term = g * z[c]
                    lg[c] = lg[c] + term
                }
            }
            var m = lg[0]
            for c in 1..<max(1, C) where lg[c] > m { m = lg[c] }
            var sum: Float = 0
            for c in 0..<C {
                let v = expf(lg[c] - m)
                pr[c] = v
                sum += v
            }
            for c in 0..<C { pr[c] = pr[c] / sum }
        }
    }

}

/// A pointer handed to the pool's threads (each writes or reads its own rows).
private struct SendablePointer<P>: @unchecked Sendable {
    let pointer: P
    init(_ pointer: P) { self.pointer = pointer }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
