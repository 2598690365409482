import CKernels

/// Lloyd's k-means with sgemm-based assignment (||x||^2 - 2 x.c + ||c||^2).
public enum KMeans {
    /// Rows scored per sgemm call during assignment (bounds the distance buffer to rows x k).
    static let assignChunk = 2048

    /// Trains k centroids (k x dim, row-major) from n x dim data. Seeding is k-means++ (seeded,
    /// on a sample); an emptied cluster is re-seeded by splitting the largest.
    /// Throws on n < k, non-finite data or bad sizes.
    public static func train(
        data: UnsafeBufferPointer<Float>, dim: Int, k: Int, iterations: Int = 20,
        seed: UInt64 = 1234
    ) throws -> [Float] {
        try require(dim > 0 && k > 0, "dim (\(dim)) and k (\(k)) must be positive")
        try require(data.count % dim == 0, "data has \(data.count) values, not a multiple of dim \(dim)")
        let n = data.count / dim
        try require(n >= k, "k-means needs at least k = \(k) training vectors, got \(n)")
        try require(iterations > 0, "iterations must be positive, got \(iterations)")
        try requireFinite(data, "training data")
        var rng = SeededRandom(seed: seed)
        var cent = kmeansPlusPlus(data: data, dim: dim, n: n, k: k, rng: &rng)
        var assign = [Int32](repeating: 0, count: n)
        var dist = [Float](repeating: 0, count: n)
        for _ in 0..<iterations {
            try cent.withUnsafeBufferPointer { cp in
                try assignNearest(data: data, dim: dim, centroids: cp, k: k, labels: &assign, distances: &dist)
            }
            var sums = [Double](repeating: 0, count: k * dim)
            var counts = [Int](repeating: 0, count: k)
            for i in 0..<n {
                let a = Int(assign[i])
                counts[a] += 1
                for c in 0..<dim { sums[a * dim + c] += Double(data[i * dim + c]) }
            }
            for j in 0..<k where counts[j] > 0 {
                for c in 0..<dim { cent[j * dim + c] = Float(sums[j * dim + c] / Double(counts[j])) }
            }
            for j in 0..<k where counts[j] == 0 {
                // Split the largest cluster: move this centroid next to it, nudged both ways.
                let big = counts.indices.max { counts[$0] < counts[$1] }!
                for c in 0..<dim {
                    let e = Float(1e-4) * (rng.nextUnit() - 0.5) * max(1, abs(cent[big * dim + c]))
                    cent[j * dim + c] = cent[big * dim + c] + e
                    cent[big * dim + c] -= e
                }
                counts[j] = counts[big] / 2
                counts[big] -= counts[j]
            }
        }
        return cent
    }

    /// k-means++ seeding (D^2 sampling) over a sample of at most `seedSample` rows.
    static let seedSample = 20_000
    static func kmeansPlusPlus(
        data: UnsafeBufferPointer<Float>, dim: Int, n: Int, k: Int,
        rng: inout SeededRandom
    ) -> [Float] {
        var rows = Array(0..<n)
        let m = min(n, max(seedSample, k))
        for i in 0..<m { rows.swapAt(i, i + Int(rng.next() % UInt64(n - i))) }
        rows.removeLast(n - m)
        // the sample's rows side by side: each new centre's distances to all of them are one call
        // of the SIMD distance kernel (a serial sum per row made seeding ~80% of a 10M build)
        let sample = [Float](unsafeUninitializedCapacity: m * dim) { buf, count in
            for (i, r) in rows.enumerated() {
                (buf.baseAddress! + i * dim).update(from: data.baseAddress! + r * dim, count: dim)
            }
            count = m * dim
        }
        let kernels = Kernels.default
        var cent = [Float](repeating: 0, count: k * dim)
        var d2 = [Double](repeating: .infinity, count: m)
        var dist = [Float](repeating: 0, count: m)
        var chosen = Int(rng.next() % UInt64(m)) // a row of the sample
        for j in 0..<k {
            for c in 0..<dim { cent[j * dim + c] = sample[chosen * dim + c] }
            cent.withUnsafeBufferPointer { cp in
                sample.withUnsafeBytes { sp in
                    dist.withUnsafeMutableBufferPointer { dp in
                        kernels.distancesUnchecked(
                            .l2, query: cp.baseAddress! + j * dim, rows: sp.baseAddress!, type: .f32, count: m,
                            dim: dim, stride: dim, into: dp.baseAddress!)
                    }
                }
            }
            var total = 0.0
            for i in 0..<m {
                d2[i] = min(d2[i], Double(dist[i]))
                total += d2[i]
            }
            if j + 1 == k { break }
            if total <= 0 { // fewer distinct points than k: take any row
                chosen = Int(rng.next() % UInt64(m))
                continue
            }
            var target = Double(rng.nextUnit()) * total
            chosen = m - 1
            for i in 0..<m {
                target -= d2[i]
                if target < 0 {
                    chosen = i
                    break
                }
            }
        }
        return cent
    }

    /// Nearest centroid of every row and its squared distance.
    public static func assignNearest(
        data: UnsafeBufferPointer<Float>, dim: Int, centroids: UnsafeBufferPointer<Float>,
        k: Int, labels: inout [Int32], distances: inout [Float]
    ) throws {
        try require(
            dim > 0 && k > 0 && centroids.count == k * dim,
            "centroids must be k x dim = \(k) x \(dim), got \(centroids.count) values")
        try require(data.count % dim == 0, "data has \(data.count) values, not a multiple of dim \(dim)")
        let n = data.count / dim
        if labels.count != n { labels = [Int32](repeating: 0, count: n) }
        if distances.count != n { distances = [Float](repeating: 0, count: n) }
        var cnorm = [Float](repeating: 0, count: k)
        for j in 0..<k {
            var s: Float = 0
            for c in 0..<dim { s += centroids[j * dim + c] * centroids[j * dim + c] }
            cnorm[j] = s
        }
        var buf = [Float](repeating: 0, count: min(n, assignChunk) * k)
        buf.withUnsafeMutableBufferPointer { bp in
            labels.withUnsafeMutableBufferPointer { lp in
                distances.withUnsafeMutableBufferPointer { dp in
                    var r0 = 0
                    while r0 < n {
                        let rows = min(assignChunk, n - r0)
                        ck_blas_sgemm(
                            false, true, rows, k, dim, -2, data.baseAddress! + r0 * dim, dim,
                            centroids.baseAddress!, dim, 0, bp.baseAddress!, k)
                        for i in 0..<rows {
                            var best = Float.infinity
                            var bj = 0
                            let row = bp.baseAddress! + i * k
                            for j in 0..<k {
                                let v = row[j] + cnorm[j]
                                if v < best {
                                    best = v
                                    bj = j
                                }
                            }
                            var xn: Float = 0
                            for c in 0..<dim {
                                let x = data[(r0 + i) * dim + c]
                                xn += x * x
                            }
                            lp[r0 + i] = Int32(bj)
                            dp[r0 + i] = max(0, best + xn)
                        }
                        r0 += rows
                    }
                }
            }
        }
    }
}
