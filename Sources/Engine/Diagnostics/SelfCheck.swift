import Foundation
import CKernels

/// Compares every SIMD level this CPU has with the scalar reference on random data.
/// This is the quick field check behind `engine selfcheck`; the test suite goes further.
public enum SelfCheck {
    /// One comparison: family, level, worst difference seen and whether it is within tolerance.
    public struct Outcome: Sendable, CustomStringConvertible {
        /// Kernel family compared.
        public var family: String
        /// The SIMD level compared with the serial reference.
        public var isa: ISA
        /// Largest difference seen, in the family's error measure.
        public var maxError: Double
        /// The largest difference the family's error bound allows.
        public var tolerance: Double
        /// Whether the difference is within the bound.
        public var passed: Bool { maxError <= tolerance }
        /// One report line.
        public var description: String {
            let status = passed ? "ok  " : "FAIL"
            return
                """
                \(status) \(family.padding(toLength: 28, withPad: " ", startingAt: 0)) \
                \(isa.description.padding(toLength: 7, withPad: " ", startingAt: 0)) max err \(maxError) (tol \
                \(tolerance))
                """
        }
    }

    /// Number of kernel families compared per SIMD level.
    public static let familyCount = 10

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
            out.append(try vec(ref, k, &rng))
            out.append(contentsOf: try ops(ref, k, &rng))
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
        var worstX8 = 0.0
        for t in [RowType.q4_0, .q4_1] { // interleaved rows: every level computes the reference's floats
            let m = try QuantizedMatrix(
                quantizing: Array(w[0..<(64 * cols)]), rows: 64, cols: cols, type: t, kernels: ref
            )
            .interleaved()
            var a = [Float](repeating: 0, count: 64)
            var b = a
            try x.withUnsafeBufferPointer { xp in
                try a.withUnsafeMutableBufferPointer { try ref.gemv(m, x: xp, into: $0, numerics: .int8) }
                try b.withUnsafeMutableBufferPointer { try k.gemv(m, x: xp, into: $0, numerics: .int8) }
            }
            worstX8 = max(worstX8, maxRelDiff(a, b))
        }
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
            Outcome(family: "qmatmul gemv x8 (int8)", isa: k.isa, maxError: worstX8, tolerance: 0),
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

    /// f32 and f16 L2 / inner-product distance rows. Error relative to the sum of the magnitudes
    /// of the terms (computed in double): both sides round each of d products and sums, so
    /// 2 d u bounds the difference (d = 77, u = 2^-24).
    static func vec(_ ref: Kernels, _ k: Kernels, _ rng: inout SeededRandom) throws -> Outcome {
        let (n, d) = (97, 77)
        let q = rng.uniform(d)
        let x = rng.uniform(n * d)
        let h = x.map { Float16($0).bitPattern }
        var worst = 0.0
        for metric in [Metric.l2, .innerProduct] {
            for half in [false, true] {
                func rowDistances(_ kern: Kernels) throws -> [Float] {
                    var r = [Float](repeating: 0, count: n)
                    try q.withUnsafeBufferPointer { qp in
                        try r.withUnsafeMutableBufferPointer { rp in
                            if half {
                                try h.withUnsafeBufferPointer {
                                    try kern.distances(metric, query: qp, f16: $0, into: rp)
                                }
                            } else {
                                try x.withUnsafeBufferPointer {
                                    try kern.distances(metric, query: qp, data: $0, into: rp)
                                }
                            }
                        }
                    }
                    return r
                }
                let a = try rowDistances(ref)
                let b = try rowDistances(k)
                for i in 0..<n {
                    let scale = (0..<d).reduce(0.0) { acc, j in
                        let xv = half ? Double(Float(Float16(bitPattern: h[i * d + j]))) : Double(x[i * d + j])
                        let t = metric == .l2 ? (Double(q[j]) - xv) * (Double(q[j]) - xv) : abs(Double(q[j]) * xv)
                        return acc + t
                    }
                    worst = max(worst, abs(Double(a[i]) - Double(b[i])) / max(scale, 1e-30))
                }
            }
        }
        return Outcome(family: "vec distances (f32, f16)", isa: k.isa, maxError: worst, tolerance: 2 * 77 * 0x1p-24)
    }

    /// GELU (error relative to |x| + |GELU(x)|; the SIMD erf is within ~2.4e-7, see OpsTests) and
    /// LayerNorm (error relative to max(1, |y|); mean and variance over d = 77 values, 8 d u).
    static func ops(_ ref: Kernels, _ k: Kernels, _ rng: inout SeededRandom) throws -> [Outcome] {
        let x = rng.uniform(1001, -6, 6)
        var a = x
        var b = x
        a.withUnsafeMutableBufferPointer { ref.geluErf($0) }
        b.withUnsafeMutableBufferPointer { k.geluErf($0) }
        var gelu: [Double] = []
        for i in x.indices {
            let scale = abs(Double(x[i])) + abs(Double(a[i])) + 1e-30
            gelu.append(abs(Double(a[i]) - Double(b[i])) / scale)
        }
        let d = 77
        let rows = rng.uniform(13 * d, -3, 3)
        let gamma = rng.uniform(d, 0.5, 1.5)
        let beta = rng.uniform(d)
        var la = rows
        var lb = rows
        try gamma.withUnsafeBufferPointer { g in
            try beta.withUnsafeBufferPointer { bt in
                try la.withUnsafeMutableBufferPointer { try ref.layerNorm($0, d: d, gamma: g, beta: bt, eps: 1e-12) }
                try lb.withUnsafeMutableBufferPointer { try k.layerNorm($0, d: d, gamma: g, beta: bt, eps: 1e-12) }
            }
        }
        let ln = zip(la, lb).map { abs(Double($0) - Double($1)) / max(1, abs(Double($0))) }
        return [
            Outcome(family: "ops gelu", isa: k.isa, maxError: gelu.max() ?? 0, tolerance: 4e-7),
            Outcome(family: "ops layernorm", isa: k.isa, maxError: ln.max() ?? 0, tolerance: 8 * 77 * 0x1p-24),
            try llamaOps(ref, k, &rng),
        ]
    }

    /// RMSNorm, RoPE and the SiLU gate (the Llama ops): error relative to the magnitude each output
    /// is made of; bounds as in OpsTests (RMSNorm 2 (d + 4) u, RoPE 4 u, SiLU 8 u), the largest taken.
    static func llamaOps(_ ref: Kernels, _ k: Kernels, _ rng: inout SeededRandom) throws -> Outcome {
        let (rows, d) = (3, 77)
        let x = rng.uniform(rows * d, -4, 4)
        let g = rng.uniform(d, 0.5, 1.5)
        var na = [Float](repeating: 0, count: x.count)
        var nb = na
        try ref.rmsNorm(x, g, eps: 1e-5, into: &na, dim: d)
        try k.rmsNorm(x, g, eps: 1e-5, into: &nb, dim: d)
        var worst = 0.0
        let normBound = Double(2 * (d + 4))
        for (a, b) in zip(na, nb) {
            let diff = abs(Double(a) - Double(b))
            worst = max(worst, diff / max(1e-30, abs(Double(a))) / normBound)
        }
        let (heads, hd) = (3, 22)
        let angles = rng.uniform(rows * hd / 2, -50, 50)
        let c = angles.map { Foundation.cos($0) }
        let s = angles.map { Foundation.sin($0) }
        let q = rng.uniform(rows * heads * hd, -2, 2)
        func rope(_ kern: Kernels) throws -> [Float] {
            var y = q
            try y.withUnsafeMutableBufferPointer { yp in
                try c.withUnsafeBufferPointer { cp in
                    try s.withUnsafeBufferPointer {
                        try kern.rope(
                            yp, rows: rows, heads: heads, headDim: hd, rowStride: heads * hd, cos: cp, sin: $0)
                    }
                }
            }
            return y
        }
        let (ra, rb) = (try rope(ref), try rope(k))
        for i in q.indices {
            let p = i - i % 2
            worst = max(worst, abs(Double(ra[i]) - Double(rb[i])) / (abs(Double(q[p])) + abs(Double(q[p + 1]))) / 4)
        }
        let gate = rng.uniform(211, -20, 20)
        let up = rng.uniform(211, -2, 2)
        var sa = gate
        var sb = gate
        try up.withUnsafeBufferPointer { u in
            try sa.withUnsafeMutableBufferPointer { try ref.siluMul($0, u) }
            try sb.withUnsafeMutableBufferPointer { try k.siluMul($0, u) }
        }
        for i in gate.indices {
            worst = max(worst, abs(Double(sa[i]) - Double(sb[i])) / max(1e-30, abs(Double(sa[i]))) / 8)
        }
        // each term above is the difference divided by its own bound: 1 u of headroom means within it
        return Outcome(family: "ops rmsnorm/rope/silu", isa: k.isa, maxError: worst, tolerance: 0x1p-24)
    }
}
