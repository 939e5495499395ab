import ArgumentParser
import BitFleetEngine
import BitFleetFetch
import Foundation

/// `bitfleet bench`: kernel and model throughput on this machine, and what an inference costs at a core-hour price.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure binary kernel throughput, model samples/s per core and euros per million inferences.",
        discussion: """
            Kernel: XNOR-popcount GEMM of M activation rows × N weight rows × K bits, on 1 and 2 threads, in binary \
            MACs per second and per cycle (cycles from the CPU's cycle counter where perf_event_open allows it, \
            else from a calibrated chain of dependent imul; the source is printed). Model: samples/s per core at \
            batch 1 and batch 256, mapped memory, and € per million inferences at --price-per-core-hour. \
            --compare-paths also times every kernel path this CPU supports (XNOR: portable, avx2, \
            avx512-vpopcntdq; stem: bit-planes, lookup, vnni, amx, or for a conv front the conv kernel each stands for, and for the lookup kernel also the direct conv kernel where the table kernel stands for it); --experts-scaling N compares random models of \
            the reference shape with 16 and N experts at batch 256, the N-expert one with one flat router and, \
            where N has a divisor G near √N, with a two-level router of G groups (format v3). The kernel paths in use are printed (and in \
            --json as kernelPaths); BITFLEET_KERNEL_PATH, BITFLEET_STEM_KERNEL and BITFLEET_CONV_KERNEL \
            (table, direct) force them.
            """)

    @Option(help: "Model directory (default: Ops/models/fashion if present, else a random model written to a temp dir).")
    var model: String?

    @Option(help: "Stem (input layer) kernel: \(StemKernel.allCases.map(\.rawValue).joined(separator: ", ")).")
    var stemKernel: StemKernel = .automatic

    @Option(help: "XNOR kernel path: \(XNORPath.allCases.map(\.rawValue).joined(separator: ", ")) (default: the best this CPU supports).")
    var kernelPath: XNORPath?

    @Flag(help: "Also time every kernel path this CPU supports (XNOR GEMM on 1 thread, model at batch 256 per stem kernel).")
    var comparePaths = false

    @Option(help: "Compare random models of the reference shape with 16 and this many experts (top 2) at batch 256 (flat and two-level routers); 0 skips.")
    var expertsScaling: Int = 0

    @Option(help: ArgumentHelp(
        "Inputs for the model measurements: a .npy file of samples × input_features (uint8, or float32 scaled by the model's input_scale), e.g. real test images.",
        discussion: "Without it the inputs are random bytes, which a trained router sends to a few experts only: large expert groups that flatter the engine. Ops/bench/peers.py and overhead.sh pass real Fashion-MNIST test images."))
    var inputs: String?

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
        var path: String
        /// Cycles per GEMM from the cycle counter (1 thread), when the kernel exposes it.
        var perfCyclesPerGEMM: Double?
    }

    struct PathRow: Codable {
        var kind: String
        var path: String
        var figure: Double
        var unit: String
    }

    struct ScalingRow: Codable {
        var experts: Int
        /// Groups of a two-level router (nil: one flat router over all experts).
        var routerGroups: Int?
        var topK: Int
        var samplesPerSecond: Double
        var samplesPerCPUSecond: Double
        var mappedBytes: Int
        var routing: Routing
    }

    /// Where a batch of 256 of the benchmark's inputs is routed: how many experts get samples and the largest
    /// expert's share of the (sample, expert) pairs. Grouped expert kernels run faster on few large groups.
    struct Routing: Codable {
        var expertsUsed: Int
        var experts: Int
        var largestGroupShare: Double

        init(_ activations: [Int]) {
            let total = max(1, activations.reduce(0, +))
            expertsUsed = activations.filter { $0 > 0 }.count
            experts = activations.count
            largestGroupShare = Double(activations.max() ?? 0) / Double(total)
        }

        var text: String { "\(expertsUsed) of \(experts) experts get samples, the largest \(String(format: "%.0f", 100 * largestGroupShare)) % of them" }
    }

    /// `count` samples for `model`: from `--inputs` (cycled when it has fewer), else random bytes.
    func benchmarkInputs(count: Int, features: Int, scale: Float) throws -> (values: [UInt8], source: String) {
        guard let path = inputs else {
            var rng = SystemRandomNumberGenerator()
            return ((0..<(count * features)).map { _ in UInt8.random(in: 0...255, using: &rng) }, "random bytes")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("--inputs: cannot read \(path)")
        }
        let batch: InputBatch
        do {
            batch = try InputDecoder.decode([UInt8](data), format: "npy", contentType: nil, url: path, features: features)
        } catch {
            throw ValidationError("--inputs \(path): \(error)")
        }
        let values: [UInt8]
        switch batch.values {
        case .uint8(let v): values = v
        case .float32(let v): values = try InputQuantizer.quantize(v, scale: scale, features: features)
        }
        var out: [UInt8] = []
        out.reserveCapacity(count * features)
        while out.count < count * features {
            out.append(contentsOf: values.prefix(count * features - out.count))
        }
        return (out, "\(path) (\(batch.samples) samples\(batch.samples < count ? ", repeated" : ""))")
    }

    struct KernelPaths: Codable {
        var xnor: String
        var stem: String
        var stemSmallBatch: String
        /// A conv model's front: `direct-vnni`, `direct-avx512bw`, `direct-avx2` or `windows-<stem kernel>`.
        var conv: String?
        var xnorSupported: [String]
        var stemSupported: [String]
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
        var kernelPaths: KernelPaths
        var pathComparison: [PathRow]
        var expertsScaling: [ScalingRow]
        /// samples/s of the many-expert model ÷ the 16-expert model at batch 256 (nil unless --experts-scaling).
        var expertsScalingRatio: Double?
        /// The same ratio from interleaved rounds (both models timed back to back, each round): robust to drift.
        var expertsScalingPaired: PairedRatio?
        /// The many-expert model with a two-level router ÷ the 16-expert model, interleaved (nil without a divisor).
        var expertsScalingGroupedPaired: PairedRatio?
        /// What the model measurements ran on: a file of real samples, or random bytes.
        var inputs: String
        /// Where the model routes a batch of 256 of those inputs.
        var routing: Routing
        /// samples/s at batch 256 on 2 threads ÷ on 1 thread, from interleaved rounds (nil without 2 in --threads).
        var threadScalingPaired: PairedRatio?
    }

    /// A ratio of two throughputs measured in `rounds` interleaved rounds: in each, both are timed back to back
    /// (which goes first alternates), and the ratio of that round is kept. On a shared host the speed drifts by tens
    /// of percent within a minute, so a ratio of two figures taken a minute apart measures the drift; the median of
    /// paired rounds does not.
    struct PairedRatio: Codable {
        var median: Double
        var low: Double
        var high: Double
        var rounds: Int
        var secondsPerMeasurement: Double
    }

    static func pairedRatio(rounds: Int, seconds: Double, numerator: () throws -> Double,
                            denominator: () throws -> Double) rethrows -> PairedRatio {
        var ratios: [Double] = []
        for round in 0..<rounds {
            let n: Double, d: Double
            if round % 2 == 0 {
                d = try denominator()
                n = try numerator()
            } else {
                n = try numerator()
                d = try denominator()
            }
            ratios.append(n / max(d, 1e-9))
        }
        ratios.sort()
        let median = ratios.count % 2 == 1 ? ratios[ratios.count / 2]
            : (ratios[ratios.count / 2 - 1] + ratios[ratios.count / 2]) / 2
        return PairedRatio(median: median, low: ratios.first!, high: ratios.last!, rounds: rounds, secondsPerMeasurement: seconds)
    }

    func validate() throws {
        if m < 1 || n < 1 || k < 1 { throw ValidationError("--m, --n and --k must be >= 1") }
        if pricePerCoreHour < 0 { throw ValidationError("--price-per-core-hour must be >= 0") }
        if seconds <= 0 { throw ValidationError("--seconds must be > 0") }
        if expertsScaling < 0 { throw ValidationError("--experts-scaling must be >= 0") }
        if let p = kernelPath, !p.isSupported { throw ValidationError("kernel path \(p.rawValue) is not supported by this CPU") }
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
            let path = kernelPath ?? .best
            for t in threadCounts.isEmpty ? [1] : threadCounts {
                let r = KernelBenchmark.run(m: m, n: n, k: k, threads: t, minSeconds: seconds, path: path)
                if base == 0 { base = r.macsPerSecond / Double(r.threads) }
                // with a cycle counter, MACs per cycle are counted, not derived from a clock
                let perCycle = r.perfCycles.map { Double(r.macs) / $0 } ?? r.macsPerSecond / hz
                kernelRows.append(KernelRow(
                    threads: r.threads, macsPerSecond: r.macsPerSecond, macsPerCycle: perCycle,
                    macsPerCyclePerCore: perCycle / Double(r.threads),
                    macsPerCPUCycle: r.macsPerCPUSecond / hz, speedup: r.macsPerSecond / base,
                    secondsPerGEMM: r.seconds, checksum: r.checksum, path: r.path, perfCyclesPerGEMM: r.perfCycles))
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
        let loaded = try BinaryMoEModel.load(directory: dir!, stemKernel: stemKernel, xnorPath: kernelPath)
        let cfg = loaded.config
        let maxBatch = 256
        let (inputs, inputSource) = try benchmarkInputs(count: maxBatch, features: cfg.inputFeatures, scale: cfg.inputScale)
        let routing = Routing(try loaded.predict(samples: inputs, count: maxBatch).stats.expertActivations)

        var modelRows: [ModelRow] = []
        let cases: [(batch: Int, threads: Int)] = [(1, 1), (256, 1)] + (threadCounts.contains(2) ? [(256, 2)] : [])
        for c in cases {
            let (perSecond, cpu, samples) = try Self.throughput(loaded, inputs, batch: c.batch, threads: c.threads, seconds: seconds)
            let perCore = perSecond / Double(c.threads)
            let perCPUSecond = Double(samples) / max(cpu, 1e-9)
            modelRows.append(ModelRow(
                batch: c.batch, threads: c.threads, samplesPerSecond: perSecond, samplesPerSecondPerCore: perCore,
                samplesPerCPUSecond: perCPUSecond, microsecondsPerSample: 1e6 / perSecond, binaryMACsPerSecond: perSecond * Double(cfg.binaryMACsPerSample),
                eurosPerMillionInferences: pricePerCoreHour / 3600 / perCPUSecond * 1e6))
        }

        // 2 threads against 1, interleaved (11 rounds of both)
        var threadScaling: PairedRatio?
        if threadCounts.contains(2) {
            let slice = max(0.1, seconds / 4)
            threadScaling = try Self.pairedRatio(rounds: 11, seconds: slice,
                numerator: { try Self.throughput(loaded, inputs, batch: 256, threads: 2, seconds: slice).0 },
                denominator: { try Self.throughput(loaded, inputs, batch: 256, threads: 1, seconds: slice).0 })
        }

        var pathRows: [PathRow] = []
        if comparePaths {
            for p in XNORPath.allCases where p.isSupported {
                let r = KernelBenchmark.run(m: m, n: n, k: k, threads: 1, minSeconds: seconds / 2, path: p)
                pathRows.append(PathRow(kind: "xnor-gemm", path: p.rawValue, figure: r.macsPerSecond, unit: "binary MAC/s"))
            }
            for sk in StemKernel.allCases where sk != .automatic && sk.isSupportedByCPU {
                guard let m = try? BinaryMoEModel.load(directory: dir!, stemKernel: sk, xnorPath: kernelPath) else { continue }
                // a conv front that the table kernel runs is also timed on the direct kernel
                var models = [m]
                if m.convRunsTable,
                   let d = try? BinaryMoEModel.load(directory: dir!, stemKernel: sk, xnorPath: kernelPath, convAlgorithm: .direct) {
                    models.append(d)
                }
                for m in models {
                    let (perSecond, _, _) = try Self.throughput(m, inputs, batch: 256, threads: 1, seconds: seconds / 2)
                    // a conv front runs on the conv kernel that stands for this stem kernel (a stem after it, if any,
                    // on the stem kernel itself): name the conv kernel
                    let (kind, path) = m.convKernel.map { ("model-conv", "\($0) (stem kernel \(sk.rawValue))") }
                        ?? ("model-stem", sk.rawValue)
                    pathRows.append(PathRow(kind: kind, path: path, figure: perSecond, unit: "samples/s at batch 256"))
                }
            }
        }

        var scaling: [ScalingRow] = []
        var expertsPaired: PairedRatio?
        var expertsGroupedPaired: PairedRatio?
        if expertsScaling > 0 {
            let base = NSTemporaryDirectory() + "bitfleet-bench-experts-\(getpid())"
            try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: base) }
            var models: [BinaryMoEModel] = []
            var variants: [(Int, Int?)] = [(16, nil), (expertsScaling, nil)]
            if let g = ModelConfig.suggestedRouterGroups(experts: expertsScaling) { variants.append((expertsScaling, g)) }
            for (e, groups) in variants {
                let config = ModelConfig(name: "random-\(e)-experts", version: "1", inputFeatures: 784, inputShape: [28, 28],
                                         inputBitPlanes: 4, inputScale: 255, stemWidth: 1024, experts: e, topK: 2,
                                         expertHidden: [256], classes: (0..<10).map { "class\($0)" }, routerGroups: groups)
                let d = base + "/\(e)" + (groups.map { "-g\($0)" } ?? "")
                try ModelWriter.writeRandom(directory: d, config: config, seed: 11)
                // the many-expert model runs the stem kernel the 16-expert one chose: each model's automatic choice
                // is timed at load, and on a busy host the two could differ, which would compare stems, not experts
                let m = try BinaryMoEModel.load(directory: d, stemKernel: models.first?.stemKernel ?? stemKernel,
                                                xnorPath: kernelPath)
                let (perSecond, cpu, samples) = try Self.throughput(m, inputs, batch: 256, threads: 1, seconds: seconds)
                scaling.append(ScalingRow(experts: e, routerGroups: groups, topK: 2, samplesPerSecond: perSecond,
                                          samplesPerCPUSecond: Double(samples) / max(cpu, 1e-9), mappedBytes: m.mappedBytes,
                                          routing: Routing(try m.predict(samples: inputs, count: 256).stats.expertActivations)))
                models.append(m)
            }
            let slice = max(0.1, seconds / 4)
            expertsPaired = try Self.pairedRatio(rounds: 11, seconds: slice,
                numerator: { try Self.throughput(models[1], inputs, batch: 256, threads: 1, seconds: slice).0 },
                denominator: { try Self.throughput(models[0], inputs, batch: 256, threads: 1, seconds: slice).0 })
            if models.count == 3 {
                expertsGroupedPaired = try Self.pairedRatio(rounds: 11, seconds: slice,
                    numerator: { try Self.throughput(models[2], inputs, batch: 256, threads: 1, seconds: slice).0 },
                    denominator: { try Self.throughput(models[0], inputs, batch: 256, threads: 1, seconds: slice).0 })
            }
        }

        let report = Report(
            cpu: CPUClock.cpuModelName ?? "unknown", clockHz: clock.hertz, clockSource: clock.source,
            procCPUInfoMHz: CPUClock.procCPUInfoMHz(), builtFor: CPUFeatures.built.description,
            runningCPU: CPUFeatures.running.description, optimizedBuild: CPUFeatures.isOptimizedBuild,
            kernelShape: [m, n, k], kernel: kernelRows, model: temporary == nil ? dir! : "(random, in a temp dir)",
            modelName: "\(cfg.name) v\(cfg.version)", modelSHA256: loaded.sha256, stemKernel: loaded.stemKernel.rawValue, mappedBytes: loaded.mappedBytes,
            privateBytes: loaded.privateBytes, binaryMACsPerSample: cfg.binaryMACsPerSample,
            pricePerCoreHour: pricePerCoreHour, models: modelRows,
            kernelPaths: KernelPaths(xnor: loaded.xnorPath.rawValue, stem: loaded.stemKernel.rawValue,
                                     stemSmallBatch: loaded.stemKernelSmallBatch.rawValue, conv: loaded.convKernel,
                                     xnorSupported: KernelCapabilities.running.xnorPaths,
                                     stemSupported: KernelCapabilities.running.stemKernels),
            pathComparison: pathRows, expertsScaling: scaling,
            expertsScalingRatio: scaling.count >= 2 ? scaling[1].samplesPerSecond / scaling[0].samplesPerSecond : nil,
            expertsScalingPaired: expertsPaired, expertsScalingGroupedPaired: expertsGroupedPaired, inputs: inputSource, routing: routing, threadScalingPaired: threadScaling)

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("CPU        \(report.cpu)   clock \(fmt(clock.hertz / 1e9, 2)) GHz (\(clock.source); /proc/cpuinfo says \(report.procCPUInfoMHz.map { fmt($0, 0) } ?? "?") MHz)")
        print("build      \(report.builtFor)   CPU has \(report.runningCPU)")
        print("kernels    xnor \(loaded.xnorPath.rawValue), stem \(loaded.stemKernel.rawValue) (batches under 16: \(loaded.stemKernelSmallBatch.rawValue))\(loaded.convKernel.map { ", conv \($0)" } ?? "")   (this CPU: \(KernelCapabilities.running))")
        if let w = CPUFeatures.slowBuildWarning { print("           \(w)") }
        if !kernelRows.isEmpty {
            print("")
            print("kernel     XNOR-popcount GEMM \(m)×\(n)×\(k), \(kernelRows[0].path) path; MAC/cycle from \(kernelRows[0].perfCyclesPerGEMM != nil ? "the cycle counter" : clock.source)")
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
        print("           \(cfg.inputFeatures) features × \(cfg.inputBitPlanes) planes → stem \(cfg.stemWidth) → \(cfg.experts) experts (top \(cfg.topK)) \(cfg.expertHidden) → \(cfg.classes.count) classes; \(cfg.binaryMACsPerSample) binary MACs/sample")
        print("memory     \(bytes(loaded.mappedBytes)) mapped (shared between processes) + \(bytes(loaded.privateBytes)) private repacked")
        print("inputs     \(inputSource); at batch 256 \(routing.text)")
        if self.inputs == nil {
            print("           (random bytes route unlike real data: pass --inputs with real samples for figures to compare with peers)")
        }
        print(pad("batch", 8) + pad("threads", 9) + pad("samples/s", 13) + pad("per core", 13) + pad("per CPU-s", 13) + pad("µs/sample", 12) + pad("GMAC/s", 9) + "€/M inferences @ €\(pricePerCoreHour)/core-h (per CPU-s)")
        for r in modelRows {
            print(pad("\(r.batch)", 8) + pad("\(r.threads)", 9) + pad(fmt(r.samplesPerSecond, 0), 13) + pad(fmt(r.samplesPerSecondPerCore, 0), 13)
                  + pad(fmt(r.samplesPerCPUSecond, 0), 13) + pad(fmt(r.microsecondsPerSample, 2), 12) + pad(fmt(r.binaryMACsPerSecond / 1e9, 1), 9) + fmt(r.eurosPerMillionInferences, 4))
        }
        if let t = threadScaling {
            print("threads    batch 256, 2 threads ÷ 1 thread, \(t.rounds) interleaved rounds of \(fmt(t.secondsPerMeasurement, 2)) s each: "
                  + "median \(fmt(t.median, 2))× (rounds \(fmt(t.low, 2))–\(fmt(t.high, 2))×)")
        }
        if !pathRows.isEmpty {
            print("")
            print("paths      every kernel path this CPU supports (1 thread)")
            let width = max(20, (pathRows.map { $0.path.count }.max() ?? 0) + 2)
            for r in pathRows {
                let v = r.unit == "binary MAC/s" ? fmt(r.figure / 1e9, 1) + " G" : fmt(r.figure, 0)
                print("           " + pad(r.kind, 12) + pad(r.path, width) + v + " " + r.unit)
            }
        }
        if scaling.count >= 2, let ratio = report.expertsScalingRatio {
            print("")
            print("experts    random models 784 × 4 planes → 1024 → E experts (top 2) [256] → 10, batch 256, 1 thread")
            for r in scaling {
                let name = "\(r.experts) experts" + (r.routerGroups.map { ", \($0) groups of \(r.experts / $0)" } ?? "")
                print("           " + pad(name, 30) + pad(fmt(r.samplesPerSecond, 0) + " samples/s", 22) + pad(bytes(r.mappedBytes) + " weights", 18)
                      + r.routing.text)
            }
            print("           \(scaling[1].experts) experts, one router, keep \(fmt(100 * ratio, 1)) % of the 16-expert samples/s")
            if let p = report.expertsScalingPaired {
                print("           interleaved, \(p.rounds) rounds of \(fmt(p.secondsPerMeasurement, 2)) s each: median \(fmt(100 * p.median, 1)) % "
                      + "(rounds \(fmt(100 * p.low, 1))–\(fmt(100 * p.high, 1)) %)")
            }
            if scaling.count == 3, let g = scaling[2].routerGroups, let p = report.expertsScalingGroupedPaired {
                print("           \(scaling[2].experts) experts, two-level router (\(g) groups): \(fmt(100 * scaling[2].samplesPerSecond / scaling[0].samplesPerSecond, 1)) %; "
                      + "interleaved median \(fmt(100 * p.median, 1)) % (rounds \(fmt(100 * p.low, 1))–\(fmt(100 * p.high, 1)) %)")
            }
        }
    }

    /// Samples/s (wall clock), CPU seconds and samples of repeated `predict` calls for `seconds`, after a warm-up.
    static func throughput(_ model: BinaryMoEModel, _ inputs: [UInt8], batch: Int, threads: Int,
                           seconds: Double) throws -> (Double, Double, Int) {
        let batchInputs = Array(inputs[0..<(batch * model.config.inputFeatures)])
        _ = try model.predict(samples: batchInputs, count: batch, threads: threads)
        var samples = 0
        let c0 = KernelBenchmark.processCPUSeconds()
        let t0 = KernelBenchmark.now()
        var elapsed = 0.0
        repeat {
            _ = try model.predict(samples: batchInputs, count: batch, threads: threads)
            samples += batch
            elapsed = KernelBenchmark.now() - t0
        } while elapsed < seconds
        return (Double(samples) / elapsed, KernelBenchmark.processCPUSeconds() - c0, samples)
    }

    private func fmt(_ v: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", v) }
    private func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count) }
    private func bytes(_ n: Int) -> String {
        n >= 1 << 20 ? fmt(Double(n) / Double(1 << 20), 1) + " MiB" : n >= 1 << 10 ? fmt(Double(n) / 1024, 1) + " KiB" : "\(n) B"
    }
}

extension StemKernel: ExpressibleByArgument {}
extension XNORPath: ExpressibleByArgument {}
