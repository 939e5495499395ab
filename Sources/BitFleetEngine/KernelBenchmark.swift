import CEngineSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Result of timing the XNOR-popcount GEMM kernel on an `m × n × k` problem.
public struct KernelBenchmarkResult: Sendable, Codable, Equatable {
    /// Activation rows (samples), weight rows (output channels), and bits per row.
    public var m: Int
    public var n: Int
    public var k: Int
    public var threads: Int
    public var iterations: Int
    /// Mean seconds per GEMM.
    public var seconds: Double
    /// Binary multiply-accumulates per GEMM (`m × n × k`).
    public var macs: Int
    public var macsPerSecond: Double
    /// CPU seconds (all threads) per GEMM: immune to time the scheduler gave to other processes.
    public var cpuSeconds: Double
    /// Binary MACs per CPU-second, i.e. per core actually used.
    public var macsPerCPUSecond: Double
    /// Sum of all popcounts of the last GEMM (identical for any thread count and path).
    public var checksum: Int
    /// The kernel path that ran (`XNORPath` raw value).
    public var path: String
    /// Cycles per GEMM counted by the CPU's cycle counter (`perf_event_open`, this thread, user space), on one
    /// thread only; nil where the kernel or hypervisor exposes no counter.
    public var perfCycles: Double?
}

/// The CPU clock, measured rather than assumed.
public struct CPUClock: Sendable, Codable, Equatable {
    public var hertz: Double
    /// How `hertz` was obtained: "calibrated loop of dependent adds (thread CPU time)" or "/proc/cpuinfo".
    public var source: String

    /// The clock of this core: cycles counted by `perf_event_open` (PERF_COUNT_HW_CPU_CYCLES) over a timed loop
    /// where the kernel exposes the counter; else a chain of dependent 64-bit `imul`s (3 cycles of latency each on
    /// every x86-64 core, Intel and AMD alike; a chain of adds of an immediate is not usable: recent Intel cores
    /// fold those at rename and ran it at "10–12 GHz"); else /proc/cpuinfo.
    public static func measure(seconds: Double = 0.2) -> CPUClock {
        _ = bf_dependent_imul_seconds(1_000_000)   // warm up: lets the core reach its boost clock
        var iterations = 200_000
        while true {
            let t = bf_dependent_imul_seconds(iterations)
            if t < 0 { break }
            if t > seconds / 4 { break }
            iterations *= 2
        }
        let handle = bf_perf_cycles_open()
        if handle >= 0 {
            defer { bf_perf_cycles_close(handle) }
            var best = 0.0
            for _ in 0..<3 {
                let c0 = bf_perf_cycles_read(handle)
                let t = bf_dependent_imul_seconds(iterations)
                let c1 = bf_perf_cycles_read(handle)
                if c0 >= 0 && c1 > c0 && t > 0 { best = max(best, Double(c1 - c0) / t) }
            }
            if best > 0 { return CPUClock(hertz: best, source: "perf_event_open cycle counter") }
        }
        var best = 0.0
        for _ in 0..<3 {
            let t = bf_dependent_imul_seconds(iterations)
            if t > 0 { best = max(best, Double(iterations) * 60 / t) }
        }
        if best > 0 { return CPUClock(hertz: best, source: "calibrated chain of dependent imul (no cycle counter here)") }
        return CPUClock(hertz: procCPUInfoMHz().map { $0 * 1e6 } ?? 0, source: "/proc/cpuinfo")
    }

    /// The first "cpu MHz" of /proc/cpuinfo (the nominal or current clock, as the kernel reports it).
    public static func procCPUInfoMHz() -> Double? {
        guard let bytes = try? readSmallFile("/proc/cpuinfo") else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("cpu MHz") {
            if let v = line.split(separator: ":").last.flatMap({ Double($0.trimmingCharacters(in: " \t")) }) { return v }
        }
        return nil
    }

    public static var cpuModelName: String? {
        guard let bytes = try? readSmallFile("/proc/cpuinfo") else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: " \t") }
        }
        return nil
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String { String(self).trimmingCharacters(in: set) }
}

public enum KernelBenchmark {
    /// Times `popcount(a_i XOR b_j)` for an `m × n × k` problem (random bits), splitting the `n` weight rows
    /// over `threads` workers of the shared pool (each thread then streams only its share of the weights through its
    /// core's caches); runs at least `minSeconds` after one warm-up GEMM.
    public static func run(m: Int, n: Int, k: Int, threads: Int = 1, minSeconds: Double = 1.0,
                           path: XNORPath = .best) -> KernelBenchmarkResult {
        let words = (k + 63) / 64
        var rng = SplitMix64(state: 0x5EED)
        let a = UnsafeMutablePointer<UInt64>.allocate(capacity: m * words)
        let b = UnsafeMutablePointer<UInt64>.allocate(capacity: n * words)
        let out = UnsafeMutablePointer<Int32>.allocate(capacity: m * n)
        defer { a.deallocate(); b.deallocate(); out.deallocate() }
        let tailMask: UInt64 = k % 64 == 0 ? ~0 : (1 << UInt64(k % 64)) - 1
        for r in 0..<m { for w in 0..<words { a[r * words + w] = rng.next() & (w == words - 1 ? tailMask : ~0) } }
        for r in 0..<n { for w in 0..<words { b[r * words + w] = rng.next() & (w == words - 1 ? tailMask : ~0) } }

        // the weight side re-laid in 8-row blocks, as a model does at load
        let blocks = (n + 7) / 8
        let w = UnsafeMutableRawPointer.allocate(byteCount: max(1, blocks * 8 * words * 8), alignment: 64)
            .bindMemory(to: UInt64.self, capacity: max(1, blocks * 8 * words))
        defer { w.deallocate() }
        bf_xnor_interleave(b, words, n, words, w)

        let pool = ThreadPool.shared
        let parts = max(1, min(threads, pool.width, (n + 31) / 32))
        let per = ((n + parts - 1) / parts + 31) & ~31   // whole 32-row tiles per thread
        let ptrs = BenchPointers(a: a, b: w, out: out)
        let code = path.code
        func gemm() {
            if parts == 1 {
                bf_xnor_popcounts(code, a, words, m, w, n, words, out, n)
                return
            }
            pool.parallelFor(parts) { p in
                let lo = p * per, hi = min(n, lo + per)
                if lo < hi {
                    bf_xnor_popcounts(code, ptrs.a, words, m, ptrs.b + lo * words, hi - lo, words, ptrs.out + lo, n)
                }
            }
        }
        gemm()
        var iterations = 0
        let counter = parts == 1 ? bf_perf_cycles_open() : -1
        defer { bf_perf_cycles_close(counter) }
        let cycles0 = bf_perf_cycles_read(counter)
        let c0 = bf_process_cpu_seconds()
        let t0 = bf_monotonic_seconds()
        var elapsed = 0.0
        repeat {
            gemm()
            iterations += 1
            elapsed = bf_monotonic_seconds() - t0
        } while elapsed < minSeconds
        let cpu = (bf_process_cpu_seconds() - c0) / Double(iterations)
        let cycles1 = bf_perf_cycles_read(counter)
        let perfCycles = cycles0 >= 0 && cycles1 > cycles0 ? Double(cycles1 - cycles0) / Double(iterations) : nil
        var checksum = 0
        for i in 0..<(m * n) { checksum &+= Int(out[i]) }
        let macs = m * n * k
        let perGEMM = elapsed / Double(iterations)
        return KernelBenchmarkResult(m: m, n: n, k: k, threads: parts, iterations: iterations, seconds: perGEMM,
                                     macs: macs, macsPerSecond: Double(macs) / perGEMM, cpuSeconds: cpu,
                                     macsPerCPUSecond: Double(macs) / cpu, checksum: checksum, path: path.rawValue,
                                     perfCycles: perfCycles)
    }

    /// Monotonic seconds (for callers timing model throughput).
    public static func now() -> Double { bf_monotonic_seconds() }

    /// CPU seconds used by this process so far (all threads).
    public static func processCPUSeconds() -> Double { bf_process_cpu_seconds() }
}

private struct BenchPointers: @unchecked Sendable {
    let a: UnsafeMutablePointer<UInt64>
    let b: UnsafeMutablePointer<UInt64>
    let out: UnsafeMutablePointer<Int32>
}

