// swift-tools-version: 6.0
import PackageDescription

// The release build must set a target CPU: without it the compiler emits no `popcnt`/AVX2 and the binary
// kernels run at a third of their speed. `Ops/build.sh` passes `-Xcc -march=x86-64-v3` (Swift takes the target
// features from the Clang importer; Swift 6.3's own `-target-cpu` does not know `x86-64-v3`) together with
// `-Xswiftc -DBITFLEET_AVX2`, which compiles the XNOR kernel's AVX2-intrinsics tile (Swift cannot compile those
// intrinsics without the target CPU). The executable checks at start that the CPU has what the build assumed (see
// CPUFeatures in BitFleetEngine).
let package = Package(
    name: "BitFleet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "bitfleet", targets: ["bitfleet"]),
        .library(name: "BitFleetEngine", targets: ["BitFleetEngine"]),
        .library(name: "BitFleetPostgres", targets: ["BitFleetPostgres"]),
        .library(name: "BitFleetFetch", targets: ["BitFleetFetch"]),
        .library(name: "BitFleetWorker", targets: ["BitFleetWorker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // libcurl headers and library from the system (Debian: libcurl4-openssl-dev, found on the default
        // multiarch include path); the C shim wraps the variadic curl_easy_setopt and holds the SSRF guard.
        .target(
            name: "CCurl",
            linkerSettings: [.linkedLibrary("curl")]
        ),
        // CPU feature checks (compile-time macros and __builtin_cpu_supports) for the engine.
        .target(name: "CEngineSupport"),
        // The one JSON string decoder, shared by the engine's config reader and the fetch module's input decoders.
        .target(name: "JSONText"),
        .target(name: "BitFleetEngine", dependencies: ["CEngineSupport", "JSONText"]),
        .target(
            name: "BitFleetPostgres",
            dependencies: ["CLibPQ"]
        ),
        .target(
            name: "BitFleetFetch",
            dependencies: ["CCurl", "JSONText"]
        ),
        .target(
            name: "BitFleetWorker",
            dependencies: [
                "BitFleetEngine", "BitFleetPostgres", "BitFleetFetch",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            plugins: ["EmbedMigrations"]
        ),
        .executableTarget(
            name: "bitfleet",
            dependencies: [
                "BitFleetWorker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Migrations/*.sql are compiled into the binary, so `bitfleet migrate` needs no files beside it.
        .executableTarget(name: "bitfleet-embed-sql", path: "Plugins/EmbedSQLTool"),
        .plugin(name: "EmbedMigrations", capability: .buildTool(), dependencies: ["bitfleet-embed-sql"]),
        .testTarget(name: "BitFleetEngineTests", dependencies: ["BitFleetEngine"]),
        // Throwaway databases and the HTTP fixture server for the integration tests (not shipped).
        .target(name: "BitFleetTestSupport", dependencies: ["BitFleetPostgres"], path: "Tests/BitFleetTestSupport"),
        .testTarget(name: "BitFleetPostgresTests", dependencies: ["BitFleetPostgres", "BitFleetTestSupport"]),
        .testTarget(name: "BitFleetFetchTests", dependencies: ["BitFleetFetch"]),
        .testTarget(name: "BitFleetWorkerTests", dependencies: [
            "BitFleetWorker", "BitFleetTestSupport",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
