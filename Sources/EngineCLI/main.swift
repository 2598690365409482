import ArgumentParser
import Engine

@main
struct EngineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Encrypted transformer inference and memory/disk hybrid vector search.",
        subcommands: [Demo.self, Info.self, SelfCheckCommand.self, Bench.self],
        defaultSubcommand: Info.self
    )
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print detected and selected SIMD levels, BLAS library and threads.")
    func run() throws {
        configureThreads()
        print(SystemInfo())
    }
}

struct SelfCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selfcheck",
        abstract: "Compare every SIMD kernel variant with its scalar reference on random data.")
    @Option(help: "Random seed.") var seed: UInt64 = 42

    func run() throws {
        configureThreads()
        let outcomes = try SelfCheck.run(seed: seed)
        for o in outcomes { print(o) }
        let failed = outcomes.filter { !$0.passed }.count
        print("selfcheck: \(outcomes.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The built-in default job: system information and the kernel self-check.")
    func run() throws {
        configureThreads()
        print(SystemInfo())
        print("")
        var check = SelfCheckCommand()
        check.seed = 42
        try check.run()
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (release builds only).",
        subcommands: [BenchKernels.self])
}

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "Kernel throughput against this machine's stream-read bandwidth and sgemm peak, measured in the same run; prints a Markdown table.")
    @Flag(help: "Smaller buffers and fewer repetitions (a smoke run, not for quoting).") var quick = false

    func run() throws {
        #if DEBUG
        FileHandleErr.write("warning: debug build; C kernels are compiled at -O0. Use `swift run -c release engine bench kernels`.\n")
        #endif
        configureThreads()
        let rows = try KernelBenchmarks.run(quick: quick) { FileHandleErr.write("bench: \($0)...\n") }
        print(KernelBenchmarks.markdown(rows))
    }
}

import Foundation
enum FileHandleErr {
    static func write(_ s: String) { FileHandle.standardError.write(s.data(using: .utf8)!) }
}
