// swift-tools-version: 6.1
// libFuzzer harnesses for Engine's parsers, built apart from the shipped package. The library's
// own sources are compiled here a second time (Sources/Vendored/* are symlinks to ../Sources), so
// that `swift build --sanitize=fuzzer --sanitize=address` instruments them too: coverage feedback
// comes from the parsers, not only from the harnesses.
//   swift build -c release --sanitize=fuzzer --sanitize=address --package-path Fuzz
// then run one harness on its seed corpus (see scripts/fuzz.sh).
import PackageDescription

let harnesses = [
    "FuzzGGUF", "FuzzSafeTensors", "FuzzVectorFiles", "FuzzIndex", "FuzzDeltaLog", "FuzzKeyFile", "FuzzTokenizers",
]

let package = Package(
    name: "EngineFuzz",
    dependencies: [.package(url: "https://github.com/apple/swift-crypto", exact: "3.12.3")],
    targets: [
        .target(
            name: "CKernels", path: "Sources/Vendored/CKernels",
            cSettings: [
                .headerSearchPath("internal"), .define("_GNU_SOURCE"),
                // UndefinedBehaviorSanitizer on the C kernels (Swift code traps on overflow by itself;
                // swift build has no --sanitize=undefined): any report aborts, so libFuzzer keeps it
                .unsafeFlags(["-fsanitize=undefined", "-fno-sanitize-recover=undefined"]),
            ],
            // OpenBLAS and LAPACKE are opened on first use (blas.c), as in the main package
            linkerSettings: [.linkedLibrary("m"), .linkedLibrary("dl")]),
        .target(
            name: "Engine", dependencies: ["CKernels", .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/Vendored/Engine",
            // coverage for libFuzzer's guidance: --sanitize=fuzzer alone did not instrument this
            // target's Swift code in fresh builds (only the C kernels' counters appeared)
            swiftSettings: [.unsafeFlags(["-sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp"])]),
        .target(name: "FuzzSupport", dependencies: ["Engine"], path: "Sources/FuzzSupport"),
    ]
        + harnesses.map {
            .executableTarget(
                name: $0,
                dependencies: ["FuzzSupport", "Engine"],
                path: "Sources/\($0)",
                // libFuzzer provides main; the harness file defines only LLVMFuzzerTestOneInput
                swiftSettings: [.unsafeFlags(["-parse-as-library"])],
                linkerSettings: [.unsafeFlags(["-Xclang-linker", "-fsanitize=undefined"])])
        },
    cLanguageStandard: .c11
)
