import CKernels
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension HybridIndex {
    /// Builds an index over `vectors` (n x dim, row-major) held in memory; see
    /// `build(source:ids:directory:options:kernels:)`.
    @discardableResult
    public static func build(
        vectors input: [Float], dim: Int, ids: [UInt64]? = nil, directory: String,
        options o: HybridIndexOptions = .init(), kernels: Kernels = .default
    ) throws -> HybridIndex {
        try build(
            source: ArrayVectorSource(values: input, dim: dim), ids: ids, directory: directory, options: o,
            kernels: kernels)
    }

    /// Builds an index over the rows of `source` with external `ids` (default 0..<n) into
    /// `directory`, atomically: files are written to a temporary sibling directory, synced, and
    /// renamed into place (an existing index there is replaced only after the new one is
    /// complete). The input is streamed in blocks and never held in memory whole. The phases
    /// (`IndexBuilder`): sample and coarse training; balanced coarse assignment with a spill of
    /// the input grouped by cluster; heads per coarse cluster; codebooks; replica placement (RNG
    /// rule); list capping; payload writing; checksum verification; heads.bin; the recall calibration
    /// (`RecallCalibration`, one more pass over the input); the rename.
    /// Memory: the sample, one coarse cluster, one block, the centroids, and 8 bytes per
    /// (vector, replica) for the assignment (plus the codes of a code payload); scratch disk:
    /// one copy of the input (f32), deleted before the lists are written.
    @discardableResult
    public static func build(
        source: VectorSource, ids: [UInt64]? = nil, directory: String,
        options o: HybridIndexOptions = .init(), kernels: Kernels = .default
    ) throws -> HybridIndex {
        let b = try IndexBuilder(source: source, ids: ids, directory: directory, options: o, kernels: kernels)
        try b.trainCoarse()
        try b.assignCoarseAndSpill()
        try b.trainHeads()
        try b.trainCodebooks()
        try b.placeReplicas()
        b.capLists()
        try b.writePostings()
        try b.verifyLists()
        try b.writeHeads()
        try b.calibrate()
        try b.commit()
        return try HybridIndex(directory: directory, kernels: kernels)
    }
}

/// The state of one index build, advanced by its phases in order (`HybridIndex.build`).
final class IndexBuilder {
    let source: VectorSource
    let ids: [UInt64]?
    let directory: String
    let o: HybridIndexOptions
    let kernels: Kernels
    let n: Int
    let dim: Int
    /// Target heads H and coarse clusters C.
    let targetHeads: Int
    let coarseCount: Int
    /// PQ sub-quantizers (pq8, pq4) or the binary code width P.
    let codeWidth: Int
    let rotation: SignRotation?
    let blockRows: Int
    let blocks: Int
    /// The temporary directory renamed into place by `commit`.
    let tmp: String
    var committed = false
    let started = DispatchTime.now().uptimeNanoseconds
    var rng: SeededRandom
    let block: UnsafeMutablePointer<Float>
    let block2: UnsafeMutablePointer<Float>

    // phase results
    var sample: [Float] = []
    var coarseCent: [Float] = []
    var lambda: Float = 0
    var spill: ScratchFile?
    var spillOffset: [Int] = []
    var spillCount: [Int] = []
    var coarseSize: [Int] = []
    var headCent: [Float] = []
    var coarseStart: [UInt32] = [0]
    var heads: Int { Int(coarseStart.last!) }
    var pq: ProductQuantizer?
    /// Up to maxReplicas heads per vector (-1 ends the row) and their squared distances.
    var assign: [Int32] = []
    var assignDistance: [Float] = []
    var codes: [UInt8] = []
    /// Lists: entries of head h are lvec[lstart[h] ..< lstart[h] + kept[h]] (vector numbers, ascending).
    var lstart: [Int] = []
    var lvec: [Int32] = []
    var kept: [Int] = []
    var entries = 0
    var layout: PostingListLayout { PostingListLayout(payload: o.payload, dim: dim, codeWidth: codeWidth) }
    var offsets: [Int] = []
    var postingsBytes = 0
    var postings: ScratchFile?
    var crcs: [UInt32] = []
    /// heads.bin as written (the calibration adds its table and writes it again).
    var headsFile: HeadsFile?

    init(source: VectorSource, ids: [UInt64]?, directory: String, options o: HybridIndexOptions, kernels: Kernels)
        throws
    {
        n = source.count
        dim = source.dim
        try require(dim > 0, "vectors must have a positive dimension")
        try require(n >= 1, "cannot build an index over no vectors")
        try require(ids == nil || ids!.count == n, "\(ids?.count ?? 0) ids for \(n) vectors")
        if let ids { try require(Set(ids).count == n, "ids must be distinct") }
        try require(o.headFraction > 0 && o.headFraction <= 1, "headFraction must be in (0, 1], got \(o.headFraction)")
        try require((1...8).contains(o.maxReplicas), "maxReplicas must be in 1...8, got \(o.maxReplicas)")
        try require(o.replicaEpsilon >= 0 && o.replicaEpsilon.isFinite, "replicaEpsilon must be >= 0")
        try require(o.rngFactor >= 1 && o.rngFactor < 255, "rngFactor must be in [1, 255), got \(o.rngFactor)")
        try require(o.blockRows >= 0, "blockRows must be >= 0, got \(o.blockRows)")
        try require(
            (0...100_000).contains(o.calibrationQueries),
            "calibrationQueries must be in 0...100000, got \(o.calibrationQueries)")
        rotation = o.payload == .binary ? SignRotation(dim: dim, seed: o.seed) : nil
        codeWidth = try Self.codeWidth(o, dim: dim, n: n, rotation: rotation)
        self.source = source
        self.ids = ids
        self.directory = directory
        self.o = o
        self.kernels = kernels
        targetHeads = max(1, min(n, Int((Double(n) * o.headFraction).rounded())))
        coarseCount = max(
            1,
            min(targetHeads, o.coarseClusters > 0 ? o.coarseClusters : Int(Double(targetHeads).squareRoot().rounded())))
        blockRows = max(1, min(n, o.blockRows > 0 ? o.blockRows : (8 << 20) / (4 * dim)))
        blocks = (n + blockRows - 1) / blockRows
        tmp = directory + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        rng = SeededRandom(seed: o.seed &+ 99)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        block = .allocate(capacity: blockRows * dim)
        block2 = .allocate(capacity: blockRows * dim)
        say(
            "index: \(n) vectors of \(dim), \(targetHeads) heads under \(coarseCount) coarse clusters, "
                + "\(o.metric), \(o.payload)")
    }

    deinit {
        block.deallocate()
        block2.deallocate()
        if !committed { try? FileManager.default.removeItem(atPath: tmp) }
    }

    /// PQ sub-quantizers M (pq8, pq4) or the binary code width P, validated; 0 for vector payloads.
    static func codeWidth(_ o: HybridIndexOptions, dim: Int, n: Int, rotation: SignRotation?) throws -> Int {
        switch o.payload {
        case .pq8:
            let m =
                o.pqSubquantizers > 0
                ? o.pqSubquantizers : ([8, 4, 2, 1].first { dim % $0 == 0 }.map { dim / $0 } ?? dim)
            try require(m > 0 && dim % m == 0, "PQ sub-quantizers (\(m)) must divide dim \(dim)")
            try require(n >= 256, "PQ payloads need at least 256 vectors to train, got \(n)")
            return m
        case .pq4:
            let m =
                o.pqSubquantizers > 0
                ? o.pqSubquantizers
                : ([2, 4, 8, 16, 32].first { dim % $0 == 0 && dim / $0 <= 256 }.map { dim / $0 } ?? 0)
            try require(
                m > 0 && m <= 256 && dim % m == 0,
                "4-bit PQ needs a sub-quantizer count <= 256 dividing dim \(dim) (set pqSubquantizers)")
            try require(n >= 16, "PQ payloads need at least 16 vectors to train, got \(n)")
            return m
        case .binary: return rotation!.padded
        case .f32, .f16: return 0
        }
    }

    // MARK: helpers

    func say(_ s: String) { o.progress?(s) }
    func elapsed() -> String {
        String(format: "%.1f s", Double(DispatchTime.now().uptimeNanoseconds - started) * 1e-9)
    }
    func pct(_ done: Int, _ total: Int) -> String { "\(done * 100 / max(1, total))%" }
    /// Says `what` at every tenth of the blocks (long inputs only).
    func progress(_ what: String, _ done: Int) {
        if blocks >= 10 && done % (blocks / 10) == 0 { say("index: \(what) \(pct(done, blocks)) (\(elapsed()))") }
    }
    func blockRange(_ b: Int) -> Range<Int> { (b * blockRows)..<min(n, (b + 1) * blockRows) }

    /// Reads rows into dst, refuses non-finite values, normalises for cosine.
    func load(_ r: Range<Int>, _ dst: UnsafeMutablePointer<Float>) throws {
        try source.read(rows: r, into: dst)
        for t in 0..<r.count {
            let row = dst + t * dim
            var s: Float = 0
            for j in 0..<dim {
                guard row[j].isFinite else {
                    throw EngineError.nonFinite("vector \(r.lowerBound + t) has \(row[j]) at component \(j)")
                }
                s += row[j] * row[j]
            }
            if o.metric == .cosine {
                try require(s > 0, "vector \(r.lowerBound + t) is zero: cosine is undefined")
                let inv = 1 / s.squareRoot()
                for j in 0..<dim { row[j] *= inv }
            }
        }
    }

    /// Navigation over the build's f32 head centroids.
    func withNavigation<R>(_ body: (Navigation) throws -> R) rethrows -> R {
        try coarseCent.withUnsafeBufferPointer { cp in
            try headCent.withUnsafeBufferPointer { hp in
                try body(
                    Navigation(
                        coarse: cp.baseAddress!, coarseCount: coarseCount, coarseStart: coarseStart,
                        heads: UnsafeRawPointer(hp.baseAddress!), headType: .f32, dim: dim, kernels: kernels))
            }
        }
    }

    // MARK: phases 1-4: sample, coarse clusters, heads, codebooks

    /// Random rows (read in runs) train the coarse centroids; lambda for the balanced pass.
    func trainCoarse() throws {
        let C = coarseCount
        let sampleN = min(n, max(C * 256, o.payload.isCoded ? 20_000 : 10_000))
        var sampleRows: [Int]
        if sampleN == n {
            sampleRows = Array(0..<n)
        } else {
            var picked = Set<Int>(minimumCapacity: sampleN)
            while picked.count < sampleN { picked.insert(Int(rng.next() % UInt64(n))) }
            sampleRows = picked.sorted()
        }
        sample = [Float](repeating: 0, count: sampleN * dim)
        try sample.withUnsafeMutableBufferPointer { sp in
            var t = 0
            while t < sampleN {
                var e = t + 1
                while e < sampleN && sampleRows[e] == sampleRows[e - 1] + 1 && e - t < blockRows { e += 1 }
                try load(sampleRows[t]..<(sampleRows[t] + e - t), sp.baseAddress! + t * dim)
                t = e
            }
        }
        coarseCent =
            C == 1
            ? [Float](repeating: 0, count: dim)
            : try sample.withUnsafeBufferPointer {
                try KMeans.train(data: $0, dim: dim, k: C, iterations: o.kmeansIterations, seed: o.seed)
            }
        lambda =
            C == 1
            ? 0
            : try sample.withUnsafeBufferPointer {
                try BalancedKMeans.nearestMean($0, dim: dim, centroids: coarseCent)
            } / Float(max(1, n / C))
        say("index: coarse centroids trained on \(sampleN) sampled vectors (\(elapsed()))")
    }

    /// One pass: every vector to a coarse cluster (balanced; blocks and rows in random order, so
    /// input order does not bias sizes), spilled grouped by cluster; centroids become the means.
    func assignCoarseAndSpill() throws {
        let C = coarseCount
        let spill = try ScratchFile(path: tmp + "/spill.tmp")
        self.spill = spill
        spillOffset = [Int](repeating: 0, count: blocks * C)
        spillCount = [Int](repeating: 0, count: blocks * C)
        coarseSize = [Int](repeating: 0, count: C)
        var sums = [Double](repeating: 0, count: C * dim)
        var labels = [Int32](repeating: 0, count: blockRows)
        var blockOrder = Array(0..<blocks)
        blockOrder.shuffle(using: &rng)
        var spilled = 0
        for (done, b) in blockOrder.enumerated() {
            let r = blockRange(b)
            let m = r.count
            try load(r, block)
            var perm = Array(0..<m)
            perm.shuffle(using: &rng)
            for t in 0..<m { (block2 + t * dim).update(from: block + perm[t] * dim, count: dim) }
            try labels.withUnsafeMutableBufferPointer { lp in
                try BalancedKMeans.balancedAssign(
                    block2, count: m, dim: dim, centroids: coarseCent, lambda: lambda, sizes: &coarseSize,
                    labels: lp.baseAddress!)
            }
            // group the block's rows by cluster (counting sort into `block`) and append to the spill
            var pos = [Int](repeating: 0, count: C + 1)
            for t in 0..<m { pos[Int(labels[t]) + 1] += 1 }
            for c in 0..<C {
                spillCount[b * C + c] = pos[c + 1]
                pos[c + 1] += pos[c]
                spillOffset[b * C + c] = spilled + pos[c]
            }
            for t in 0..<m {
                let c = Int(labels[t])
                let src = block2 + t * dim
                (block + pos[c] * dim).update(from: src, count: dim)
                pos[c] += 1
                for j in 0..<dim { sums[c * dim + j] += Double(src[j]) }
            }
            try spill.write(UnsafeRawPointer(block), 4 * m * dim, at: 4 * spilled * dim)
            spilled += m
            progress("coarse assignment", done + 1)
        }
        for c in 0..<C where coarseSize[c] > 0 {
            for j in 0..<dim { coarseCent[c * dim + j] = Float(sums[c * dim + j] / Double(coarseSize[c])) }
        }
        say("index: coarse clusters done, sizes \(coarseSize.min()!)...\(coarseSize.max()!) (\(elapsed()))")
    }

    /// Heads inside each coarse cluster (read back alone from the spill), proportional to its
    /// size, by balanced k-means; rounded to f16 values (the opened index holds heads as f16).
    func trainHeads() throws {
        let C = coarseCount
        for c in 0..<C {
            let m = coarseSize[c]
            if m == 0 {
                coarseStart.append(coarseStart.last!)
                continue
            }
            let h = max(1, min(m, Int((Double(targetHeads) * Double(m) / Double(n)).rounded())))
            var sub = [Float](repeating: 0, count: m * dim)
            try sub.withUnsafeMutableBytes { sp in
                var t = 0
                for b in 0..<blocks where spillCount[b * C + c] > 0 {
                    let k = spillCount[b * C + c]
                    try spill!.read(sp.baseAddress! + 4 * t * dim, 4 * k * dim, at: 4 * spillOffset[b * C + c] * dim)
                    t += k
                }
            }
            if h == m {
                headCent += sub
            } else {
                headCent += try sub.withUnsafeBufferPointer {
                    try BalancedKMeans.balancedKMeans(
                        $0, n: m, dim: dim, k: h, iterations: o.kmeansIterations, seed: o.seed &+ UInt64(c)
                    ).centroids
                }
            }
            coarseStart.append(coarseStart.last! + UInt32(h))
            if C >= 20 && (c + 1) % (C / 10) == 0 { say("index: heads \(c + 1)/\(C) coarse clusters (\(elapsed()))") }
        }
        try spill!.remove()
        spill = nil
        headCent = headCent.map { Float(Float16($0)) }
        say("index: \(heads) heads (\(elapsed()))")
    }

    /// PQ codebooks from a spread subset of the sample: of the vectors (pq8) or of their
    /// residuals to the nearest head (pq4).
    func trainCodebooks() throws {
        defer { sample = [] }
        guard o.payload == .pq8 || o.payload == .pq4 else { return }
        let sampleN = sample.count / dim
        let trainN = min(sampleN, 20_000)
        var train = [Float](repeating: 0, count: trainN * dim)
        for t in 0..<trainN {
            let s = t * sampleN / trainN
            for j in 0..<dim { train[t * dim + j] = sample[s * dim + j] }
        }
        if o.payload == .pq4 {
            let probe = Navigation.buildProbe(coarse: coarseCount, heads: heads)
            withNavigation { nav in
                train.withUnsafeMutableBufferPointer { tp in
                    for t in 0..<trainN {
                        guard let h = nav.nearestHeads(tp.baseAddress! + t * dim, metric: .l2, probe: probe, k: 1).first
                        else { continue }
                        for j in 0..<dim { tp[t * dim + j] -= headCent[Int(h.id) * dim + j] }
                    }
                }
            }
        }
        let bits = o.payload == .pq8 ? 8 : 4
        pq = try train.withUnsafeBufferPointer {
            try ProductQuantizer(
                training: $0, dim: dim, subquantizers: codeWidth, bits: bits, iterations: 10, seed: o.seed)
        }
        say("index: PQ codebooks (\(codeWidth) x \(1 << bits)\(bits == 4 ? ", residuals" : "")) trained (\(elapsed()))")
    }
}
