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
            return "\(status) \(family.padding(toLength: 28, withPad: " ", startingAt: 0)) \(isa.description.padding(toLength: 7, withPad: " ", startingAt: 0)) max err \(maxError) (tol \(tolerance))"
        }
    }

    /// Number of kernel families compared per SIMD level.
    public static let familyCount = 1

    /// Runs all checks with a fixed seed.
    public static func run(seed: UInt64 = 42) throws -> [Outcome] {
        _ = try ISA.selected() // a malformed CK_ISA is refused here too
        var out: [Outcome] = []
        let ref = try Kernels(isa: .scalar, threads: 1)
        for isa in ISA.available where isa != .scalar {
            let k = try Kernels(isa: isa, threads: 1)
            var rng = SeededRandom(seed: seed)
            out.append(try hamming(ref, k, &rng))
        }
        return out
    }

    static func hamming(_ ref: Kernels, _ k: Kernels, _ rng: inout SeededRandom) throws -> Outcome {
        var worst = 0.0
        for bits in [64, 256, 320, 1024] {
            let n = 1001
            let w = bits / 64
            let q = rng.words(w), c = rng.words(n * w)
            var a = [UInt32](repeating: 0, count: n), b = a
            try q.withUnsafeBufferPointer { qp in
                try c.withUnsafeBufferPointer { cp in
                    try a.withUnsafeMutableBufferPointer { try ref.hammingDistances(query: qp, codes: cp, bits: bits, into: $0) }
                    try b.withUnsafeMutableBufferPointer { try k.hammingDistances(query: qp, codes: cp, bits: bits, into: $0) }
                }
            }
            for i in 0..<n { worst = max(worst, Double(a[i] > b[i] ? a[i] - b[i] : b[i] - a[i])) }
        }
        // Integer distances: exact equality is required.
        return Outcome(family: "hamming", isa: k.isa, maxError: worst, tolerance: 0)
    }
}
