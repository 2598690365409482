// swift-tools-version: 6.1
// libFuzzer harnesses for Engine's parsers. Built apart from the shipped package, with the
// sanitizers on the whole graph:
//   swift build -c release --sanitize=fuzzer --sanitize=address --package-path Fuzz
// then run one harness on its seed corpus (see scripts/fuzz.sh).
import PackageDescription

let harnesses = [
    "FuzzGGUF", "FuzzSafeTensors", "FuzzVectorFiles", "FuzzIndex", "FuzzDeltaLog", "FuzzKeyFile", "FuzzTokenizers",
]

let package = Package(
    name: "EngineFuzz",
    dependencies: [.package(name: "Engine", path: "..")],
    targets: [
        .target(
            name: "FuzzSupport", dependencies: [.product(name: "Engine", package: "Engine")],
            path: "Sources/FuzzSupport")
    ]
        + harnesses.map {
            .executableTarget(
                name: $0,
                dependencies: ["FuzzSupport", .product(name: "Engine", package: "Engine")],
                path: "Sources/\($0)",
                // libFuzzer provides main; the harness file defines only LLVMFuzzerTestOneInput
                swiftSettings: [.unsafeFlags(["-parse-as-library"])])
        }
)
