// BitFleetEngine — binary mixture-of-experts inference on CPUs.
//
// Model format: docs/MODEL_FORMAT.md (a directory with config.json + model.safetensors). The engine imports nothing
// of the fleet; the worker calls:
//
//     let model = try BinaryMoEModel.load(directory: dir, expectedSHA256: registeredDigest)
//     let result = try model.predict(samples: bytes, count: n, topClasses: 3, threads: 1)
//
// Layout of the sources:
//   JSON.swift           strict JSON parser (config.json, safetensors headers)
//   ModelConfig.swift    config.json parsing and limits
//   MappedFile.swift     read-only MAP_SHARED mapping (one page-cache copy for every worker process)
//   SafeTensors.swift    header validation: dtype, shape, offsets inside the file, no overlap, no holes
//   SHA256.swift         hand-written SHA-256 for the registry digest check
//   PackedMatrix.swift   {±1} rows as UInt64 words (zero-copy view of the mapping or a repacked copy)
//   Kernels.swift        XNOR/AND-popcount GEMM (2×4 register tiles, L1 row blocks), the stem's bit-plane kernel
//   StemLookup.swift     the stem weights re-laid for the table-lookup kernel (4-bit activations × one-bit weights)
//   Model.swift          loading, routing (top-k, ties to the lower index), counting-sort grouping per expert,
//                        one GEMM chain per expert, gate-weighted combination, softmax
//   ThreadPool.swift     persistent pool; the caller always works too; safe for concurrent callers
//   CPUFeatures.swift    what the build assumed vs what the CPU has
//   KernelBenchmark.swift, ModelWriter.swift   benchmark pieces and a Swift model writer (random models)
//
// Speed needs a target CPU: build with `swift build -c release -Xcc -march=x86-64-v3`. That clang flag alone also
// sets the Swift code's target features (the compiler takes them from its clang importer), so the kernels get
// `popcnt` and AVX2 `vpshufb` popcounts (checked with objdump). `-Xswiftc -target-cpu -Xswiftc x86-64-v3` is rejected
// by Swift 6.3 ("unknown target CPU 'x86-64-v3'"; `-target-cpu haswell` or `znver3` would be accepted) and is not
// needed. `-Xswiftc -DBITFLEET_AVX2` (Ops/env.sh passes it with the flag) adds the XNOR kernel's AVX2-intrinsics
// tile. The stem's table-lookup kernel is C (CEngineSupport/lut_stem.c, `target("avx2")`), chosen at load time when
// the CPU has AVX2 and the model ≤ 4 input planes (StemLookup.swift). Call `CPUFeatures.unsupportedMessage()` first
// thing in main.
