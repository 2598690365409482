import XCTest
import Engine

/// Every ISA level this machine can run; each kernel test loops over these.
let allLevels: [ISA] = ISA.available

/// Kernels for `isa`, single-threaded unless asked otherwise (so tests compare one code path).
func kernels(_ isa: ISA, threads: Int = 1) throws -> Kernels { try Kernels(isa: isa, threads: threads) }

/// Asserts that `body` throws an `EngineError` of the expected kind.
func assertThrowsEngineError(_ kind: (EngineError) -> Bool, _ message: String = "",
                             file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("expected an EngineError: \(message)", file: file, line: line)
    } catch let e as EngineError {
        XCTAssertTrue(kind(e), "unexpected error \(e) \(message)", file: file, line: line)
        XCTAssertFalse(e.description.isEmpty, file: file, line: line)
    } catch {
        XCTFail("expected an EngineError, got \(error)", file: file, line: line)
    }
}

func isInvalidArgument(_ e: EngineError) -> Bool { if case .invalidArgument = e { return true }; return false }
func isNonFinite(_ e: EngineError) -> Bool { if case .nonFinite = e { return true }; return false }
func isUnsupportedISA(_ e: EngineError) -> Bool { if case .unsupportedISA = e { return true }; return false }

/// Path of the built `engine` executable next to the test bundle.
func engineExecutable() -> URL {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    while !FileManager.default.fileExists(atPath: dir.appendingPathComponent("engine").path) && dir.path != "/" {
        dir = dir.deletingLastPathComponent()
    }
    return dir.appendingPathComponent("engine")
}

/// Runs the engine executable with extra environment; returns (exit status, stdout+stderr).
func runEngine(_ args: [String], env: [String: String] = [:]) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = engineExecutable()
    p.arguments = args
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    p.environment = e
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}
