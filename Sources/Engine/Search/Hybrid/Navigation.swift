/// The navigation structure over head centroids (coarse centroids and their head ranges), shared
/// by build-time replica assignment, inserts and search.
struct Navigation {
    let coarse: UnsafePointer<Float>
    let coarseCount: Int
    let coarseStart: [UInt32]
    /// Head centroids are f32 during a build and f16 in an opened index (RAM and bandwidth halved;
    /// the build rounds them to f16 values, so both hold the same numbers).
    let heads: UnsafeRawPointer
    let headType: VectorType
    let dim: Int
    let kernels: Kernels

    func head(_ h: Int) -> UnsafeRawPointer { heads + h * dim * headType.bytes }
    /// Candidate heads a vector is placed among (build and inserts).
    static let buildCandidates = 32
    /// Coarse clusters probed when placing a vector: at least 4, more when clusters hold few heads.
    static func buildProbe(coarse: Int, heads: Int) -> Int { min(coarse, max(4, 64 / max(1, heads / coarse))) }

    /// The k nearest heads of x (metric distances) among the heads of its `probe` nearest coarse
    /// clusters, nearest first (bounded-heap selection: a full sort costs ~40% of a query at 100k heads).
    func nearestHeads(_ x: UnsafePointer<Float>, metric: Metric, probe: Int, k: Int) -> [SearchHit] {
        var cd = [Float](repeating: 0, count: coarseCount)
        cd.withUnsafeMutableBufferPointer {
            kernels.distancesUnchecked(
                metric, query: x, rows: UnsafeRawPointer(coarse), type: .f32, count: coarseCount, dim: dim,
                stride: dim, into: $0.baseAddress!)
        }
        var sel = TopK(k: k)
        var hd = [Float]()
        for c in smallest(cd, probe) {
            let a = Int(coarseStart[c])
            let b = Int(coarseStart[c + 1])
            if b == a { continue }
            if hd.count < b - a { hd = [Float](repeating: 0, count: b - a) }
            hd.withUnsafeMutableBufferPointer {
                kernels.distancesUnchecked(
                    metric, query: x, rows: head(a), type: headType, count: b - a, dim: dim, stride: dim,
                    into: $0.baseAddress!)
                sel.push($0.baseAddress!, count: b - a, base: a)
            }
        }
        return sel.sorted()
    }

    /// Head h as f32 values.
    func headValues(_ h: Int, into v: inout [Float]) {
        let p = head(h)
        if headType == .f32 {
            for j in 0..<dim { v[j] = p.load(fromByteOffset: 4 * j, as: Float.self) }
        } else {
            for j in 0..<dim { v[j] = Float(Float16(bitPattern: p.load(fromByteOffset: 2 * j, as: UInt16.self))) }
        }
    }

    /// RNG rule over candidates (squared L2, nearest first): take h unless an accepted head g has
    /// rngFactor x d(h, g) < d(x, h); only heads within (1 + epsilon) of the nearest; at most maxReplicas.
    func rngSelect(_ cand: [SearchHit], maxReplicas: Int, epsilon: Float, rngFactor: Float) -> [(
        head: Int, dist: Float
    )] {
        guard let first = cand.first else { return [] }
        var out: [(head: Int, dist: Float)] = []
        var pair: Float = 0
        var hq = [Float](repeating: 0, count: dim)
        for c in cand {
            if out.count == maxReplicas || (!out.isEmpty && c.distance > (1 + epsilon) * first.distance) { break }
            let h = Int(c.id)
            var ok = true
            if !out.isEmpty { headValues(h, into: &hq) }
            for g in out {
                hq.withUnsafeBufferPointer {
                    kernels.distancesUnchecked(
                        .l2, query: $0.baseAddress!, rows: head(g.head), type: headType, count: 1, dim: dim,
                        stride: dim, into: &pair)
                }
                if rngFactor * pair < c.distance {
                    ok = false
                    break
                }
            }
            if ok { out.append((h, c.distance)) }
        }
        return out
    }
}
