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

/// The lines of a text file (a final newline does not make an extra empty line).
func readLines(_ path: String) throws -> [String] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw EngineError.io("cannot read \(path)")
    }
    var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
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
