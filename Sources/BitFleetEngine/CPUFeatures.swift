import CEngineSupport

/// What this binary was compiled to assume about the CPU, and what the running CPU offers.
///
/// The release build is meant to be compiled for x86-64-v3 (AVX2, BMI2, POPCNT, FMA): without a target CPU the
/// compiler emits neither `popcnt` nor AVX2 `vpshufb` and the binary kernels run at a fraction of their speed; with
/// it, the binary traps with SIGILL on an older CPU. ``unsupportedMessage()`` turns the latter into a clear message.
public struct CPUFeatures: Sendable, Equatable, CustomStringConvertible {
    public var avx2: Bool
    public var popcnt: Bool
    public var bmi2: Bool
    public var fma: Bool

    public init(avx2: Bool, popcnt: Bool, bmi2: Bool, fma: Bool) {
        self.avx2 = avx2
        self.popcnt = popcnt
        self.bmi2 = bmi2
        self.fma = fma
    }

    /// Features the build assumed: the C support target's compile-time macros (`-Xcc -march=x86-64-v3` sets them),
    /// or-ed with the macros the Swift module's clang importer saw.
    public static var built: CPUFeatures {
        CPUFeatures(
            avx2: bf_c_built_avx2() != 0 || bf_importer_built_avx2() != 0,
            popcnt: bf_c_built_popcnt() != 0 || bf_importer_built_popcnt() != 0,
            bmi2: bf_c_built_bmi2() != 0,
            fma: bf_c_built_fma() != 0)
    }

    /// Features of the CPU this process runs on (`__builtin_cpu_supports`).
    public static var running: CPUFeatures {
        CPUFeatures(avx2: bf_cpu_has_avx2() != 0, popcnt: bf_cpu_has_popcnt() != 0,
                    bmi2: bf_cpu_has_bmi2() != 0, fma: bf_cpu_has_fma() != 0)
    }

    /// True when the build targets x86-64-v3 (the fast kernels).
    public static var isOptimizedBuild: Bool { built.avx2 && built.popcnt }

    public var names: [String] {
        var n: [String] = []
        if avx2 { n.append("avx2") }
        if popcnt { n.append("popcnt") }
        if bmi2 { n.append("bmi2") }
        if fma { n.append("fma") }
        return n
    }

    public var description: String { names.isEmpty ? "baseline" : names.joined(separator: ",") }

    /// Features the build assumed that the running CPU lacks.
    public static func missing(built: CPUFeatures = .built, running: CPUFeatures = .running) -> [String] {
        var m: [String] = []
        if built.avx2 && !running.avx2 { m.append("avx2") }
        if built.popcnt && !running.popcnt { m.append("popcnt") }
        if built.bmi2 && !running.bmi2 { m.append("bmi2") }
        if built.fma && !running.fma { m.append("fma") }
        return m
    }

    /// nil when this CPU can run this binary; otherwise a message for the operator (the CLI prints it and exits).
    public static func unsupportedMessage(built: CPUFeatures = .built, running: CPUFeatures = .running) -> String? {
        let m = missing(built: built, running: running)
        if m.isEmpty { return nil }
        return "this bitfleet binary was built for x86-64-v3 (\(built)) but this CPU lacks \(m.joined(separator: ", ")); "
            + "run it on a CPU with AVX2/BMI2/POPCNT (Intel Haswell 2013+, AMD Zen) or rebuild without "
            + "-march=x86-64-v3 (slower kernels)"
    }

    /// A one-line warning when the build is not optimized (no popcnt/AVX2), nil otherwise.
    public static var slowBuildWarning: String? {
        isOptimizedBuild ? nil
            : "bitfleet was built without a target CPU (swift build -c release -Xcc -march=x86-64-v3): binary kernels run several times slower"
    }
}
