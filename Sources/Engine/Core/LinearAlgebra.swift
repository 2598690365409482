import CKernels

/// Dense linear algebra on row-major matrices (LAPACKE via OpenBLAS).
public enum LinearAlgebra {
    /// Thin QR of an m x n matrix (m >= n): Q (m x n, orthonormal columns) and R (n x n, upper
    /// triangular), in double precision.
    public static func qr(_ a: [Double], rows m: Int, cols n: Int) throws -> (q: [Double], r: [Double]) {
        try require(m >= n && n > 0, "QR needs rows >= cols > 0, got \(m) x \(n)")
        try require(a.count == m * n, "expected \(m * n) values, got \(a.count)")
        try require(a.allSatisfy(\.isFinite), "QR input must be finite")
        var q = a
        var r = [Double](repeating: 0, count: n * n)
        var tau = [Double](repeating: 0, count: n)
        let st = q.withUnsafeMutableBufferPointer { qp in
            r.withUnsafeMutableBufferPointer { rp in
                tau.withUnsafeMutableBufferPointer { tp in
                    ck_blas_qr_f64(m, n, qp.baseAddress, n, rp.baseAddress, tp.baseAddress)
                }
            }
        }
        try EngineError.check(st, "QR factorisation (LAPACK dgeqrf/dorgqr) of a \(m) x \(n) matrix")
        return (q, r)
    }

    /// A Haar-distributed random orthogonal n x n matrix: QR of a Gaussian matrix with the signs
    /// of R's diagonal moved into Q (without that fix the distribution is not uniform).
    public static func randomOrthogonal(_ n: Int, rng: inout SeededRandom) throws -> [Double] {
        let g = (0..<(n * n)).map { _ in Double(rng.nextGaussian()) }
        var (q, r) = try qr(g, rows: n, cols: n)
        for j in 0..<n where r[j * n + j] < 0 {
            for i in 0..<n { q[i * n + j] = -q[i * n + j] }
        }
        return q
    }

    /// Thin SVD A = U diag(s) V^T of an m x n f32 matrix; U is m x k, s has k values
    /// (descending), V^T is k x n, k = min(m, n).
    public static func svd(_ a: [Float], rows m: Int, cols n: Int) throws -> (u: [Float], s: [Float], vt: [Float]) {
        try require(m > 0 && n > 0, "SVD needs a non-empty matrix, got \(m) x \(n)")
        try require(a.count == m * n, "expected \(m * n) values, got \(a.count)")
        try a.withUnsafeBufferPointer { try requireFinite($0, "SVD input") }
        let k = min(m, n)
        var w = a
        var u = [Float](repeating: 0, count: m * k)
        var s = [Float](repeating: 0, count: k)
        var vt = [Float](repeating: 0, count: k * n)
        let st = w.withUnsafeMutableBufferPointer { wp in
            u.withUnsafeMutableBufferPointer { up in
                s.withUnsafeMutableBufferPointer { sp in
                    vt.withUnsafeMutableBufferPointer { vp in
                        ck_blas_svd(m, n, wp.baseAddress, n, sp.baseAddress, up.baseAddress, vp.baseAddress)
                    }
                }
            }
        }
        try EngineError.check(st, "SVD (LAPACK sgesdd) of a \(m) x \(n) matrix")
        return (u, s, vt)
    }

    /// C = A B for row-major f32 matrices (OpenBLAS sgemm).
    public static func matmul(_ a: [Float], _ b: [Float], m: Int, k: Int, n: Int) throws -> [Float] {
        try require(
            a.count == m * k && b.count == k * n,
            "matmul expects \(m)x\(k) and \(k)x\(n), got \(a.count) and \(b.count) values")
        var c = [Float](repeating: 0, count: m * n)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    ck_blas_sgemm(false, false, m, n, k, 1, ap.baseAddress, k, bp.baseAddress, n, 0, cp.baseAddress, n)
                }
            }
        }
        return c
    }
}
