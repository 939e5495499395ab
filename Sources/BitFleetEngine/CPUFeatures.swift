import CEngineSupport

/// What this binary was compiled to assume about the CPU, and what the running CPU offers.
///
/// The release build is compiled for x86-64-v2 (POPCNT, SSE4.2), which every x86-64 server CPU since 2009 has; the
/// kernels that need more (AVX2, AVX-512, VNNI, AMX) carry their own target attributes and are chosen at run time
/// (`XNORPath`, `StemKernel`). A binary built for a newer baseline traps with SIGILL on an older CPU;
/// ``unsupportedMessage()`` turns that into a clear message.
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

    /// Features the build assumed: the C support target's compile-time macros (`-Xcc -march=...` sets them),
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

    /// True when the build gives Swift code `popcnt` (x86-64-v2 or newer); the C kernels dispatch on their own.
    public static var isOptimizedBuild: Bool { built.popcnt }

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
        return "this bitfleet binary was built for a newer CPU (\(built)) but this CPU lacks \(m.joined(separator: ", ")); "
            + "rebuild with Ops/build.sh (x86-64-v2: any x86-64 CPU with POPCNT)"
    }

    /// A one-line warning when the build is not optimized (no popcnt/AVX2), nil otherwise.
    public static var slowBuildWarning: String? {
        isOptimizedBuild ? nil
            : "bitfleet was built without a target CPU (swift build -c release -Xcc -march=x86-64-v2): Swift code has no popcnt"
    }
}
