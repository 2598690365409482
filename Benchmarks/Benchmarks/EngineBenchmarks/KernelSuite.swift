import Benchmark
import Engine

// Data shared by the kernel benchmarks, made on first use (each benchmark runs in its own
// process, so only what it touches is built).
private let million = 1_000_000

nonisolated(unsafe) private let binaryCodes: [UInt64] = {
    var r = SeededRandom(seed: 1)
    return r.words(million * 4) // 256-bit codes
}()

nonisolated(unsafe) private let pq8Codes: [UInt8] = {
    var r = SeededRandom(seed: 2)
    return (0..<(million * 32)).map { _ in UInt8(truncatingIfNeeded: r.next()) }
}()

nonisolated(unsafe) private let pq4Codes: PackedPQ4Codes = {
    var r = SeededRandom(seed: 3)
    return try! PackedPQ4Codes(codes: (0..<(million * 32)).map { _ in UInt8(r.next() % 16) }, subquantizers: 32)
}()

/// 1,000 rows of Fashion-MNIST's dimension (784), f32 and f16.
nonisolated(unsafe) private let rows784: (f32: [Float], f16: [UInt16]) = {
    var r = SeededRandom(seed: 4)
    let x = r.uniform(1000 * 784)
    return (x, x.map { Float16($0).bitPattern })
}()

/// A decode cache of T positions: KV heads x T rows of `type` (head-major, as attentionDecode reads).
private func cache(_ type: RowType, positions t: Int, kvHeads: Int, headDim: Int, seed: UInt64) throws -> [UInt8] {
    var r = SeededRandom(seed: seed)
    let m = try QuantizedMatrix(
        quantizing: r.uniform(t * kvHeads * headDim), rows: t * kvHeads, cols: headDim, type: type, kernels: kernels())
    return m.withUnsafeBytes { Array($0) }
}

func kernelBenchmarks() {
    // MARK: Hamming
    Benchmark(named("hamming 256-bit 1 query x 1M codes (M distances)"), configuration: config(.mega)) { b in
        let k = try kernels()
        let q = Array(binaryCodes[0..<4])
        var out = [UInt32](repeating: 0, count: million)
        try measure(b) {
            try binaryCodes.withUnsafeBufferPointer { c in
                try q.withUnsafeBufferPointer { qp in
                    try out.withUnsafeMutableBufferPointer {
                        try k.hammingDistances(query: qp, codes: c, bits: 256, into: $0)
                    }
                }
            }
        }
        blackHole(out)
    }
    Benchmark(
        named("hamming 256-bit top-10 of 1M codes (M distances)"),
        configuration: config(.mega, thresholds: Tolerance.standard)
    ) { b in
        let k = try kernels()
        let q = Array(binaryCodes[4..<8])
        var top: [Neighbor<UInt32>] = []
        try measure(b) {
            top = try binaryCodes.withUnsafeBufferPointer { c in
                try q.withUnsafeBufferPointer { try k.hammingTopK(query: $0, codes: c, bits: 256, k: 10) }
            }
        }
        blackHole(top)
    }

    // MARK: Product quantization
    Benchmark(named("pq distance table d=128 M=32 ksub=256 (tables)"), configuration: config()) { b in
        let k = try kernels()
        var r = SeededRandom(seed: 5)
        let pq = try ProductQuantizer(dim: 128, subquantizers: 32, bits: 8, centroids: r.uniform(32 * 256 * 4))
        let q = r.uniform(128)
        var table = [Float](repeating: 0, count: 32 * 256)
        try measure(b) {
            try q.withUnsafeBufferPointer { qp in
                try table.withUnsafeMutableBufferPointer {
                    try pq.distanceTable(query: qp, metric: .l2, kernels: k, into: $0)
                }
            }
        }
        blackHole(table)
    }
    Benchmark(named("pq 8-bit scan M=32 x 1M codes (M codes)"), configuration: config(.mega, bytes: true)) { b in
        let k = try kernels()
        var r = SeededRandom(seed: 6)
        let table = r.uniform(32 * 256, 0, 4)
        var out = [Float](repeating: 0, count: million)
        try measure(b, bytes: pq8Codes.count) {
            try pq8Codes.withUnsafeBufferPointer { c in
                try table.withUnsafeBufferPointer { t in
                    try out.withUnsafeMutableBufferPointer {
                        try k.pqScan8(codes: c, subquantizers: 32, table: t, into: $0)
                    }
                }
            }
        }
        blackHole(out)
    }
    Benchmark(named("pq 4-bit fast-scan M=32 x 1M codes (M codes)"), configuration: config(.mega, bytes: true)) { b in
        let k = try kernels()
        var r = SeededRandom(seed: 7)
        let table = try r.uniform(32 * 16, 0, 4).withUnsafeBufferPointer {
            try QuantizedPQ4Table(table: $0, subquantizers: 32)
        }
        var out = [UInt16](repeating: 0, count: pq4Codes.blocks * 32)
        try measure(b, bytes: pq4Codes.bytes.count) {
            try out.withUnsafeMutableBufferPointer { try k.pqScan4(codes: pq4Codes, table: table, into: $0) }
        }
        blackHole(out)
    }

    // MARK: Vector distances
    for metric in [Metric.l2, .innerProduct] {
        for type in VectorType.allCases {
            Benchmark(
                named("vec \(metric) \(type) d=784 1 query x 1k rows (k distances)"),
                configuration: config(.kilo, bytes: true)
            ) { b in
                let k = try kernels()
                let q = Array(rows784.f32[0..<784])
                var out = [Float](repeating: 0, count: 1000)
                try measure(b, bytes: 1000 * 784 * type.bytes) {
                    try q.withUnsafeBufferPointer { qp in
                        try out.withUnsafeMutableBufferPointer { o in
                            if type == .f32 {
                                try rows784.f32.withUnsafeBufferPointer {
                                    try k.distances(metric, query: qp, data: $0, into: o)
                                }
                            } else {
                                try rows784.f16.withUnsafeBufferPointer {
                                    try k.distances(metric, query: qp, f16: $0, into: o)
                                }
                            }
                        }
                    }
                }
                blackHole(out)
            }
        }
    }

    // MARK: Attention
    // SmolLM2-135M's shape (9 query heads, 3 KV heads, d = 64): 1,000 prompt tokens per iteration.
    Benchmark(named("attention prefill f32 9:3x64 T=1000 (k tokens)"), configuration: config(.kilo)) { b in
        let k = try kernels()
        let shape = try AttentionShape(heads: 9, kvHeads: 3, headDim: 64)
        var r = SeededRandom(seed: 8)
        let q = r.uniform(1000 * 9 * 64)
        let kv = r.uniform(1000 * 3 * 64)
        var out = [Float](repeating: 0, count: q.count)
        try measure(b) {
            try q.withUnsafeBufferPointer { qp in
                try kv.withUnsafeBufferPointer { kp in
                    try out.withUnsafeMutableBufferPointer {
                        try k.attentionPrefill(shape: shape, q: qp, k: kp, v: kp, into: $0)
                    }
                }
            }
        }
        blackHole(out)
    }
    // A Llama-8B-like decode step (32 query heads, 8 KV heads, d = 128) over 8,192 cached positions.
    for (type, int8) in [(RowType.f32, false), (.f16, false), (.q8_0, true), (.q4_0, true)] {
        let label = int8 ? "\(type) int8 scores" : "\(type)"
        Benchmark(
            named("attention decode \(label) KV T=8192 32:8x128 (steps)"), configuration: config(bytes: true)
        ) { b in
            let k = try kernels()
            let shape = try AttentionShape(heads: 32, kvHeads: 8, headDim: 128)
            let (keys, values) = try once("kv") {
                try (
                    cache(type, positions: 8192, kvHeads: 8, headDim: 128, seed: 9),
                    cache(type, positions: 8192, kvHeads: 8, headDim: 128, seed: 10)
                )
            }
            var r = SeededRandom(seed: 11)
            let q = r.uniform(32 * 128)
            var out = [Float](repeating: 0, count: q.count)
            try measure(b, bytes: keys.count + values.count) {
                try keys.withUnsafeBytes { kb in
                    try values.withUnsafeBytes { vb in
                        try q.withUnsafeBufferPointer { qp in
                            try out.withUnsafeMutableBufferPointer {
                                try k.attentionDecode(
                                    shape: shape, q: qp, keys: kb, keyType: type, values: vb, valueType: type,
                                    length: 8192, int8Scores: int8, into: $0)
                            }
                        }
                    }
                }
            }
            blackHole(out)
        }
    }

    // MARK: GEMV (a Llama-8B-sized 4096 x 4096 projection; MB/s over the weight bytes)
    let gemvCases: [(RowType, Numerics)] = [
        (.f32, .exact), (.q8_0, .exact), (.q8_0, .int8), (.q4_0, .exact), (.q4_0, .int8), (.q4_1, .exact),
        (.q4_1, .int8),
    ]
    for (type, numerics) in gemvCases {
        let act = numerics == .int8 ? "int8" : "f32"
        Benchmark(named("gemv \(type) 4096x4096 \(act) activations (calls)"), configuration: config(bytes: true)) { b in
            let k = try kernels()
            var r = SeededRandom(seed: 12)
            let m = try once("w") {
                try QuantizedMatrix(quantizing: r.uniform(4096 * 4096), rows: 4096, cols: 4096, type: type, kernels: k)
            }
            let bytes = try 4096 * type.rowBytes(4096)
            let x = r.uniform(4096)
            var y = [Float](repeating: 0, count: 4096)
            try measure(b, bytes: bytes) {
                try x.withUnsafeBufferPointer { xp in
                    try y.withUnsafeMutableBufferPointer { try k.gemv(m, x: xp, into: $0, numerics: numerics) }
                }
            }
            blackHole(y)
        }
    }

    // MARK: Elementwise and row ops over 1M values (rows of 1,000 where the op is per row)
    Benchmark(named("op gelu-erf 1M values (M values)"), configuration: config(.mega)) { b in
        let k = try kernels()
        var r = SeededRandom(seed: 13)
        let x0 = r.uniform(million, -4, 4)
        var x = x0
        try measure(b) { x.withUnsafeMutableBufferPointer { k.geluErf($0) } }
        blackHole(x)
    }
    Benchmark(named("op silu-mul 1M values (M values)"), configuration: config(.mega)) { b in
        let k = try kernels()
        var r = SeededRandom(seed: 14)
        var g = r.uniform(million, -4, 4)
        let u = r.uniform(million)
        try measure(b) {
            try u.withUnsafeBufferPointer { up in try g.withUnsafeMutableBufferPointer { try k.siluMul($0, up) } }
        }
        blackHole(g)
    }
    Benchmark(named("op rmsnorm 1k rows x 1000 (M values)"), configuration: config(.mega)) { b in
        let k = try kernels()
        var r = SeededRandom(seed: 15)
        let x = r.uniform(million)
        let gamma = r.uniform(1000)
        var y = [Float](repeating: 0, count: million)
        try measure(b) {
            try x.withUnsafeBufferPointer { xp in
                try gamma.withUnsafeBufferPointer { gp in
                    try y.withUnsafeMutableBufferPointer { try k.rmsNorm(xp, into: $0, d: 1000, gamma: gp, eps: 1e-5) }
                }
            }
        }
        blackHole(y)
    }
    Benchmark(named("op layernorm 1k rows x 1000 (M values)"), configuration: config(.mega)) { b in
        let k = try kernels()
        var r = SeededRandom(seed: 16)
        var x = r.uniform(million)
        let gamma = r.uniform(1000)
        let beta = r.uniform(1000)
        try measure(b) {
            try gamma.withUnsafeBufferPointer { gp in
                try beta.withUnsafeBufferPointer { bp in
                    try x.withUnsafeMutableBufferPointer {
                        try k.layerNorm($0, d: 1000, gamma: gp, beta: bp, eps: 1e-5)
                    }
                }
            }
        }
        blackHole(x)
    }
}
