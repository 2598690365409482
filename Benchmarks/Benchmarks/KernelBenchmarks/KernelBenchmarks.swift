import Benchmark
import Engine

/// Throughput of each kernel family at the selected ISA level, one thread. Thresholds live in
/// the plugin's baselines; the ratios to machine limits come from `engine bench kernels`.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput], warmupIterations: 2,
        maxDuration: .seconds(2), maxIterations: 200)

    Benchmark("hamming 256-bit x 1M (1 thread)", configuration: .init(scalingFactor: .mega)) { benchmark in
        let k = try Kernels.selected(threads: 1)
        var rng = SeededRandom(seed: 1)
        let codes = rng.words(1 << 22)
        let q = rng.words(4)
        var out = [UInt32](repeating: 0, count: 1 << 20)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try codes.withUnsafeBufferPointer { c in
                try q.withUnsafeBufferPointer { qp in
                    try out.withUnsafeMutableBufferPointer {
                        try k.hammingDistances(query: qp, codes: c, bits: 256, into: $0)
                    }
                }
            }
        }
        blackHole(out)
    }

    Benchmark("attention decode f32 KV T=8192 32/8x128 (1 thread)") { benchmark in
        let k = try Kernels.selected(threads: 1)
        let shape = try AttentionShape(heads: 32, kvHeads: 8, headDim: 128)
        var rng = SeededRandom(seed: 2)
        let kv = rng.uniform(8192 * 8 * 128)
        let q = rng.uniform(32 * 128)
        var out = [Float](repeating: 0, count: 32 * 128)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try kv.withUnsafeBytes { kb in
                try q.withUnsafeBufferPointer { qp in
                    try out.withUnsafeMutableBufferPointer {
                        try k.attentionDecode(
                            shape: shape, q: qp, keys: kb, keyType: .f32, values: kb, valueType: .f32, length: 8192,
                            into: $0)
                    }
                }
            }
        }
        blackHole(out)
    }

    Benchmark("gemv q4_0 4096x4096 int8 activations (1 thread)") { benchmark in
        let k = try Kernels.selected(threads: 1)
        var rng = SeededRandom(seed: 3)
        let m = try QuantizedMatrix(
            quantizing: rng.uniform(4096 * 4096), rows: 4096, cols: 4096, type: .q4_0, kernels: k)
        let x = rng.uniform(4096)
        var y = [Float](repeating: 0, count: 4096)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try x.withUnsafeBufferPointer { xp in
                try y.withUnsafeMutableBufferPointer { try k.gemv(m, x: xp, into: $0, numerics: .int8) }
            }
        }
        blackHole(y)
    }

    Benchmark("pq 4-bit fast-scan M=32 x 1M (1 thread)", configuration: .init(scalingFactor: .mega)) { benchmark in
        let k = try Kernels.selected(threads: 1)
        var rng = SeededRandom(seed: 4)
        let codes = try PackedPQ4Codes(codes: (0..<(32 << 20)).map { _ in UInt8(rng.next() % 16) }, subquantizers: 32)
        let table = try rng.uniform(32 * 16, 0, 4).withUnsafeBufferPointer {
            try QuantizedPQ4Table(table: $0, subquantizers: 32)
        }
        var out = [UInt16](repeating: 0, count: codes.blocks * 32)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try out.withUnsafeMutableBufferPointer { try k.pqScan4(codes: codes, table: table, into: $0) }
        }
        blackHole(out)
    }
}
