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
//   Kernels.swift        the stem's portable bit-plane kernel
//   KernelPaths.swift    run-time choice of kernel paths (XNORPath, StemKernel), BITFLEET_KERNEL_PATH / _STEM_KERNEL
//   StemLookup.swift     the stem weights re-laid for the table-lookup kernel; the stem kernel chosen by timing
//   CEngineSupport       C kernels, one function per instruction set: xnor_gemm.c (portable, AVX2, AVX-512
//                        VPOPCNTDQ), lut_stem.c (AVX2 lookup), stem_int8.c (AVX-512 VNNI, AMX-INT8, threshold)
//   Model.swift          loading, routing (top-k, ties to the lower index), counting-sort grouping per expert,
//                        one GEMM chain per expert, gate-weighted combination, softmax
//   ThreadPool.swift     persistent pool; the caller always works too; safe for concurrent callers
//   CPUFeatures.swift    what the build assumed vs what the CPU has
//   KernelBenchmark.swift, ModelWriter.swift   benchmark pieces and a Swift model writer (random models)
//
// Build: `swift build -c release -Xcc -march=x86-64-v2` (Ops/build.sh). That clang flag also sets the Swift code's
// target features (the compiler takes them from its clang importer), so Swift code gets `popcnt`; every hot kernel
// is C with its own `target(...)` attribute and runs only where the CPU reports the features (one binary for a
// mixed fleet). Call `CPUFeatures.unsupportedMessage()` first thing in main.
