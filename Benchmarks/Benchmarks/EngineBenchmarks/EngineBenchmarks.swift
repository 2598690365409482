import Benchmark
import Engine
import Foundation

/// The suite: every kernel family at the selected ISA level (`CK_ISA` to force one), then the
/// hot model and index paths, all on one thread. Each benchmark's work per iteration matches
/// its scaling factor, so throughput is in the unit its name ends with: "(M distances)" with
/// `.mega` means one iteration scans exactly 1,000,000 codes and throughput reads in millions
/// of distances per second. Benchmarks that move a known number of bytes also report "MB/s".
/// Data is made once per process (lazy globals, touched before `startMeasurement()`).
let benchmarks: @Sendable () -> Void = {
    // ENGINE_BENCH_SHORT=1: the reduced pass .ci/run makes (fewer, shorter samples).
    let short = ProcessInfo.processInfo.environment["ENGINE_BENCH_SHORT"] == "1"
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: short ? 2 : 3,
        maxDuration: short ? .milliseconds(800) : .seconds(2),
        maxIterations: short ? 100 : 200,
        thresholds: Tolerance.standard)
    kernelBenchmarks()
    modelBenchmarks()
}

/// Regression tolerances of `thresholds check` (p90 against the stored p90 of the CPU kind): a
/// benchmark fails when it runs at half its recorded speed or less (time p90 up 100%, throughput
/// p90 down 50%). That is wide because the short pass's p90 moves by up to 64% between runs on
/// the same 2-core VM (three checks against one baseline, docs/benchmarks.md); it still catches
/// what matters most, a lost SIMD level (3-16x) or an extra pass over memory. Finer comparisons:
/// `swift package benchmark baseline compare` on a quiet machine. Mallocs are counted exactly
/// where a path promises none (`Tolerance.noAllocation`). MB/s is not checked: it restates the
/// wall clock, and a custom metric read back from a threshold file loses its polarity (larger is
/// better) in benchmark 1.38.1, so it would count an improvement as a regression.
enum Tolerance {
    static var time: BenchmarkThresholds { BenchmarkThresholds(relative: [.p90: 100.0]) }
    static var rate: BenchmarkThresholds { BenchmarkThresholds(relative: [.p90: 50.0]) }
    static var standard: [BenchmarkMetric: BenchmarkThresholds] {
        [
            .wallClock: time, .throughput: rate, .mallocCountTotal: BenchmarkThresholds(absolute: [.p90: 1_000_000]),
        ]
    }
    static var noAllocation: [BenchmarkMetric: BenchmarkThresholds] {
        [.wallClock: time, .throughput: rate, .mallocCountTotal: .strict]
    }
}

/// Megabytes per second over the bytes an iteration reads, next to the framework's throughput.
var megabytesPerSecond: BenchmarkMetric { .custom("MB/s", polarity: .prefersLarger, useScalingFactor: false) }

/// Runs `body` as the measured region and records `bytes / elapsed` as MB/s.
func measure(_ benchmark: Benchmark, bytes: Int? = nil, _ body: () throws -> Void) rethrows {
    let clock = ContinuousClock()
    let start = clock.now
    benchmark.startMeasurement()
    try body()
    benchmark.stopMeasurement()
    if let bytes {
        let s = (clock.now - start) / .seconds(1)
        if s > 0 { benchmark.measurement(megabytesPerSecond, Int((Double(bytes) / s / 1e6).rounded())) }
    }
}

/// A configuration with the defaults plus `extra` metrics and the given scaling and tolerances.
func config(
    _ scaling: BenchmarkScalingFactor = .one, bytes: Bool = false,
    thresholds: [BenchmarkMetric: BenchmarkThresholds] = Tolerance.noAllocation
) -> Benchmark.Configuration {
    var c = Benchmark.defaultConfiguration
    c.scalingFactor = scaling
    c.thresholds = thresholds
    if bytes {
        c.metrics.append(megabytesPerSecond)
        c.thresholds?[megabytesPerSecond] = BenchmarkThresholds.none
    }
    return c
}

/// One-thread kernels at the selected level; a failure here is a benchmark error, not a crash.
func kernels() throws -> Kernels { try Kernels.selected(threads: 1) }

/// Values made on a benchmark's first iteration and kept for the rest: the closure runs once per
/// iteration, and setup (quantizing a matrix, loading a model) must not run again each time.
/// Iterations of one benchmark run on one thread, one benchmark per process.
nonisolated(unsafe) private var memo: [String: Any] = [:]

func once<T>(_ key: String, _ make: () throws -> T) rethrows -> T {
    if let v = memo[key] as? T { return v }
    let v = try make()
    memo[key] = v
    return v
}

/// Benchmark names use underscores for spaces: the threshold files are named after the
/// benchmark with spaces turned into underscores when written but looked up by the plain name
/// when checked (benchmark 1.38.1), so a name with a space could never be checked.
func named(_ words: String) -> String {
    precondition(!words.contains("/"), "a benchmark name must not contain /")
    return words.replacingOccurrences(of: " ", with: "_")
}
