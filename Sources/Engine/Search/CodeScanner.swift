import CKernels
import Foundation

/// Per-query scoring of the code payloads of a hybrid index (pq8, pq4, binary): approximate
/// distances, in the index's metric convention (smaller is better), of a list's entries. The
/// candidates are re-ranked exactly from vectors.bin by the caller.
///  - pq8: one float table of q (M x 256) for every list.
///  - pq4: codes of the residual x - c_h. L2: ||q - x||^2 = ||(q - c_h) - (x - c_h)||^2, a table of
///    q - c_h per list; inner product: -<q, x> = -<q, c_h> - <q, x - c_h>, one table of q plus a
///    per-list offset. Tables are quantized to uint8 for the fast-scan kernel (error <= M / 2 /
///    scale, ck_pq.h).
///  - binary: with r = x - c_h stored as ||r|| and the sign bits of its rotation, and the query's
///    residual (L2) or q (inner product) rotated and signed the same way, the Hamming distance h
///    gives cos ~ cos(pi h / P): L2 ||q_r||^2 + ||r||^2 - 2 ||q_r|| ||r|| cos; inner product
///    -<q, c_h> - ||q|| ||r|| cos.
struct CodeScanner {
    let index: HybridIndex
    let q: [Float]
    var table: [Float] = []
    var qtable: [UInt8] = []
    var scale: Float = 1, bias: Float = 0
    var sums: [UInt16] = []
    var resid: [Float] = []
    var z: [Float] = []
    var qbits: [UInt64] = []
    var qnorm: Float = 0
    var ham: [UInt32] = []
    var cosTable: [Float] = []

    init(_ x: HybridIndex, _ q: [Float]) throws {
        index = x
        self.q = q
        let d = x.dim
        switch x.payload {
        case .f32, .f16: return
        case .pq8:
            let pq = x.pq!
            table = [Float](repeating: 0, count: pq.subquantizers * 256)
            try q.withUnsafeBufferPointer { qp in
                try table.withUnsafeMutableBufferPointer {
                    try pq.distanceTable(query: qp, metric: x.metric, kernels: x.kernels, into: $0)
                }
            }
        case .pq4:
            let pq = x.pq!
            table = [Float](repeating: 0, count: pq.subquantizers * 16)
            qtable = [UInt8](repeating: 0, count: ck_pq4_padded_m(pq.subquantizers) * 16)
            resid = [Float](repeating: 0, count: d)
            if x.metric != .l2 {
                try q.withUnsafeBufferPointer { qp in
                    try table.withUnsafeMutableBufferPointer {
                        try pq.distanceTable(query: qp, metric: x.metric, kernels: x.kernels, into: $0)
                    }
                }
                quantizeTable()
            }
        case .binary:
            let rot = x.rotation!
            z = [Float](repeating: 0, count: rot.padded)
            qbits = [UInt64](repeating: 0, count: rot.words)
            resid = [Float](repeating: 0, count: d)
            cosTable = (0...rot.padded).map { Float(cos(Double.pi * Double($0) / Double(rot.padded))) }
            if x.metric != .l2 {
                q.withUnsafeBufferPointer { signCode($0.baseAddress!) }
            }
        }
    }

    mutating func quantizeTable() {
        let m = index.pq!.subquantizers
        var s: Float = 0
        var b: Float = 0
        // entries are finite (the query is checked), m <= 256 (checked at open): cannot fail
        _ = table.withUnsafeBufferPointer { t in
            qtable.withUnsafeMutableBufferPointer { ck_pq4_quantize_table(t.baseAddress, m, $0.baseAddress, &s, &b) }
        }
        scale = s
        bias = b
    }

    mutating func signCode(_ v: UnsafePointer<Float>) {
        let rot = index.rotation!
        var s: Float = 0
        for j in 0..<index.dim { s += v[j] * v[j] }
        qnorm = s.squareRoot()
        z.withUnsafeMutableBufferPointer { zp in
            rot.rotate(v, into: zp.baseAddress!)
            qbits.withUnsafeMutableBufferPointer { rot.signBits(zp.baseAddress!, into: $0.baseAddress!) }
        }
    }

    /// -<q, c_h> (the metric's inner-product distance to the head).
    func headOffset(_ h: Int) -> Float {
        var o: Float = 0
        q.withUnsafeBufferPointer { qp in
            index.headCentroids.withUnsafeBufferPointer { hp in
                index.kernels.distancesUnchecked(
                    .innerProduct, query: qp.baseAddress!, rows: UnsafeRawPointer(hp.baseAddress! + h * index.dim),
                    type: .f16, count: 1, dim: index.dim, stride: index.dim, into: &o)
            }
        }
        return o
    }

    /// q - c_h into `resid`.
    mutating func residual(_ h: Int) {
        let d = index.dim
        index.headCentroids.withUnsafeBufferPointer { hp in
            for j in 0..<d { resid[j] = q[j] - Float(Float16(bitPattern: hp[h * d + j])) }
        }
    }

    /// Approximate distances of the n entries of the list at `raw` (layouts in PostingPayload).
    mutating func scan(_ raw: UnsafeRawPointer, count n: Int, head h: Int, into out: UnsafeMutablePointer<Float>) throws
    {
        let k = index.kernels
        switch index.payload {
        case .f32, .f16: return
        case .pq8:
            let m = index.pq!.subquantizers
            table.withUnsafeBufferPointer {
                k.pqTable.pointee.scan8!((raw + 12 * n).assumingMemoryBound(to: UInt8.self), n, m, $0.baseAddress!, out)
            }
        case .pq4:
            let pq = index.pq!
            let m = pq.subquantizers
            var offset: Float = 0
            if index.metric == .l2 {
                residual(h)
                try resid.withUnsafeBufferPointer { rp in
                    try table.withUnsafeMutableBufferPointer {
                        try pq.distanceTable(query: rp, metric: .l2, kernels: k, into: $0)
                    }
                }
                quantizeTable()
            } else {
                offset = headOffset(h)
            }
            let blocks = (n + 31) / 32
            if sums.count < blocks * 32 { sums = [UInt16](repeating: 0, count: blocks * 32) }
            qtable.withUnsafeBufferPointer { tp in
                sums.withUnsafeMutableBufferPointer { sp in
                    k.pqTable.pointee.scan4!(
                        (raw + 12 * n).assumingMemoryBound(to: UInt8.self), blocks, ck_pq4_padded_m(m), tp.baseAddress!,
                        sp.baseAddress!)
                }
            }
            let b = offset + bias
            let inv = 1 / scale
            for i in 0..<n { out[i] = b + Float(sums[i]) * inv }
        case .binary:
            let rot = index.rotation!
            var offset: Float = 0
            if index.metric == .l2 {
                residual(h)
                resid.withUnsafeBufferPointer { signCode($0.baseAddress!) }
            } else {
                offset = headOffset(h)
            }
            if ham.count < n { ham = [UInt32](repeating: 0, count: n) }
            qbits.withUnsafeBufferPointer { qb in
                ham.withUnsafeMutableBufferPointer { hp in
                    k.hammingTable.pointee.dist_1xn!(
                        qb.baseAddress!, (raw + 16 * n).assumingMemoryBound(to: UInt64.self), n, rot.words,
                        hp.baseAddress!)
                }
            }
            // L2: ||q_r||^2 + ||r||^2 - 2 ||q_r|| ||r|| cos; inner product: offset - ||q|| ||r|| cos
            let qn = qnorm
            let l2 = index.metric == .l2
            let base = l2 ? qn * qn : offset
            for i in 0..<n {
                let rn = Float(
                    bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 12 * n + 4 * i, as: UInt32.self))
                )
                let c = cosTable[Int(ham[i])]
                out[i] = base + (l2 ? rn * rn : 0) - (l2 ? 2 : 1) * qn * rn * c
            }
        }
    }
}
