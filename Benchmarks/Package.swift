// swift-tools-version: 6.1
// Micro-benchmarks of the kernels (ordo-one/benchmark). Run from this folder:
//   swift package benchmark
// The side-by-side report against machine limits is `engine bench kernels` (see docs/benchmarks.md).
import PackageDescription
import Foundation

// A path dependency is identified by its folder name, which depends on where the repository
// was cloned.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "EngineBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "EngineBenchmarks",
            dependencies: [
                .product(name: "Engine", package: root),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/EngineBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
