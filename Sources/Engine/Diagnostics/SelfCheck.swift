import CKernels

/// Compares every SIMD level this CPU has with the scalar reference on random data.
/// This is the quick field check behind `engine selfcheck`; the test suite goes further.
public enum SelfCheck {
    /// One comparison: family, level, worst difference seen and whether it is within tolerance.
    public struct Outcome: Sendable, CustomStringConvertible {
        public var family: String
        public var isa: ISA
        public var maxError: Double
        public var tolerance: Double
        public var passed: Bool { maxError <= tolerance }
        public var description: String {
            let status = passed ? "ok  " : "FAIL"
            return
                "\(status) \(family.padding(toLength: 28, withPad: " ", startingAt: 0)) \(isa.description.padding(toLength: 7, withPad: " ", startingAt: 0)) max err \(maxError) (tol \(tolerance))"
        }
    }

    /// Number of kernel families compared per SIMD level.
    public static let familyCount = 5

    /// Runs all checks with a fixed seed.
    public static func run(seed: UInt64 = 42) throws -> [Outcome] {
        _ = try ISA.selected() // a malformed CK_ISA is refused here too
        var out: [Outcome] = []
        let ref = try Kernels(isa: .scalar, threads: 1)
        for isa in ISA.available where isa != .scalar {
            let k = try Kernels(isa: isa, threads: 1)
            var rng = SeededRandom(seed: seed)
            out.append(try hamming(ref, k, &rng))
            out.append(contentsOf: try qmatmul(ref, k, &rng))
            out.append(try attention(ref, k, &rng))
            out.append(try pq(ref, k, &rng))
        }
        return out
    }

    static func hamming(_ ref: Kernels, _ k: Kernels, _ rng: inout SeededRandom) throws -> Outcome {
        var worst = 0.0
        for bits in [64, 256, 320, 1024] {
            let n = 1001
            let w = bits / 64
            let q = rng.words(w)
            let c = rng.words(n * w)
            var a = [UInt32](repeating: 0, count: n)
            var b = a
            try q.withUnsafeBufferPointer { qp in
                try c.withUnsafeBufferPointer { cp in
                    try a.withUnsafeMutableBufferPointer {
                        try ref.hammingDistances(query: qp, codes: cp, bits: bits, into: $0)
                    }
                    try b.withUnsafeMutableBufferPointer {
                        try k.hammingDistances(query: qp, codes: cp, bits: bits, into: $0)
                    }
                }
            }
            for i in 0..<n { worst = max(worst, Double(a[i] > b[i] ? a[i] - b[i] : b[i] - a[i])) }
        }
        // Integer distances: exact equality is required.
        return Outcome(family: "hamming", isa: k.isa, maxError: worst, tolerance: 0)
    }

    static func maxRelDiff(_ a: [Float], _ b: [Float]) -> Double {
        let scale = Double(max(a.map { abs($0) }.max() ?? 1, 1e-30))
        return zip(a, b).map { Double(abs($0 - $1)) }.max().map { $0 / scale } ?? 0
    }

    static func qmatmul(_ ref: Kernels, _ k: Kernels, _ rng: inout SeededRandom) throws -> [Outcome] {
        let rows = 67
        let cols = 1056
        let w = rng.uniform(rows * cols)
        let x = rng.uniform(cols)
        var worstExact = 0.0
        var worstInt8 = 0.0
        for t in RowType.allCases where t.isQuantized {
            let m = try QuantizedMatrix(quantizing: w, rows: rows, cols: cols, type: t, kernels: ref)
            for numerics in [Numerics.exact, .int8] {
                var a = [Float](repeating: 0, count: rows)
                var b = a
                try x.withUnsafeBufferPointer { xp in
                    try a.withUnsafeMutableBufferPointer { try ref.gemv(m, x: xp, into: $0, numerics: numerics) }
                    try b.withUnsafeMutableBufferPointer { try k.gemv(m, x: xp, into: $0, numerics: numerics) }
                }
                if numerics == .exact {
                    worstExact = max(worstExact, maxRelDiff(a, b))
                } else {
                    worstInt8 = max(worstInt8, maxRelDiff(a, b))
                }
            }
        }
        // Same products summed in another order: n u relative to the largest output (n = 1056).
        let tol = Double(cols) * 0x1p-24
        return [
            Outcome(family: "qmatmul gemv (exact f32)", isa: k.isa, maxError: worstExact, tolerance: tol),
            Outcome(family: "qmatmul gemv (int8)", isa: k.isa, maxError: worstInt8, tolerance: tol),
        ]
    }

    static func attention(_ ref: Kernels, _ k: Kernels, _ rng: inout SeededRandom) throws -> Outcome {
        let shape = try AttentionShape(heads: 6, kvHeads: 2, headDim: 64)
        let T = 77
        let q = rng.uniform(T * 6 * 64)
        let kk = rng.uniform(T * 2 * 64)
        let v = rng.uniform(T * 2 * 64)
        var worst = 0.0
        for score in [ScoreFunction.softmax, .power()] {
            var a = [Float](repeating: 0, count: q.count)
            var b = a
            try q.withUnsafeBufferPointer { qp in
                try kk.withUnsafeBufferPointer { kp in
                    try v.withUnsafeBufferPointer { vp in
                        try a.withUnsafeMutableBufferPointer {
                            try ref.attentionPrefill(shape: shape, score: score, q: qp, k: kp, v: vp, into: $0)
                        }
                        try b.withUnsafeMutableBufferPointer {
                            try k.attentionPrefill(shape: shape, score: score, q: qp, k: kp, v: vp, into: $0)
                        }
                    }
                }
            }
            worst = max(worst, maxRelDiff(a, b))
        }
        // Convex combinations of v rows: (T + d) u times a safety factor of 8 (see AttentionTests).
        return Outcome(
            family: "attention prefill", isa: k.isa, maxError: worst, tolerance: 8 * Double(T + 64 + 4) * 0x1p-24)
    }

    static func pq(_ ref: Kernels, _ k: Kernels, _ rng: inout SeededRandom) throws -> Outcome {
        let m = 16
        let n = 999
        let codes = (0..<(n * m)).map { _ in UInt8(rng.next() % 16) }
        let table = rng.uniform(m * 16, 0, 4)
        let packed = try PackedPQ4Codes(codes: codes, subquantizers: m)
        let qt = try table.withUnsafeBufferPointer { try QuantizedPQ4Table(table: $0, subquantizers: m) }
        var a = [UInt16](repeating: 0, count: packed.blocks * 32)
        var b = a
        try a.withUnsafeMutableBufferPointer { try ref.pqScan4(codes: packed, table: qt, into: $0) }
        try b.withUnsafeMutableBufferPointer { try k.pqScan4(codes: packed, table: qt, into: $0) }
        let worst = zip(a, b).map { Double($0 > $1 ? $0 - $1 : $1 - $0) }.max() ?? 0
        // Integer sums: exact.
        return Outcome(family: "pq 4-bit fast-scan", isa: k.isa, maxError: worst, tolerance: 0)
    }
}
