import ArgumentParser
import Engine
import Foundation

// Helpers shared by the command files: messages, timing, tables, memory figures, input lines.

/// Writes one line to standard error (progress, summaries); standard output carries results only.
func note(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// Writes text to standard output without a newline (streamed tokens).
func emit(_ s: String) {
    FileHandle.standardOutput.write(Data(s.utf8))
}

/// Warns when a benchmark runs from a debug build (SwiftPM compiles C at -O0 there).
func warnIfDebug(_ command: String) {
    #if DEBUG
        note("warning: debug build (C kernels at -O0); use `swift run -c release engine \(command)`.")
    #endif
}

/// Elapsed wall-clock time since creation.
struct Stopwatch {
    private(set) var start = DispatchTime.now().uptimeNanoseconds
    var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9 }
    var milliseconds: Double { seconds * 1e3 }
    /// Seconds since the last reset (or creation), then restarts.
    mutating func lap() -> Double {
        let s = seconds
        start = DispatchTime.now().uptimeNanoseconds
        return s
    }
    /// "1.2 s"
    var text: String { String(format: "%.1f s", seconds) }
}

/// Median of a non-empty sample (upper median for even counts).
func median(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }

/// `x` with `digits` decimals.
func fixed(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }

/// A Markdown table built row by row.
struct MarkdownTable: CustomStringConvertible {
    let header: [String]
    private(set) var rows: [[String]] = []
    init(_ header: [String]) { self.header = header }
    mutating func add(_ row: [String]) { rows.append(row) }
    var description: String {
        ([Self.line(header), Self.rule(header.count)] + rows.map(Self.line)).joined(separator: "\n")
    }
    /// One row, for tables printed as they are measured.
    static func line(_ cells: [String]) -> String { "| " + cells.joined(separator: " | ") + " |" }
    /// The separator line under a header of `columns` cells.
    static func rule(_ columns: Int) -> String { "|" + String(repeating: "---|", count: columns) }
}

func isDirectory(_ path: String) -> Bool {
    var dir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &dir) && dir.boolValue
}

/// Resident set size now, in MiB (from /proc/self/statm; 0 where unavailable).
func currentRSSMiB() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
        let pages = s.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
    else { return 0 }
    return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
}

/// Peak resident memory of this process so far, in MiB.
func peakRSSMiB() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}

/// The lines of a text file (a final newline does not make an extra empty line). Invalid UTF-8 is
/// refused with its line number, unless `lossy` (then it becomes U+FFFD).
func readLines(_ path: String, lossy: Bool = false) throws -> [String] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw EngineError.io("cannot read \(path)")
    }
    var lines: [String] = []
    for (n, raw) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
        if let s = String(validating: raw, as: UTF8.self) {
            lines.append(s)
        } else if lossy {
            lines.append(String(decoding: raw, as: UTF8.self))
        } else {
            throw EngineError.invalidArgument(
                "\(path) line \(n + 1) is not valid UTF-8 (pass --lossy-utf8 to replace invalid bytes with U+FFFD)")
        }
    }
    if lines.last == "" { lines.removeLast() }
    return lines
}

/// Comma-separated integers ("1,2,4").
func integerList(_ s: String) -> [Int] { s.split(separator: ",").compactMap { Int($0) } }

extension WeightFormat: ExpressibleByArgument {}
extension BertEncryption: ExpressibleByArgument {}
extension Metric: ExpressibleByArgument {}
extension VectorType: ExpressibleByArgument {}
extension IndexIO: ExpressibleByArgument {}
extension PostingPayload: ExpressibleByArgument {}

/// `--activations`: numerics of quantized weights.
enum ActivationsOption: String, ExpressibleByArgument, CaseIterable {
    case exact, int8
    var numerics: Numerics { self == .exact ? .exact : .int8 }
}

/// `--type`: matrix type of a written GGUF.
enum MatrixTypeOption: String, ExpressibleByArgument, CaseIterable {
    case f32, f16, q8_0
    var rowType: RowType { [.f32: RowType.f32, .f16: .f16, .q8_0: .q8_0][self]! }
}

// MARK: option checks

/// Refuses `value` outside `range` with a message naming the option.
func checkRange<T: Comparable>(_ value: T, _ range: ClosedRange<T>, _ option: String) throws {
    guard range.contains(value) else {
        throw ValidationError("\(option) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
    }
}

/// Refuses a non-finite value or one outside `range`.
func checkRange(_ value: Float, _ range: ClosedRange<Float>, _ option: String) throws {
    guard value.isFinite, range.contains(value) else {
        throw ValidationError("\(option) must be a number in \(range.lowerBound)...\(range.upperBound), got \(value)")
    }
}

/// `--threads`: 1 ... 4 x cores.
func checkThreads(_ n: Int?, _ option: String = "--threads") throws {
    if let n { try checkRange(n, 1...Limits.threads, option) }
}

/// A comma-separated list of integers, each in `range`.
func checkedList(_ s: String, _ range: ClosedRange<Int>, _ option: String) throws -> [Int] {
    let parts = s.split(separator: ",", omittingEmptySubsequences: false)
    var out: [Int] = []
    for p in parts {
        guard let v = Int(p.trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("\(option) must be comma-separated integers, got \(s.debugDescription)")
        }
        try checkRange(v, range, option)
        out.append(v)
    }
    return out
}

/// `ENGINE_THREADS`, if set, must be an integer in 1 ... 4 x cores (checked by every command).
func checkEnvironment() throws {
    do { try Limits.applyEnvironment() } catch { throw ValidationError(error.description) }
    if let s = ProcessInfo.processInfo.environment["ENGINE_THREADS"] {
        guard let n = Int(s), (1...Limits.threads).contains(n) else {
            throw ValidationError(
                "ENGINE_THREADS must be an integer in 1...\(Limits.threads), got \(s.debugDescription)")
        }
    }
}

// MARK: outputs

/// The same file (device and inode) when both exist, else the same normalised path.
func sameFile(_ a: String, _ b: String) -> Bool {
    var sa = stat()
    var sb = stat()
    if stat(a, &sa) == 0 && stat(b, &sb) == 0 { return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino }
    let na = URL(fileURLWithPath: a).standardizedFileURL.resolvingSymlinksInPath().path
    let nb = URL(fileURLWithPath: b).standardizedFileURL.resolvingSymlinksInPath().path
    return na == nb
}

/// Refuses an output that is one of the command's inputs, or that exists unless `force`. Returns
/// the path without trailing slashes.
@discardableResult
func checkOutput(_ output: String, force: Bool, inputs: [String?], option: String = "--output") throws -> String {
    var path = output
    while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
    guard !path.isEmpty else { throw ValidationError("\(option) is empty") }
    for case let input? in inputs where sameFile(path, input) {
        throw ValidationError("\(option) \(output) is also an input of this command: refusing to overwrite it")
    }
    if FileManager.default.fileExists(atPath: path) && !force {
        throw ValidationError("\(option) \(output) exists: refusing to replace it (pass --force to replace)")
    }
    return path
}

/// The bearer token in `--api-key-file` (trimmed), or nil without one.
func readAPIKey(_ path: String?) throws -> String? {
    guard let path else { return nil }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ValidationError("cannot read --api-key-file \(path)")
    }
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}
