import Engine
import Foundation

/// Writes a fuzz input to a per-process scratch file (parsers read paths) and returns its path.
public func scratchFile(_ data: UnsafePointer<UInt8>, _ size: Int, name: String) -> String {
    let dir = NSTemporaryDirectory() + "engine-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/" + name
    FileManager.default.createFile(atPath: path, contents: Data(bytes: data, count: size))
    return path
}

/// The scratch directory of this process.
public var scratchDirectory: String { NSTemporaryDirectory() + "engine-fuzz-\(getpid())" }

/// Runs `body`; any thrown error is the expected refusal of bad input. Crashes, hangs and
/// sanitizer reports are what the fuzzer looks for.
public func refuseQuietly(_ body: () throws -> Void) {
    do { try body() } catch {}
}
