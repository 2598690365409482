import CKernels

/// A nearest-neighbour result: index into the scanned collection and its distance.
public struct Neighbor<Distance: Comparable & Sendable>: Equatable, Sendable {
    /// Position in the scanned collection.
    public var index: Int
    /// Distance to the query.
    public var distance: Distance
    /// A result.
    public init(index: Int, distance: Distance) {
        self.index = index
        self.distance = distance
    }
}

extension Kernels {
    static func words(forBits bits: Int) throws(EngineError) -> Int {
        try require(bits > 0, "code length must be positive, got \(bits) bits")
        try require(bits % 64 == 0, "code length must be a multiple of 64 bits, got \(bits)")
        return bits / 64
    }

    /// Hamming distances from one code to each of `codes` (n codes of `bits` bits, packed in
    /// 64-bit words, row-major). Writes n distances into `out`. Exact.
    public func hammingDistances(
        query: UnsafeBufferPointer<UInt64>, codes: UnsafeBufferPointer<UInt64>,
        bits: Int, into out: UnsafeMutableBufferPointer<UInt32>
    ) throws(EngineError) {
        let w = try Self.words(forBits: bits)
        try require(query.count == w, "query has \(query.count) words, expected \(w) for \(bits)-bit codes")
        try require(codes.count % w == 0, "codes hold \(codes.count) words, not a multiple of \(w)")
        let n = codes.count / w
        try require(out.count >= n, "output holds \(out.count) distances, need \(n)")
        if n == 0 { return }
        let fn = hammingTable.pointee.dist_1xn!
        let q = query.baseAddress!
        let c = codes.baseAddress!
        let o = out.baseAddress!
        // Below ~64k codes one core finishes faster than threads can be woken.
        let parts = n >= 1 << 16 ? threads : 1
        Threads.parallelFor(parts, threads: parts) { p in
            let r = Threads.range(n, parts: parts, index: p)
            fn(q, c + r.lowerBound * w, r.count, w, o + r.lowerBound)
        }
    }

    /// Hamming distances between m queries and n codes; `out` is m x n row-major.
    public func hammingDistances(
        queries: UnsafeBufferPointer<UInt64>, codes: UnsafeBufferPointer<UInt64>,
        bits: Int, into out: UnsafeMutableBufferPointer<UInt32>
    ) throws(EngineError) {
        let w = try Self.words(forBits: bits)
        try require(queries.count % w == 0, "queries hold \(queries.count) words, not a multiple of \(w)")
        try require(codes.count % w == 0, "codes hold \(codes.count) words, not a multiple of \(w)")
        let m = queries.count / w
        let n = codes.count / w
        try require(out.count >= m * n, "output holds \(out.count) distances, need \(m) x \(n)")
        if m == 0 || n == 0 { return }
        let fn = hammingTable.pointee.dist_mxn!
        let q = queries.baseAddress!
        let c = codes.baseAddress!
        let o = out.baseAddress!
        let parts = min(threads, m)
        Threads.parallelFor(parts, threads: parts) { p in
            let r = Threads.range(m, parts: parts, index: p)
            fn(q + r.lowerBound * w, r.count, c, n, w, o + r.lowerBound * n)
        }
    }

    /// Weighted multi-level Hamming distance (residual binary codes): each code is `levels`
    /// groups of `bits` bits and the distance is sum_l weights[l] * hamming_l.
    public func weightedHammingDistances(
        query: UnsafeBufferPointer<UInt64>, codes: UnsafeBufferPointer<UInt64>,
        bits: Int, weights: [Float],
        into out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        let w = try Self.words(forBits: bits)
        let levels = weights.count
        try require(levels > 0, "at least one level weight is required")
        try requireFinite(weights, "level weights")
        try require(query.count == w * levels, "query has \(query.count) words, expected \(w * levels)")
        try require(codes.count % (w * levels) == 0, "codes hold \(codes.count) words, not a multiple of \(w * levels)")
        let n = codes.count / (w * levels)
        try require(out.count >= n, "output holds \(out.count) distances, need \(n)")
        if n == 0 { return }
        weights.withUnsafeBufferPointer { wp in
            hammingTable.pointee.weighted_1xn!(
                query.baseAddress!, codes.baseAddress!, n, w, levels,
                wp.baseAddress!, out.baseAddress!)
        }
    }

    /// The k codes nearest to `query`, ascending by distance (ties: smaller index first).
    /// Returns min(k, n) neighbours.
    public func hammingTopK(
        query: UnsafeBufferPointer<UInt64>, codes: UnsafeBufferPointer<UInt64>,
        bits: Int, k: Int
    ) throws(EngineError) -> [Neighbor<UInt32>] {
        let w = try Self.words(forBits: bits)
        try require(query.count == w, "query has \(query.count) words, expected \(w) for \(bits)-bit codes")
        try require(codes.count % w == 0, "codes hold \(codes.count) words, not a multiple of \(w)")
        try require(k > 0, "k must be positive, got \(k)")
        let n = codes.count / w
        let kk = min(k, n)
        if kk == 0 { return [] }
        var d = [UInt32](repeating: 0, count: kk)
        var ids = [Int64](repeating: 0, count: kk)
        let got = withUnsafeTemporaryAllocation(of: UInt32.self, capacity: Int(CK_HAMMING_TOPK_BLOCK)) { scratch in
            d.withUnsafeMutableBufferPointer { dp in
                ids.withUnsafeMutableBufferPointer { ip in
                    ck_hamming_topk(
                        hammingTable, query.baseAddress!, codes.baseAddress!, n, w, kk,
                        scratch.baseAddress!, dp.baseAddress!, ip.baseAddress!)
                }
            }
        }
        return (0..<got).map { Neighbor(index: Int(ids[$0]), distance: d[$0]) }
    }
}
