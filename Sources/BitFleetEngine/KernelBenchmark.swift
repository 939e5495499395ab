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
    /// Sum of all popcounts of the last GEMM (identical for any thread count).
    public var checksum: Int
}

/// The CPU clock, measured rather than assumed.
public struct CPUClock: Sendable, Codable, Equatable {
    public var hertz: Double
    /// How `hertz` was obtained: "calibrated loop of dependent adds (thread CPU time)" or "/proc/cpuinfo".
    public var source: String

    /// Times a chain of dependent integer adds (1 cycle each) on this thread; falls back to /proc/cpuinfo.
    public static func measure(seconds: Double = 0.2) -> CPUClock {
        // warm up (lets the core reach its boost clock), then time
        _ = bf_dependent_add_seconds(2_000_000)
        var iterations = 1_000_000
        var best = 0.0
        while true {
            let t = bf_dependent_add_seconds(iterations)
            if t < 0 { break }
            if t > seconds / 4 {
                for _ in 0..<3 {
                    let u = bf_dependent_add_seconds(iterations)
                    best = max(best, Double(iterations) * 20 / u)
                }
                best = max(best, Double(iterations) * 20 / t)
                break
            }
            iterations *= 2
        }
        if best > 0 { return CPUClock(hertz: best, source: "calibrated loop of dependent adds (thread CPU time)") }
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
    public static func run(m: Int, n: Int, k: Int, threads: Int = 1, minSeconds: Double = 1.0) -> KernelBenchmarkResult {
        let words = (k + 63) / 64
        var rng = SplitMix64(state: 0x5EED)
        let a = UnsafeMutablePointer<UInt64>.allocate(capacity: m * words)
        let b = UnsafeMutablePointer<UInt64>.allocate(capacity: n * words)
        let out = UnsafeMutablePointer<Int32>.allocate(capacity: m * n)
        defer { a.deallocate(); b.deallocate(); out.deallocate() }
        let tailMask: UInt64 = k % 64 == 0 ? ~0 : (1 << UInt64(k % 64)) - 1
        for r in 0..<m { for w in 0..<words { a[r * words + w] = rng.next() & (w == words - 1 ? tailMask : ~0) } }
        for r in 0..<n { for w in 0..<words { b[r * words + w] = rng.next() & (w == words - 1 ? tailMask : ~0) } }

        let pool = ThreadPool.shared
        let parts = max(1, min(threads, pool.width, (n + 3) / 4))
        let per = ((n + parts - 1) / parts + 3) & ~3   // whole 4-row tiles per thread
        let ptrs = BenchPointers(a: a, b: b, out: out)
        func gemm() {
            if parts == 1 {
                BinaryKernels.xorPopcounts(a: a, lda: words, n: m, b: b, ldb: words, m: n, words: words, out: out, ldo: n)
                return
            }
            pool.parallelFor(parts) { p in
                let lo = p * per, hi = min(n, lo + per)
                if lo < hi {
                    BinaryKernels.xorPopcounts(a: ptrs.a, lda: words, n: m, b: ptrs.b + lo * words, ldb: words,
                                               m: hi - lo, words: words, out: ptrs.out + lo, ldo: n)
                }
            }
        }
        gemm()
        var iterations = 0
        let c0 = bf_process_cpu_seconds()
        let t0 = bf_monotonic_seconds()
        var elapsed = 0.0
        repeat {
            gemm()
            iterations += 1
            elapsed = bf_monotonic_seconds() - t0
        } while elapsed < minSeconds
        let cpu = (bf_process_cpu_seconds() - c0) / Double(iterations)
        var checksum = 0
        for i in 0..<(m * n) { checksum &+= Int(out[i]) }
        let macs = m * n * k
        let perGEMM = elapsed / Double(iterations)
        return KernelBenchmarkResult(m: m, n: n, k: k, threads: parts, iterations: iterations, seconds: perGEMM,
                                     macs: macs, macsPerSecond: Double(macs) / perGEMM, cpuSeconds: cpu,
                                     macsPerCPUSecond: Double(macs) / cpu, checksum: checksum)
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

