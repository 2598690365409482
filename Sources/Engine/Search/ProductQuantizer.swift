import CKernels

/// Product quantizer: d = m * dsub, each sub-vector coded by one of 2^bits centroids
/// (bits 8: one byte per sub-quantizer, scanned with float tables; bits 4: packed for fast-scan).
public struct ProductQuantizer: Sendable {
    /// Dimension of the vectors.
    public let dim: Int
    /// Number of sub-quantizers M.
    public let subquantizers: Int
    /// Bits per sub-code: 4 or 8.
    public let bits: Int
    /// Centroids per sub-quantizer (2^bits).
    public var ksub: Int { 1 << bits }
    /// Dimensions per sub-quantizer.
    public var dsub: Int { dim / subquantizers }
    /// Centroids, layout (M, ksub, dsub).
    public let centroids: [Float]
    /// The same centroids transposed, (M, dsub, ksub), for the table kernels.
    let centroidsT: [Float]

    /// Builds from given centroids (M, ksub, dsub).
    public init(dim: Int, subquantizers m: Int, bits: Int, centroids: [Float]) throws {
        try require(bits == 4 || bits == 8, "PQ supports 4 or 8 bits per sub-code, got \(bits)")
        try require(
            m > 0 && dim > 0 && dim % m == 0, "dim \(dim) must be a positive multiple of the sub-quantizer count \(m)")
        try require(bits == 8 || m <= 256, "4-bit fast-scan supports at most 256 sub-quantizers, got \(m)")
        let ksub = 1 << bits
        let dsub = dim / m
        try require(
            centroids.count == m * ksub * dsub,
            "expected \(m) x \(ksub) x \(dsub) centroid values, got \(centroids.count)")
        try centroids.withUnsafeBufferPointer { try requireFinite($0, "centroids") }
        var t = [Float](repeating: 0, count: centroids.count)
        for s in 0..<m {
            for j in 0..<ksub {
                for c in 0..<dsub {
                    t[(s * dsub + c) * ksub + j] = centroids[(s * ksub + j) * dsub + c]
                }
            }
        }
        self.dim = dim
        self.subquantizers = m
        self.bits = bits
        self.centroids = centroids
        self.centroidsT = t
    }

    /// Trains one k-means (on sgemm) per sub-space from n x dim training vectors.
    public init(
        training: UnsafeBufferPointer<Float>, dim: Int, subquantizers m: Int, bits: Int,
        iterations: Int = 20, seed: UInt64 = 1234
    ) throws {
        try require(bits == 4 || bits == 8, "PQ supports 4 or 8 bits per sub-code, got \(bits)")
        try require(
            m > 0 && dim > 0 && dim % m == 0, "dim \(dim) must be a positive multiple of the sub-quantizer count \(m)")
        try require(
            training.count % dim == 0, "training data has \(training.count) values, not a multiple of dim \(dim)")
        let n = training.count / dim
        let ksub = 1 << bits
        let dsub = dim / m
        try require(n >= ksub, "PQ training needs at least \(ksub) vectors, got \(n)")
        var cent = [Float](repeating: 0, count: m * ksub * dsub)
        var sub = [Float](repeating: 0, count: n * dsub)
        for s in 0..<m {
            for i in 0..<n { for c in 0..<dsub { sub[i * dsub + c] = training[i * dim + s * dsub + c] } }
            let cs = try sub.withUnsafeBufferPointer {
                try KMeans.train(data: $0, dim: dsub, k: ksub, iterations: iterations, seed: seed &+ UInt64(s))
            }
            cent.replaceSubrange((s * ksub * dsub)..<((s + 1) * ksub * dsub), with: cs)
        }
        try self.init(dim: dim, subquantizers: m, bits: bits, centroids: cent)
    }

    /// Distance table (M x ksub) for one query: squared L2 per sub-space, or the negated inner
    /// product (so that smaller is better for every metric).
    public func distanceTable(
        query: UnsafeBufferPointer<Float>, metric: Metric, kernels: Kernels,
        into table: UnsafeMutableBufferPointer<Float>
    ) throws {
        try require(query.count == dim, "query has \(query.count) values, expected \(dim)")
        try require(table.count >= subquantizers * ksub, "table holds \(table.count), need \(subquantizers * ksub)")
        try requireFinite(query, "query")
        let t = kernels.pqTable.pointee
        centroidsT.withUnsafeBufferPointer { ct in
            if metric == .l2 {
                t.table_l2(query.baseAddress!, ct.baseAddress!, subquantizers, ksub, dsub, table.baseAddress!)
            } else {
                t.table_ip(query.baseAddress!, ct.baseAddress!, subquantizers, ksub, dsub, table.baseAddress!)
                for i in 0..<(subquantizers * ksub) { table[i] = -table[i] }
            }
        }
    }

    /// Codes (n x M, one byte per sub-code) of n x dim vectors: nearest centroid per sub-space.
    public func encode(_ x: UnsafeBufferPointer<Float>, kernels: Kernels) throws -> [UInt8] {
        try require(x.count % dim == 0, "input has \(x.count) values, not a multiple of dim \(dim)")
        try requireFinite(x, "vectors to encode")
        let n = x.count / dim
        let m = subquantizers
        let ks = ksub
        var codes = [UInt8](repeating: 0, count: n * m)
        var table = [Float](repeating: 0, count: m * ks)
        try table.withUnsafeMutableBufferPointer { tp in
            for i in 0..<n {
                try distanceTable(
                    query: UnsafeBufferPointer(rebasing: x[(i * dim)..<((i + 1) * dim)]), metric: .l2, kernels: kernels,
                    into: tp)
                for s in 0..<m {
                    var best = Float.infinity
                    var bj = 0
                    for j in 0..<ks where tp[s * ks + j] < best {
                        best = tp[s * ks + j]
                        bj = j
                    }
                    codes[i * m + s] = UInt8(bj)
                }
            }
        }
        return codes
    }

    /// Reconstructs vectors from codes.
    public func decode(_ codes: [UInt8]) throws -> [Float] {
        try require(
            codes.count % subquantizers == 0, "code count \(codes.count) is not a multiple of M = \(subquantizers)")
        let n = codes.count / subquantizers
        var out = [Float](repeating: 0, count: n * dim)
        for i in 0..<n {
            for s in 0..<subquantizers {
                let j = Int(codes[i * subquantizers + s])
                try require(j < ksub, "code \(j) out of range for \(bits)-bit PQ")
                for c in 0..<dsub { out[i * dim + s * dsub + c] = centroids[(s * ksub + j) * dsub + c] }
            }
        }
        return out
    }
}

/// 4-bit PQ codes packed in blocks of 32 vectors for fast-scan (layout in ck_pq.h).
public struct PackedPQ4Codes: Sendable {
    /// Codes held.
    public let count: Int
    /// Sub-quantizers per code.
    public let subquantizers: Int
    /// The packed blocks (ck_pq.h layout).
    public let bytes: [UInt8]
    /// Blocks of 32 codes.
    public var blocks: Int { (count + 31) / 32 }
    /// Sub-quantizers rounded up to the kernel's granularity.
    public var paddedSubquantizers: Int { ck_pq_padded_m4(subquantizers) }

    /// Packs n x M codes (values < 16).
    public init(codes: [UInt8], subquantizers m: Int) throws {
        try require(m > 0 && m <= 256, "sub-quantizer count must be in 1...256, got \(m)")
        try require(codes.count % m == 0, "code count \(codes.count) is not a multiple of M = \(m)")
        let n = codes.count / m
        var out = [UInt8](repeating: 0, count: ck_pq_packed_bytes4(n, m))
        let st = codes.withUnsafeBufferPointer { c in
            out.withUnsafeMutableBufferPointer { ck_pq_pack4(c.baseAddress, n, m, $0.baseAddress) }
        }
        try EngineError.check(st, "4-bit PQ codes must be < 16")
        count = n
        subquantizers = m
        bytes = out
    }
}

/// A distance table quantized to uint8 for fast-scan: distance ~= bias + sum / scale, each term
/// within 0.5 / scale of the float table.
public struct QuantizedPQ4Table: Sendable {
    /// Table entries, uint8 (padded sub-quantizers x 16).
    public let entries: [UInt8]
    /// Distance = bias + sum / scale.
    public let scale: Float
    /// Offset added to every dequantized distance.
    public let bias: Float
    /// Sub-quantizers of the table.
    public let subquantizers: Int
    /// Largest difference between the fast-scan distance and the float-table distance.
    public var maxError: Float { Float(subquantizers) * 0.5 / scale }

    /// Quantizes an M x 16 float table.
    public init(table: UnsafeBufferPointer<Float>, subquantizers m: Int) throws {
        try require(m > 0 && m <= 256, "sub-quantizer count must be in 1...256, got \(m)")
        try require(table.count == m * 16, "a 4-bit table is M x 16 = \(m * 16) values, got \(table.count)")
        var q = [UInt8](repeating: 0, count: ck_pq_padded_m4(m) * 16)
        var s: Float = 0
        var b: Float = 0
        let st = q.withUnsafeMutableBufferPointer {
            ck_pq_quantize_table4(table.baseAddress, m, $0.baseAddress, &s, &b)
        }
        try EngineError.check(st, "distance table has a non-finite entry")
        entries = q
        scale = s
        bias = b
        subquantizers = m
    }
}

extension Kernels {
    /// Float-table (ADC) distances of n x M 8-bit codes; `table` is M x 256.
    public func pqScan8(
        codes: UnsafeBufferPointer<UInt8>, subquantizers m: Int, table: UnsafeBufferPointer<Float>,
        into out: UnsafeMutableBufferPointer<Float>
    ) throws {
        try require(m > 0 && codes.count % m == 0, "code count \(codes.count) is not a multiple of M = \(m)")
        try require(table.count == m * 256, "8-bit table is M x 256 = \(m * 256) values, got \(table.count)")
        let n = codes.count / m
        try require(out.count >= n, "output holds \(out.count), need \(n)")
        if n == 0 { return }
        let fn = pqTable.pointee.scan8!
        let parts = n >= 1 << 16 ? threads : 1
        Threads.parallelFor(parts, threads: parts) { p in
            let r = Threads.range(n, parts: parts, index: p)
            fn(codes.baseAddress! + r.lowerBound * m, r.count, m, table.baseAddress!, out.baseAddress! + r.lowerBound)
        }
    }

    /// Fast-scan sums (uint16) of packed 4-bit codes; `out` holds blocks * 32 values.
    public func pqScan4(codes: PackedPQ4Codes, table: QuantizedPQ4Table, into out: UnsafeMutableBufferPointer<UInt16>)
        throws
    {
        try require(
            table.subquantizers == codes.subquantizers,
            "table has \(table.subquantizers) sub-quantizers, codes have \(codes.subquantizers)")
        try require(
            out.count >= codes.blocks * 32, "output holds \(out.count), need \(codes.blocks * 32) (whole blocks)")
        let fn = pqTable.pointee.scan4!
        let nb = codes.blocks
        let mp = codes.paddedSubquantizers
        let parts = nb >= 2048 ? threads : 1
        codes.bytes.withUnsafeBufferPointer { cb in
            table.entries.withUnsafeBufferPointer { tb in
                Threads.parallelFor(parts, threads: parts) { p in
                    let r = Threads.range(nb, parts: parts, index: p)
                    fn(
                        cb.baseAddress! + r.lowerBound * 16 * mp, r.count, mp, tb.baseAddress!,
                        out.baseAddress! + r.lowerBound * 32)
                }
            }
        }
    }

    /// k nearest by fast-scan distance (bias + sum / scale), ascending, ties by index.
    public func pqFastScanTopK(codes: PackedPQ4Codes, table: QuantizedPQ4Table, k: Int) throws -> [Neighbor<Float>] {
        try require(k > 0, "k must be positive, got \(k)")
        var sums = [UInt16](repeating: 0, count: codes.blocks * 32)
        try sums.withUnsafeMutableBufferPointer { try pqScan4(codes: codes, table: table, into: $0) }
        let kk = min(k, codes.count)
        var hd = [UInt32](repeating: 0, count: kk)
        var hi = [Int64](repeating: 0, count: kk)
        let widened = sums[0..<codes.count].map { UInt32($0) }
        let got = widened.withUnsafeBufferPointer { w in
            hd.withUnsafeMutableBufferPointer { d in
                hi.withUnsafeMutableBufferPointer { i -> Int in
                    let s = ck_topk_push_u32(d.baseAddress, i.baseAddress, 0, kk, w.baseAddress, codes.count, 0)
                    ck_topk_sort_u32(d.baseAddress, i.baseAddress, s)
                    return s
                }
            }
        }
        return (0..<got).map { Neighbor(index: Int(hi[$0]), distance: table.bias + Float(hd[$0]) / table.scale) }
    }
}
