import CEngineSupport

/// Instruction-set path of the XNOR-popcount kernels (router, expert layers, kernel benchmark). Every path computes
/// the same integers; a model picks the best one the running CPU supports when it is loaded, unless
/// `BITFLEET_KERNEL_PATH` (or the caller) names one.
public enum XNORPath: String, Sendable, CaseIterable, Codable, Comparable {
    /// Plain C with `popcnt`: any x86-64 (or Arm) CPU.
    case portable
    /// AVX2 `vpshufb` popcounts in byte lanes (Intel Haswell 2013+, AMD Zen).
    case avx2
    /// AVX-512 `vpopcntq` (Intel Ice Lake and later, AMD Zen 4 and later).
    case avx512 = "avx512-vpopcntdq"

    var code: Int32 {
        switch self {
        case .portable: Int32(BF_XNOR_PORTABLE)
        case .avx2: Int32(BF_XNOR_AVX2)
        case .avx512: Int32(BF_XNOR_AVX512)
        }
    }

    /// True when the running CPU can execute this path.
    public var isSupported: Bool { bf_xnor_path_supported(code) != 0 }

    /// The fastest path this CPU supports (AVX-512 > AVX2 > portable: each does more binary MACs per instruction).
    public static var best: XNORPath { allCases.reversed().first { $0.isSupported } ?? .portable }

    public static func < (a: XNORPath, b: XNORPath) -> Bool { a.code < b.code }
}

/// The input layer's kernel.
public enum StemKernel: String, Sendable, CaseIterable, Codable {
    /// The fastest path this CPU and model allow, chosen by timing each on this model's shape (once per process).
    case automatic
    /// One AND-popcount pass per input bit plane (any plane count, any CPU).
    case bitPlanes = "bit-planes"
    /// Table lookup, 4-bit activations × one-bit weights in the style of T-MAC (≤ 4 planes, AVX2).
    case lookup
    /// The same table lookup on 512-bit lanes (≤ 4 planes, AVX-512BW): four groups of inputs per `vpshufb`.
    case lookupAVX512 = "lookup-avx512"
    /// int8 dot products with AVX-512 VNNI `vpdpbusd` (≤ 4 planes).
    case vnni
    /// int8 tile products with AMX `tdpbusd` (≤ 4 planes; Intel Sapphire Rapids and later).
    case amx

    /// The C path code of the int8 kernels.
    var int8Code: Int32? {
        switch self {
        case .vnni: Int32(BF_STEM_VNNI)
        case .amx: Int32(BF_STEM_AMX)
        default: nil
        }
    }

    /// The direct conv kernel (`conv_direct.c`) that stands for this stem kernel in a conv model's front, its code and
    /// the name logs and metrics give it: the `vpmaddubsw` kernels on the lookup kernels' instruction sets, `vpdpbusd`
    /// for VNNI. AMX and the bit planes run the conv as windows through the stem kernels instead.
    var convDirect: (code: Int32, name: String)? {
        switch self {
        case .lookup: (Int32(BF_CONV_AVX2), "direct-avx2")
        case .lookupAVX512: (Int32(BF_CONV_AVX512BW), "direct-avx512bw")
        case .vnni: (Int32(BF_CONV_VNNI), "direct-vnni")
        default: nil
        }
    }

    /// `convDirect` when the running CPU has its instructions, else nil: what a conv front actually runs here.
    var convDirectHere: (code: Int32, name: String)? {
        guard let direct = convDirect, bf_conv_direct_supported(direct.code) != 0 else { return nil }
        return direct
    }

    /// The direct conv kernel that stands for this one on conv shape `g` here: `convDirectHere` where its sums stay
    /// exact for `g` (2-bit filters: `bf_conv_direct_fits`), else nil (the conv runs as windows).
    func convDirect(for g: ConvGeometry) -> (code: Int32, name: String)? {
        guard let direct = convDirectHere, bf_conv_direct_fits(direct.code, g.kernel, g.weightBits) != 0 else { return nil }
        return direct
    }

    /// True when the running CPU supports this kernel (for some model).
    public var isSupportedByCPU: Bool {
        switch self {
        case .automatic, .bitPlanes: true
        case .lookup: bf_stem_path_supported(Int32(BF_STEM_LOOKUP_AVX2)) != 0
        case .lookupAVX512: bf_lut512_available() != 0
        case .vnni: bf_stem_path_supported(Int32(BF_STEM_VNNI)) != 0
        case .amx: bf_stem_path_supported(Int32(BF_STEM_AMX)) != 0
        }
    }

    /// What the kernel needs, for error messages.
    var requirement: String {
        switch self {
        case .automatic, .bitPlanes: "nothing"
        case .lookup: "input_bit_planes ≤ 4, at most \(StemLookupWeights.maxFeatures) input features and a CPU with AVX2"
        case .lookupAVX512: "input_bit_planes ≤ 4, at most \(StemLookupWeights.maxFeatures) input features and a CPU with AVX-512BW"
        case .vnni: "input_bit_planes ≤ 4 and a CPU with AVX-512 VNNI"
        case .amx: "input_bit_planes ≤ 4 and a CPU with AMX-INT8 (and a Linux kernel that grants the tile state)"
        }
    }

    /// True when this kernel can run `config`'s integer input layer (the stem, or a conv front's filters) on this CPU.
    /// A conv front that this kernel runs directly (`convDirect`) takes every bit-plane count: the direct kernels'
    /// u8 × s8 sums are exact for 8-bit inputs (conv_direct.c), so 5–8 planes need not fall back to the bit planes.
    func supports(_ config: ModelConfig) -> Bool {
        if let g = config.convGeometry, convDirect(for: g) != nil { return true }
        return supports(planes: config.inputBitPlanes, features: config.convGeometry?.windowTaps ?? config.inputFeatures)
    }

    /// True when this kernel can run an integer layer of `features` inputs with `planes` input bit planes here.
    func supports(planes: Int, features: Int) -> Bool {
        switch self {
        case .automatic, .bitPlanes: return true
        case .lookup, .lookupAVX512: return StemLookupWeights.supports(planes: planes, features: features) && isSupportedByCPU
        case .vnni, .amx:
            // int8 sums: Σ of up to 15 × features must fit in int32
            return planes <= 4 && features <= 1 << 26 && isSupportedByCPU
        }
    }
}

/// Which kernels a model uses: what the caller asked for, else the environment, else the best for this CPU.
public struct KernelSelection: Sendable, Equatable {
    public var xnor: XNORPath?
    public var stem: StemKernel
    public var conv: ConvAlgorithm

    public init(xnor: XNORPath? = nil, stem: StemKernel = .automatic, conv: ConvAlgorithm = .automatic) {
        self.xnor = xnor
        self.stem = stem
        self.conv = conv
    }

    /// `BITFLEET_KERNEL_PATH` forces the XNOR path, `BITFLEET_STEM_KERNEL` the stem kernel, `BITFLEET_CONV_KERNEL`
    /// a conv front's kernel (`table` or `direct`; for comparisons and tests). A value that names no kernel is an
    /// error, not a silent default.
    public static func fromEnvironment(_ env: [String: String]) throws(ModelError) -> KernelSelection {
        var s = KernelSelection()
        if let v = env["BITFLEET_KERNEL_PATH"], !v.isEmpty {
            guard let p = XNORPath(rawValue: v) else {
                throw ModelError(.config, "BITFLEET_KERNEL_PATH=\(v) names no kernel path; expected one of "
                    + XNORPath.allCases.map(\.rawValue).joined(separator: ", "))
            }
            s.xnor = p
        }
        if let v = env["BITFLEET_STEM_KERNEL"], !v.isEmpty {
            guard let k = StemKernel(rawValue: v) else {
                throw ModelError(.config, "BITFLEET_STEM_KERNEL=\(v) names no stem kernel; expected one of "
                    + StemKernel.allCases.map(\.rawValue).joined(separator: ", "))
            }
            s.stem = k
        }
        if let v = env["BITFLEET_CONV_KERNEL"], !v.isEmpty {
            guard let c = ConvAlgorithm(rawValue: v) else {
                throw ModelError(.config, "BITFLEET_CONV_KERNEL=\(v) names no conv kernel; expected one of "
                    + ConvAlgorithm.allCases.map(\.rawValue).joined(separator: ", "))
            }
            s.conv = c
        }
        return s
    }

    /// The process environment.
    public static func fromProcessEnvironment() throws(ModelError) -> KernelSelection {
        var env: [String: String] = [:]
        for name in ["BITFLEET_KERNEL_PATH", "BITFLEET_STEM_KERNEL", "BITFLEET_CONV_KERNEL"] {
            if let p = getenv(name) { env[name] = String(cString: p) }
        }
        return try fromEnvironment(env)
    }
}

/// What the running CPU offers the kernels, for logs, metrics and the benchmark.
public struct KernelCapabilities: Sendable, Codable, Equatable, CustomStringConvertible {
    public var xnorPaths: [String]
    public var stemKernels: [String]

    public static var running: KernelCapabilities {
        KernelCapabilities(xnorPaths: XNORPath.allCases.filter(\.isSupported).map(\.rawValue),
                           stemKernels: StemKernel.allCases.filter { $0 != .automatic && $0.isSupportedByCPU }.map(\.rawValue))
    }

    public var description: String {
        "xnor paths: \(xnorPaths.joined(separator: ", ")); stem kernels: \(stemKernels.joined(separator: ", "))"
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
