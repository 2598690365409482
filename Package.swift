// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Engine",
    products: [
        .library(name: "Engine", targets: ["Engine"]),
        .executable(name: "engine", targets: ["EngineCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", exact: "3.12.3"),
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
            linkerSettings: [
                .linkedLibrary("openblas"),
                .linkedLibrary("lapacke"),
                .linkedLibrary("m"),
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
        .executableTarget(
            name: "EngineCLI",
            dependencies: [
                "Engine",
                "EngineTools",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/EngineCLI"
        ),
        .testTarget(
            name: "EngineTests",
            dependencies: [
                "Engine", "EngineTools", "CKernels", .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Tests/EngineTests",
            exclude: ["Fixtures"]
        ),
    ],
    cLanguageStandard: .c11
)
