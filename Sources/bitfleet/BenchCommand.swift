import ArgumentParser
import BitFleetEngine
import Foundation

/// `bitfleet bench`: kernel and model throughput on this machine, and what an inference costs at a core-hour price.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure binary kernel throughput, model samples/s per core and euros per million inferences.",
        discussion: """
            Kernel: XNOR-popcount GEMM of M activation rows × N weight rows × K bits, on 1 and 2 threads, in binary \
            MACs per second and per cycle (the clock is measured with a calibrated loop of dependent adds; \
            /proc/cpuinfo is shown for comparison). Model: samples/s per core at batch 1 and batch 256, mapped \
            memory, and € per million inferences at --price-per-core-hour.
            """)

    @Option(help: "Model directory (default: Ops/models/fashion if present, else a random model written to a temp dir).")
    var model: String?

    @Option(help: "Stem (input layer) kernel: automatic, bit-planes or lookup.")
    var stemKernel: String = "automatic"

    @Option(help: "Price of one CPU core-hour in euros.")
    var pricePerCoreHour: Double = 0.05

    @Option(help: "Kernel activation rows (M).")
    var m: Int = 1024
    @Option(help: "Kernel weight rows (N).")
    var n: Int = 1024
    @Option(help: "Kernel bits per row (K).")
    var k: Int = 4096

    @Option(help: "Thread counts for the kernel benchmark, comma-separated.")
    var threads: String = "1,2"

    @Option(help: "Seconds to run each measurement.")
    var seconds: Double = 1.0

    @Flag(help: "Skip the kernel benchmark.")
    var skipKernel = false

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    struct KernelRow: Codable {
        var threads: Int
        var macsPerSecond: Double
        var macsPerCycle: Double
        var macsPerCyclePerCore: Double
        /// Per core actually used: MACs per CPU-second ÷ clock (robust when other processes share the cores).
        var macsPerCPUCycle: Double
        var speedup: Double
        var secondsPerGEMM: Double
        var checksum: Int
    }

    struct ModelRow: Codable {
        var batch: Int
        var threads: Int
        var samplesPerSecond: Double
        var samplesPerSecondPerCore: Double
        /// Samples per CPU-second actually used (robust when other processes share the cores); used for the cost.
        var samplesPerCPUSecond: Double
        var microsecondsPerSample: Double
        var binaryMACsPerSecond: Double
        var eurosPerMillionInferences: Double
    }

    struct Report: Codable {
        var cpu: String
        var clockHz: Double
        var clockSource: String
        var procCPUInfoMHz: Double?
        var builtFor: String
        var runningCPU: String
        var optimizedBuild: Bool
        var kernelShape: [Int]
        var kernel: [KernelRow]
        var model: String
        var modelName: String
        var modelSHA256: String
        var stemKernel: String
        var mappedBytes: Int
        var privateBytes: Int
        var binaryMACsPerSample: Int
        var pricePerCoreHour: Double
        var models: [ModelRow]
    }

    func validate() throws {
        if m < 1 || n < 1 || k < 1 { throw ValidationError("--m, --n and --k must be >= 1") }
        if pricePerCoreHour < 0 { throw ValidationError("--price-per-core-hour must be >= 0") }
        if seconds <= 0 { throw ValidationError("--seconds must be > 0") }
    }

    func run() throws {
        if let message = CPUFeatures.unsupportedMessage() {
            FileHandle.standardError.write(Data("bitfleet bench: \(message)\n".utf8))
            throw ExitCode.failure
        }
        let threadCounts = threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 > 0 }
        let clock = CPUClock.measure()
        let hz = clock.hertz > 0 ? clock.hertz : 1

        var kernelRows: [KernelRow] = []
        if !skipKernel {
            var base = 0.0
            for t in threadCounts.isEmpty ? [1] : threadCounts {
                let r = KernelBenchmark.run(m: m, n: n, k: k, threads: t, minSeconds: seconds)
                if base == 0 { base = r.macsPerSecond / Double(r.threads) }
                kernelRows.append(KernelRow(
                    threads: r.threads, macsPerSecond: r.macsPerSecond, macsPerCycle: r.macsPerSecond / hz,
                    macsPerCyclePerCore: r.macsPerSecond / hz / Double(r.threads),
                    macsPerCPUCycle: r.macsPerCPUSecond / hz, speedup: r.macsPerSecond / base,
                    secondsPerGEMM: r.seconds, checksum: r.checksum))
            }
        }

        var dir = model
        var temporary: String? = nil
        if dir == nil {
            if FileManager.default.fileExists(atPath: "Ops/models/fashion/config.json") {
                dir = "Ops/models/fashion"
            } else {
                let tmp = NSTemporaryDirectory() + "bitfleet-bench-\(getpid())"
                let config = ModelConfig(name: "random-fashion-shape", version: "1", inputFeatures: 784, inputShape: [28, 28],
                                         inputBitPlanes: 8, inputScale: 255, stemWidth: 512, experts: 16, topK: 2,
                                         expertHidden: [256], classes: (0..<10).map { "class\($0)" })
                try ModelWriter.writeRandom(directory: tmp, config: config, seed: 7)
                dir = tmp
                temporary = tmp
            }
        }
        defer { if let t = temporary { try? FileManager.default.removeItem(atPath: t) } }
        guard let kernel = StemKernel(rawValue: stemKernel) else {
            throw ValidationError("--stem-kernel must be one of: \(StemKernel.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let loaded = try BinaryMoEModel.load(directory: dir!, stemKernel: kernel)
        let cfg = loaded.config
        var rng = SystemRandomNumberGenerator()
        let maxBatch = 256
        let inputs = (0..<(maxBatch * cfg.inputFeatures)).map { _ in UInt8.random(in: 0...255, using: &rng) }

        var modelRows: [ModelRow] = []
        let cases: [(batch: Int, threads: Int)] = [(1, 1), (256, 1)] + (threadCounts.contains(2) ? [(256, 2)] : [])
        for c in cases {
            let batchInputs = Array(inputs[0..<(c.batch * cfg.inputFeatures)])
            _ = try loaded.predict(samples: batchInputs, count: c.batch, threads: c.threads)
            var samples = 0
            let c0 = KernelBenchmark.processCPUSeconds()
            let t0 = KernelBenchmark.now()
            var elapsed = 0.0
            repeat {
                _ = try loaded.predict(samples: batchInputs, count: c.batch, threads: c.threads)
                samples += c.batch
                elapsed = KernelBenchmark.now() - t0
            } while elapsed < seconds
            let cpu = KernelBenchmark.processCPUSeconds() - c0
            let perSecond = Double(samples) / elapsed
            let perCore = perSecond / Double(c.threads)
            let perCPUSecond = Double(samples) / max(cpu, 1e-9)
            modelRows.append(ModelRow(
                batch: c.batch, threads: c.threads, samplesPerSecond: perSecond, samplesPerSecondPerCore: perCore,
                samplesPerCPUSecond: perCPUSecond, microsecondsPerSample: 1e6 / perSecond, binaryMACsPerSecond: perSecond * Double(cfg.binaryMACsPerSample),
                eurosPerMillionInferences: pricePerCoreHour / 3600 / perCPUSecond * 1e6))
        }

        let report = Report(
            cpu: CPUClock.cpuModelName ?? "unknown", clockHz: clock.hertz, clockSource: clock.source,
            procCPUInfoMHz: CPUClock.procCPUInfoMHz(), builtFor: CPUFeatures.built.description,
            runningCPU: CPUFeatures.running.description, optimizedBuild: CPUFeatures.isOptimizedBuild,
            kernelShape: [m, n, k], kernel: kernelRows, model: temporary == nil ? dir! : "(random, in a temp dir)",
            modelName: "\(cfg.name) v\(cfg.version)", modelSHA256: loaded.sha256, stemKernel: loaded.stemKernel.rawValue, mappedBytes: loaded.mappedBytes,
            privateBytes: loaded.privateBytes, binaryMACsPerSample: cfg.binaryMACsPerSample,
            pricePerCoreHour: pricePerCoreHour, models: modelRows)

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("CPU        \(report.cpu)   clock \(fmt(clock.hertz / 1e9, 2)) GHz (\(clock.source); /proc/cpuinfo says \(report.procCPUInfoMHz.map { fmt($0, 0) } ?? "?") MHz)")
        print("build      \(report.builtFor)\(report.optimizedBuild ? "" : "   WARNING: not built for x86-64-v3, kernels are slow")   CPU has \(report.runningCPU)")
        if let w = CPUFeatures.slowBuildWarning { print("           \(w)") }
        if !kernelRows.isEmpty {
            print("")
            print("kernel     XNOR-popcount GEMM \(m)×\(n)×\(k)")
            print(pad("threads", 8) + pad("GMAC/s", 12) + pad("MAC/cycle", 12) + pad("per core", 12) + pad("speedup", 10) + pad("ms/GEMM", 10) + "MAC/CPU-cycle")
            for r in kernelRows {
                print(pad("\(r.threads)", 8) + pad(fmt(r.macsPerSecond / 1e9, 1), 12) + pad(fmt(r.macsPerCycle, 1), 12)
                      + pad(fmt(r.macsPerCyclePerCore, 1), 12) + pad(fmt(r.speedup, 2) + "×", 10) + pad(fmt(r.secondsPerGEMM * 1e3, 2), 10) + fmt(r.macsPerCPUCycle, 1))
            }
        }
        if let first = kernelRows.first, first.macsPerCyclePerCore < 0.7 * first.macsPerCPUCycle {
            print("note       this process got only \(fmt(100 * first.macsPerCyclePerCore / first.macsPerCPUCycle, 0)) % of a core "
                  + "(other processes share the CPUs): wall-clock figures are low; the CPU-time columns are per core actually used")
        }
        print("")
        print("model      \(report.modelName) at \(report.model)")
        print("stem       \(loaded.stemKernel.rawValue) kernel")
        print("           \(cfg.inputFeatures) features × \(cfg.inputBitPlanes) planes → stem \(cfg.stemWidth) → \(cfg.experts) experts (top \(cfg.topK)) \(cfg.expertHidden) → \(cfg.classes.count) classes; \(cfg.binaryMACsPerSample) binary MACs/sample")
        print("memory     \(bytes(loaded.mappedBytes)) mapped (shared between processes) + \(bytes(loaded.privateBytes)) private repacked")
        print(pad("batch", 8) + pad("threads", 9) + pad("samples/s", 13) + pad("per core", 13) + pad("per CPU-s", 13) + pad("µs/sample", 12) + pad("GMAC/s", 9) + "€/M inferences @ €\(pricePerCoreHour)/core-h (per CPU-s)")
        for r in modelRows {
            print(pad("\(r.batch)", 8) + pad("\(r.threads)", 9) + pad(fmt(r.samplesPerSecond, 0), 13) + pad(fmt(r.samplesPerSecondPerCore, 0), 13)
                  + pad(fmt(r.samplesPerCPUSecond, 0), 13) + pad(fmt(r.microsecondsPerSample, 2), 12) + pad(fmt(r.binaryMACsPerSecond / 1e9, 1), 9) + fmt(r.eurosPerMillionInferences, 4))
        }
    }

    private func fmt(_ v: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", v) }
    private func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count) }
    private func bytes(_ n: Int) -> String {
        n >= 1 << 20 ? fmt(Double(n) / Double(1 << 20), 1) + " MiB" : n >= 1 << 10 ? fmt(Double(n) / 1024, 1) + " KiB" : "\(n) B"
    }
}
