import ArgumentParser
import Engine
import Foundation

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print detected and selected SIMD levels, BLAS library and threads.")
    func validate() throws {
        try checkEnvironment()
    }

    func run() throws {
        configureThreads()
        let info = SystemInfo()
        print(info)
        // a CK_ISA that names no level (or one this CPU lacks) is an error, not a line of the report
        if case .failure(let e) = info.selected { throw e }
    }
}

struct SelfCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selfcheck",
        abstract: "Compare every SIMD kernel variant with its scalar reference on random data.")
    @Option(parsing: .unconditional, help: "Random seed.") var seed: UInt64 = 42

    func validate() throws {
        try checkEnvironment()
    }

    func run() throws {
        configureThreads()
        let outcomes = try SelfCheck.run(seed: seed)
        for o in outcomes { print(o) }
        let failed = outcomes.filter { !$0.passed }.count
        print("selfcheck: \(outcomes.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }
}
