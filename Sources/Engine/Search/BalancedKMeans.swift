import CKernels

/// Balanced k-means for the hybrid index's coarse clusters and heads (SPANN's balanced
/// partitioning): Lloyd's k-means, then an assignment that charges lambda per member already placed.
enum BalancedKMeans {
    /// Mean squared L2 distance of rows to their nearest centroid.
    static func nearestMean(_ data: UnsafeBufferPointer<Float>, dim: Int, centroids: [Float]) throws -> Float {
        let n = data.count / dim
        var lab = [Int32](repeating: 0, count: n)
        var near = [Float](repeating: 0, count: n)
        try centroids.withUnsafeBufferPointer {
            try KMeans.assignNearest(
                data: data, dim: dim, centroids: $0, k: centroids.count / dim, labels: &lab, distances: &near)
        }
        return Float(near.reduce(0.0) { $0 + Double($1) } / Double(max(1, n)))
    }

    /// Balanced assignment of `count` rows, in order, to centroids: row -> argmin ||x - c||^2 +
    /// lambda |c| (sizes updated as rows are placed); distances through sgemm in chunks.
    static func balancedAssign(
        _ rows: UnsafePointer<Float>, count m: Int, dim: Int, centroids cent: [Float], lambda: Float,
        sizes: inout [Int], labels: UnsafeMutablePointer<Int32>
    ) throws {
        let k = cent.count / dim
        var cnorm = [Float](repeating: 0, count: k)
        for c in 0..<k {
            var s: Float = 0
            for j in 0..<dim { s += cent[c * dim + j] * cent[c * dim + j] }
            cnorm[c] = s
        }
        let chunk = 2048
        var dist = [Float](repeating: 0, count: min(m, chunk) * k)
        for r0 in stride(from: 0, to: m, by: chunk) {
            let mm = min(chunk, m - r0)
            cent.withUnsafeBufferPointer { cp in
                dist.withUnsafeMutableBufferPointer { dp in
                    ck_blas_sgemm(
                        false, true, mm, k, dim, -2, rows + r0 * dim, dim, cp.baseAddress, dim, 0, dp.baseAddress, k)
                }
            }
            for r in 0..<mm {
                var best = Float.infinity
                var bc = 0
                for c in 0..<k {
                    let v = dist[r * k + c] + cnorm[c] + lambda * Float(sizes[c])
                    if v < best {
                        best = v
                        bc = c
                    }
                }
                labels[r0 + r] = Int32(bc)
                sizes[bc] += 1
            }
        }
    }

    /// k-means (k-means++ on a sample, Lloyd with sgemm assignment), then a balanced assignment
    /// pass: points in random order go to argmin d(x, c) + lambda |c|, lambda = mean nearest
    /// distance / (n / k) (a cluster at twice the mean size pays one typical distance extra);
    /// centroids are the means of the balanced clusters.
    static func balancedKMeans(
        _ data: UnsafeBufferPointer<Float>, n: Int, dim: Int, k: Int, iterations: Int,
        seed: UInt64
    ) throws -> (centroids: [Float], labels: [Int32]) {
        if k == 1 {
            var c = [Float](repeating: 0, count: dim)
            for i in 0..<n { for j in 0..<dim { c[j] += data[i * dim + j] } }
            return (c.map { $0 / Float(n) }, [Int32](repeating: 0, count: n))
        }
        // train on at most 256 points per centroid
        let sampleN = min(n, max(k * 256, 10_000))
        var rng = SeededRandom(seed: seed)
        var cent: [Float]
        if sampleN < n {
            var idx = Array(0..<n)
            for i in 0..<sampleN { idx.swapAt(i, i + Int(rng.next() % UInt64(n - i))) }
            var s = [Float](repeating: 0, count: sampleN * dim)
            for r in 0..<sampleN { for j in 0..<dim { s[r * dim + j] = data[idx[r] * dim + j] } }
            cent = try s.withUnsafeBufferPointer {
                try KMeans.train(data: $0, dim: dim, k: k, iterations: iterations, seed: seed)
            }
        } else {
            cent = try KMeans.train(data: data, dim: dim, k: k, iterations: iterations, seed: seed)
        }
        let lambda = try nearestMean(data, dim: dim, centroids: cent) / Float(max(1, n / k))
        var order = Array(0..<n)
        order.shuffle(using: &rng)
        var rows = [Float](repeating: 0, count: n * dim)
        for r in 0..<n { for j in 0..<dim { rows[r * dim + j] = data[order[r] * dim + j] } }
        var sizes = [Int](repeating: 0, count: k)
        var shuffled = [Int32](repeating: 0, count: n)
        try rows.withUnsafeBufferPointer { rp in
            try shuffled.withUnsafeMutableBufferPointer { lp in
                try balancedAssign(
                    rp.baseAddress!, count: n, dim: dim, centroids: cent, lambda: lambda, sizes: &sizes,
                    labels: lp.baseAddress!)
            }
        }
        var labels = [Int32](repeating: 0, count: n)
        for r in 0..<n { labels[order[r]] = shuffled[r] }
        var sums = [Double](repeating: 0, count: k * dim)
        for i in 0..<n {
            let c = Int(labels[i])
            for j in 0..<dim { sums[c * dim + j] += Double(data[i * dim + j]) }
        }
        for c in 0..<k where sizes[c] > 0 {
            for j in 0..<dim { cent[c * dim + j] = Float(sums[c * dim + j] / Double(sizes[c])) }
        }
        return (cent, labels)
    }
}
