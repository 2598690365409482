import CKernels
import Foundation

/// Scores the entries of posting lists for one query, in the index's metric convention (smaller
/// is better). The index makes one scanner per query (`HybridIndex.makeScanner`) and hands it
/// only what its payload needs; approximate scanners' candidates are re-ranked exactly from
/// vectors.bin by the index.
protocol ListScanner {
    /// Distances are estimates from codes (re-ranked afterwards), not exact.
    var approximate: Bool { get }
    /// Distances of the list's entries (list.count values) into `out`; `head` is the list's head.
    mutating func scan(_ list: PostingList, head: Int, into out: UnsafeMutablePointer<Float>) throws
    /// The entries whose `scan` distance may be <= `bound` (a superset of them): their indices in
    /// increasing order into `indices` (room for list.count), their `scan` distances at
    /// out[indices[j]] (other entries of `out` unspecified); returns how many.
    mutating func candidates(
        _ list: PostingList, head: Int, bound: Float, into out: UnsafeMutablePointer<Float>,
        indices: UnsafeMutablePointer<UInt32>
    ) throws -> Int
}

extension ListScanner {
    mutating func candidates(
        _ list: PostingList, head: Int, bound: Float, into out: UnsafeMutablePointer<Float>,
        indices: UnsafeMutablePointer<UInt32>
    ) throws -> Int {
        try scan(list, head: head, into: out)
        var c = 0
        for j in 0..<list.count where out[j] <= bound {
            indices[c] = UInt32(j)
            c += 1
        }
        return c
    }
}

/// Head centroids as f16 bit patterns (what an opened index keeps in RAM).
struct HeadTable {
    let bits: [UInt16]
    let dim: Int

    /// q - c_h into r (q and r hold at least dim values).
    func residual(_ q: [Float], _ h: Int, into r: inout [Float], kernels: Kernels) {
        precondition(q.count >= dim && r.count >= dim && h >= 0 && (h + 1) * dim <= bits.count)
        q.withUnsafeBufferPointer { qp in
            bits.withUnsafeBufferPointer { hp in
                r.withUnsafeMutableBufferPointer { rp in
                    kernels.subtractFloat16Unchecked(
                        qp.baseAddress!, hp.baseAddress! + h * dim, into: rp.baseAddress!, count: dim)
                }
            }
        }
    }

    /// -<q, c_h>, the inner-product distance from q to head h.
    func innerProductDistance(_ q: [Float], _ h: Int, kernels: Kernels) -> Float {
        var o: Float = 0
        q.withUnsafeBufferPointer { qp in
            bits.withUnsafeBufferPointer { hp in
                kernels.distancesUnchecked(
                    .innerProduct, query: qp.baseAddress!, rows: UnsafeRawPointer(hp.baseAddress! + h * dim),
                    type: .f16, count: 1, dim: dim, stride: dim, into: &o)
            }
        }
        return o
    }
}

/// f32 or f16 vectors: exact distances (f16: to half precision).
struct VectorScanner: ListScanner {
    let query: [Float]
    let metric: Metric
    let type: VectorType
    let kernels: Kernels
    var approximate: Bool { false }

    mutating func scan(_ list: PostingList, head: Int, into out: UnsafeMutablePointer<Float>) throws {
        let d = query.count
        query.withUnsafeBufferPointer { qp in
            kernels.distancesUnchecked(
                metric, query: qp.baseAddress!, rows: list.vectors, type: type, count: list.count, dim: d, stride: d,
                into: out)
        }
    }
}

/// 8-bit PQ codes of the vectors: one float table of q (M x 256) for every list.
struct PQ8Scanner: ListScanner {
    let table: [Float]
    let subquantizers: Int
    let kernels: Kernels
    var approximate: Bool { true }

    init(query: [Float], pq: ProductQuantizer, metric: Metric, kernels: Kernels) throws {
        var t = [Float](repeating: 0, count: pq.subquantizers * 256)
        try query.withUnsafeBufferPointer { qp in
            try t.withUnsafeMutableBufferPointer {
                try pq.distanceTable(query: qp, metric: metric, kernels: kernels, into: $0)
            }
        }
        table = t
        subquantizers = pq.subquantizers
        self.kernels = kernels
    }

    mutating func scan(_ list: PostingList, head: Int, into out: UnsafeMutablePointer<Float>) throws {
        let m = subquantizers
        table.withUnsafeBufferPointer {
            kernels.pqTable.pointee.scan8!(
                list.codes.assumingMemoryBound(to: UInt8.self), list.count, m, $0.baseAddress!, out)
        }
    }
}

/// 4-bit PQ codes of the residual x - c_h, scanned with uint8 tables (fast-scan). L2:
/// ‖q - x‖² = ‖(q - c_h) - (x - c_h)‖², a table of q - c_h per list; inner product:
/// -<q, x> = -<q, c_h> - <q, x - c_h>, one table of q plus a per-list offset. Tables are
/// quantized to uint8 (error <= M / 2 / scale, ck_pq.h).
struct PQ4Scanner: ListScanner {
    let query: [Float]
    let pq: ProductQuantizer
    let metric: Metric
    let heads: HeadTable
    let kernels: Kernels
    var table: [Float]
    var qtable: [UInt8]
    var scale: Float = 1
    var bias: Float = 0
    var sums: [UInt16] = []
    var resid: [Float]
    var approximate: Bool { true }

    init(query: [Float], pq: ProductQuantizer, metric: Metric, heads: HeadTable, kernels: Kernels) throws {
        self.query = query
        self.pq = pq
        self.metric = metric
        self.heads = heads
        self.kernels = kernels
        table = [Float](repeating: 0, count: pq.subquantizers * 16)
        qtable = [UInt8](repeating: 0, count: ck_pq_padded_m4(pq.subquantizers) * 16)
        resid = [Float](repeating: 0, count: query.count)
        if metric != .l2 { try makeTable(query) }
    }

    mutating func makeTable(_ v: [Float]) throws {
        let (pq, metric, kernels) = (self.pq, self.metric, self.kernels)
        try v.withUnsafeBufferPointer { vp in
            try table.withUnsafeMutableBufferPointer {
                try pq.distanceTable(query: vp, metric: metric, kernels: kernels, into: $0)
            }
        }
        var s: Float = 0
        var b: Float = 0
        let m = pq.subquantizers
        // entries are finite (the query is checked), m <= 256 (checked at open): cannot fail
        let quantize = kernels.pqTable.pointee.quantize4!
        _ = table.withUnsafeBufferPointer { t in
            qtable.withUnsafeMutableBufferPointer { quantize(t.baseAddress, m, $0.baseAddress, &s, &b) }
        }
        scale = s
        bias = b
    }

    /// The list's uint16 sums into `sums`; returns the distance's offset (distance = offset +
    /// sum / scale).
    mutating func sums(_ list: PostingList, head h: Int) throws -> Float {
        let n = list.count
        var offset: Float = 0
        if metric == .l2 {
            heads.residual(query, h, into: &resid, kernels: kernels)
            try makeTable(resid)
        } else {
            offset = heads.innerProductDistance(query, h, kernels: kernels)
        }
        let blocks = (n + 31) / 32
        if sums.count < blocks * 32 { sums = [UInt16](repeating: 0, count: blocks * 32) }
        let mp = ck_pq_padded_m4(pq.subquantizers)
        qtable.withUnsafeBufferPointer { tp in
            sums.withUnsafeMutableBufferPointer { sp in
                kernels.pqTable.pointee.scan4!(
                    list.codes.assumingMemoryBound(to: UInt8.self), blocks, mp, tp.baseAddress!, sp.baseAddress!)
            }
        }
        return offset + bias
    }

    mutating func scan(_ list: PostingList, head h: Int, into out: UnsafeMutablePointer<Float>) throws {
        let b = try sums(list, head: h)
        let inv = 1 / scale
        sums.withUnsafeBufferPointer { sp in for i in 0..<list.count { out[i] = b + Float(sp[i]) * inv } }
    }

    /// The bound becomes a limit on the integer sums, filtered in SIMD; only the entries under it
    /// get a float distance (the same expression as `scan`'s).
    mutating func candidates(
        _ list: PostingList, head h: Int, bound: Float, into out: UnsafeMutablePointer<Float>,
        indices: UnsafeMutablePointer<UInt32>
    ) throws -> Int {
        let b = try sums(list, head: h)
        let inv = 1 / scale
        // The float distance d(s) = fl(b + fl(Float(s) * inv)), s <= 65535, is at least
        // b + s / scale - e with e = (|b| + 65536 inv) 2^-22 (three roundings of 2^-24 each, inv's
        // included); e below doubles that and adds |bound|. So every s with d(s) <= bound has
        // s <= (bound - b + e) scale, and the limit takes two steps more for the double roundings.
        // A superset even where 1/scale is below an ulp of b (a query far from the data): the
        // float test after it decides, as before. NaN (infinite scale at bound == b): no limit.
        let e = (abs(Double(b)) + abs(Double(bound)) + 65536 * Double(inv)) * 0x1p-21
        let x = ((Double(bound) - Double(b) + e) * Double(scale)).rounded(.down) + 2
        if x < 0 { return 0 }
        let limit = x.isNaN || x >= 65535 ? UInt16.max : UInt16(x)
        return sums.withUnsafeBufferPointer { sp in
            let c = kernels.pqTable.pointee.below4!(sp.baseAddress!, list.count, limit, indices)
            for j in 0..<c {
                let i = Int(indices[j])
                out[i] = b + Float(sp[i]) * inv
            }
            return c
        }
    }
}

/// Sign codes of the rotated residual r = x - c_h with ‖r‖ stored: with the query's residual (L2)
/// or q (inner product) rotated and signed the same way, the Hamming distance h gives
/// cos ~ cos(pi h / P): L2 ‖q_r‖² + ‖r‖² - 2 ‖q_r‖ ‖r‖ cos; inner product -<q, c_h> - ‖q‖ ‖r‖ cos.
struct BinaryScanner: ListScanner {
    let query: [Float]
    let rotation: SignRotation
    let metric: Metric
    let heads: HeadTable
    let kernels: Kernels
    let cosTable: [Float]
    var z: [Float]
    var qbits: [UInt64]
    var qnorm: Float = 0
    var ham: [UInt32] = []
    var resid: [Float]
    var approximate: Bool { true }

    init(query: [Float], rotation: SignRotation, metric: Metric, heads: HeadTable, kernels: Kernels) {
        self.query = query
        self.rotation = rotation
        self.metric = metric
        self.heads = heads
        self.kernels = kernels
        cosTable = (0...rotation.padded).map { Float(cos(Double.pi * Double($0) / Double(rotation.padded))) }
        z = [Float](repeating: 0, count: rotation.padded)
        qbits = [UInt64](repeating: 0, count: rotation.words)
        resid = [Float](repeating: 0, count: query.count)
        if metric != .l2 { signCode(query) }
    }

    mutating func signCode(_ v: [Float]) {
        var s: Float = 0
        for x in v { s += x * x }
        qnorm = s.squareRoot()
        let rot = rotation
        v.withUnsafeBufferPointer { vp in
            z.withUnsafeMutableBufferPointer { zp in
                rot.rotate(vp.baseAddress!, into: zp.baseAddress!)
                qbits.withUnsafeMutableBufferPointer { rot.signBits(zp.baseAddress!, into: $0.baseAddress!) }
            }
        }
    }

    mutating func scan(_ list: PostingList, head h: Int, into out: UnsafeMutablePointer<Float>) throws {
        let n = list.count
        var offset: Float = 0
        if metric == .l2 {
            heads.residual(query, h, into: &resid, kernels: kernels)
            signCode(resid)
        } else {
            offset = heads.innerProductDistance(query, h, kernels: kernels)
        }
        if ham.count < n { ham = [UInt32](repeating: 0, count: n) }
        let words = rotation.words
        qbits.withUnsafeBufferPointer { qb in
            ham.withUnsafeMutableBufferPointer { hp in
                kernels.hammingTable.pointee.dist_1xn!(
                    qb.baseAddress!, list.signBits.assumingMemoryBound(to: UInt64.self), n, words, hp.baseAddress!)
            }
        }
        let qn = qnorm
        let l2 = metric == .l2
        let base = l2 ? qn * qn : offset
        for i in 0..<n {
            let rn = list.norm(i)
            let c = cosTable[Int(ham[i])]
            out[i] = base + (l2 ? rn * rn : 0) - (l2 ? 2 : 1) * qn * rn * c
        }
    }
}
