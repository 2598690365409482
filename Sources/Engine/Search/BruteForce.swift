import CKernels

/// Exact k-nearest-neighbour search by blocked sgemm (ground truth for recall measurements).
public enum BruteForce {
    /// For each query, the row indices of the k nearest base rows (m x k, nearest first; ties by
    /// index). Cosine normalises both sides; inner product ranks by -q.x.
    public static func search(
        base: [Float], queries: [Float], dim: Int, k: Int, metric: Metric,
        threads: Int = Threads.defaultCount
    ) throws(EngineError) -> [Int32] {
        try require(
            dim > 0 && base.count % dim == 0 && queries.count % dim == 0,
            "base and queries must be whole \(dim)-d vectors")
        let n = base.count / dim
        let m = queries.count / dim
        try require(n >= 1 && m >= 1 && k >= 1, "need a non-empty base, queries and k >= 1")
        try require(k <= Limits.neighbors, "k must be at most \(Limits.neighbors), got \(k)")
        try requireFinite(base, "base vectors")
        try requireFinite(queries, "query vectors")
        let kk = min(k, n)
        func normalized(_ v: [Float]) -> [Float] {
            var v = v
            for i in 0..<(v.count / dim) {
                var s: Float = 0
                for j in 0..<dim { s += v[i * dim + j] * v[i * dim + j] }
                let inv = s > 0 ? 1 / s.squareRoot() : 0
                for j in 0..<dim { v[i * dim + j] *= inv }
            }
            return v
        }
        let b = metric == .cosine ? normalized(base) : base
        let q = metric == .cosine ? normalized(queries) : queries
        var bnorm = [Float](repeating: 0, count: n)
        if metric == .l2 {
            for i in 0..<n {
                var s: Float = 0
                for j in 0..<dim { s += b[i * dim + j] * b[i * dim + j] }
                bnorm[i] = s
            }
        }
        var out = [Int32](repeating: -1, count: m * k)
        let qb = 64
        let nb = 16384
        let blocks = (m + qb - 1) / qb
        out.withUnsafeMutableBufferPointer { op in
            Threads.parallelFor(blocks, threads: threads) { blk in
                let q0 = blk * qb
                let rows = min(qb, m - q0)
                var dots = [Float](repeating: 0, count: rows * nb)
                var tops = [TopK](repeating: TopK(k: kk), count: rows)
                for n0 in stride(from: 0, to: n, by: nb) {
                    let cols = min(nb, n - n0)
                    q.withUnsafeBufferPointer { qp in
                        b.withUnsafeBufferPointer { bp in
                            dots.withUnsafeMutableBufferPointer { dp in
                                ck_blas_sgemm(
                                    false, true, rows, cols, dim, 1, qp.baseAddress! + q0 * dim, dim,
                                    bp.baseAddress! + n0 * dim, dim, 0, dp.baseAddress, cols)
                            }
                        }
                    }
                    dots.withUnsafeMutableBufferPointer { dp in
                        for r in 0..<rows {
                            let row = dp.baseAddress! + r * cols
                            for c in 0..<cols { row[c] = metric == .l2 ? bnorm[n0 + c] - 2 * row[c] : -row[c] }
                            tops[r].push(row, count: cols, base: n0)
                        }
                    }
                }
                for r in 0..<rows { for (t, h) in tops[r].sorted().enumerated() { op[(q0 + r) * k + t] = Int32(h.id) } }
            }
        }
        return out
    }
}
