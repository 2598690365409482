import ArgumentParser
import Engine

@main
struct EngineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Encrypted transformer inference and memory/disk hybrid vector search.",
        subcommands: [Demo.self, Info.self, SelfCheckCommand.self],
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
