// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Engine",
    products: [
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "EngineServer", targets: ["EngineServer"]),
        .library(name: "EngineClient", targets: ["EngineClient"]),
        .executable(name: "engine", targets: ["EngineCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", exact: "3.12.3"),
        // engine serve: HTTP server, graceful shutdown, logging, Prometheus metrics
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        // engine serve's split-encryption endpoint and its client: WebSocket with binary frames
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", exact: "2.8.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        // EngineClient: the HTTP client of engine serve (plain and encrypted)
        .package(url: "https://github.com/swift-server/async-http-client", exact: "1.37.0"),
    ],
    targets: [
        // C11 kernels. SIMD bodies use per-function `target` attributes, so no
        // unsafe compiler flags are needed and the package stays usable by version.
        .target(
            name: "CKernels",
            path: "Sources/CKernels",
            cSettings: [
                .headerSearchPath("internal"),
                .define("_GNU_SOURCE"),
            ],
            // OpenBLAS and LAPACKE are opened on first use (blas.c), not linked: most commands
            // never call them, and loading them cost every process 6-11 ms of CPU
            linkerSettings: [
                .linkedLibrary("m"),
                .linkedLibrary("dl"),
            ]
        ),
        .target(
            name: "Engine",
            dependencies: ["CKernels", .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/Engine"
        ),
        // Tools built on the library (kernel benchmarks, leakage attacks, dataset loaders): used by
        // the CLI and the tests, not part of the Engine product.
        .target(
            name: "EngineTools",
            dependencies: ["Engine", "CKernels"],
            path: "Sources/EngineTools"
        ),
        // `engine serve`: OpenAI-compatible, encrypted and search endpoints over the library.
        .target(
            name: "EngineServer",
            dependencies: [
                "Engine",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/EngineServer"
        ),
        // Client of `engine serve`: OpenAI-style calls, and the encrypted client that holds the key.
        .target(
            name: "EngineClient",
            dependencies: [
                "Engine", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
            ],
            path: "Sources/EngineClient"
        ),
        .executableTarget(
            name: "EngineCLI",
            dependencies: [
                "Engine",
                "EngineTools",
                "EngineServer",
                "EngineClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/EngineCLI"
        ),
        .testTarget(
            name: "EngineTests",
            dependencies: [
                "Engine", "EngineTools", "EngineClient", "CKernels", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
            ],
            path: "Tests/EngineTests",
            exclude: ["Fixtures"]
        ),
    ],
    cLanguageStandard: .c11
)
