import Foundation

extension HybridIndex {

    /// Adds vectors (n x dim) under `ids`. An id already present is replaced (the old vector is
    /// tombstoned). Each vector goes to up to the build's maxReplicas heads by the RNG rule and is
    /// held in RAM and in `delta.log` (one fsync per call) until the index is rebuilt.
    public func insert(vectors: [Float], ids: [UInt64]) throws {
        try require(writable, "the index was opened read-only (open with writable: true to insert)")
        try require(
            vectors.count == ids.count * dim, "\(vectors.count) values for \(ids.count) ids of \(dim)-d vectors")
        try vectors.withUnsafeBufferPointer { try requireFinite($0, "inserted vectors") }
        var rows: [[Float]] = []
        for i in 0..<ids.count {
            var v = Array(vectors[(i * dim)..<((i + 1) * dim)])
            if metric == .cosine {
                let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
                try require(n > 0, "cannot insert a zero vector under cosine")
                v = v.map { $0 / n }
            }
            rows.append(v)
        }
        try delta.append(ids.enumerated().map { ($0.element, rows[$0.offset]) })
        for (i, id) in ids.enumerated() { try placeInsert(id, rows[i]) }
    }

    /// Adds one vector under `id` (see `insert(vectors:ids:)`).
    public func insert(_ vector: [Float], id: UInt64) throws { try insert(vectors: vector, ids: [id]) }

    /// Removes ids (a tombstone hides base entries; inserted entries are dropped). Unknown ids
    /// are ignored. Logged with one fsync per call.
    public func delete(_ ids: [UInt64]) throws {
        try require(writable, "the index was opened read-only (open with writable: true to delete)")
        try delta.append(ids.map { ($0, nil) })
        for id in ids { placeDelete(id) }
    }

    /// Inserted vectors held in RAM, and tombstones.
    public var insertedCount: Int { delta.snapshot().location.count }
    /// Tombstones (deleted or replaced ids of the base index).
    public var tombstoneCount: Int { delta.snapshot().tombstones.count }

    func placeInsert(_ id: UInt64, _ v: [Float]) throws {
        try require(v.count == dim, "logged vector has \(v.count) values")
        let hs = replicaHeads(v)
        delta.mutate { s in
            s.remove(id)
            s.tombstones.insert(id) // hides a base entry with this id
            for h in hs { s.lists[h, default: DeltaLayer.List()].append(id, v) }
            s.location[id] = hs
        }
    }

    func placeDelete(_ id: UInt64) {
        delta.mutate { s in
            s.remove(id)
            s.tombstones.insert(id)
        }
    }

    /// Heads for a new vector: the build's candidate search and RNG rule.
    func replicaHeads(_ x: [Float]) -> [Int] {
        x.withUnsafeBufferPointer { xp in
            withNavigation { nav in
                let cand = nav.nearestHeads(
                    xp.baseAddress!, metric: .l2, probe: Navigation.buildProbe(coarse: coarse, heads: heads),
                    k: Navigation.buildCandidates)
                let r = nav.rngSelect(cand, maxReplicas: maxReplicas, epsilon: replicaEpsilon, rngFactor: rngFactor)
                    .map(\.head)
                return r.isEmpty ? [0] : r
            }
        }
    }

    /// Bytes of corrupt delta-log records a repair skipped (0 unless opened with `repair`).
    public var repairedBytes: Int { delta.skippedBytes }
}
