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
        options o: HybridIndexOptions = .init(), kernels: Kernels
    ) throws -> HybridIndex {
        try build(
            source: ArrayVectorSource(values: input, dim: dim), ids: ids, directory: directory, options: o,
            kernels: kernels)
    }

    /// Builds an index over the rows of `source` with external `ids` (default 0..<n) into
    /// `directory`, atomically: files are written to a temporary sibling directory, synced, and
    /// renamed into place (an existing index there is replaced only after the new one is
    /// complete). The input is streamed in blocks and never held in memory whole:
    /// (1) a random sample trains the coarse centroids; one pass assigns every vector to a coarse
    /// cluster (balanced) and spills it, grouped by cluster, to a scratch file in the temporary
    /// directory; (2) each coarse cluster is read back alone and split into heads by balanced
    /// k-means (headFraction x n heads in all); (3) a second pass places every vector in up to
    /// maxReplicas heads by the RNG rule (and PQ-encodes it); (4) lists are capped, and a third
    /// pass writes the payloads into the page-aligned lists, which are then checksummed (CRC-32C).
    /// Memory: the sample, one coarse cluster, one block, the centroids, and 8 bytes per
    /// (vector, replica) for the assignment (plus the codes of a code payload); scratch disk:
    /// one copy of the input (f32), deleted before the lists are written.
    @discardableResult
    public static func build(
        source: VectorSource, ids: [UInt64]? = nil, directory: String,
        options o: HybridIndexOptions = .init(), kernels: Kernels
    ) throws -> HybridIndex {
        let n = source.count
        let dim = source.dim
        try require(dim > 0, "vectors must have a positive dimension")
        try require(n >= 1, "cannot build an index over no vectors")
        try require(ids == nil || ids!.count == n, "\(ids?.count ?? 0) ids for \(n) vectors")
        if let ids { try require(Set(ids).count == n, "ids must be distinct") }
        try require(o.headFraction > 0 && o.headFraction <= 1, "headFraction must be in (0, 1], got \(o.headFraction)")
        try require((1...8).contains(o.maxReplicas), "maxReplicas must be in 1...8, got \(o.maxReplicas)")
        try require(o.replicaEpsilon >= 0 && o.replicaEpsilon.isFinite, "replicaEpsilon must be >= 0")
        try require(o.rngFactor >= 1 && o.rngFactor < 255, "rngFactor must be in [1, 255), got \(o.rngFactor)")
        // pqM: PQ sub-quantizers (pq8, pq4) or the binary code width P
        let rotation = o.payload == .binary ? SignRotation(dim: dim, seed: o.seed) : nil
        var pqM = 0
        switch o.payload {
        case .pq8:
            pqM =
                o.pqSubquantizers > 0
                ? o.pqSubquantizers : ([8, 4, 2, 1].first { dim % $0 == 0 }.map { dim / $0 } ?? dim)
            try require(pqM > 0 && dim % pqM == 0, "PQ sub-quantizers (\(pqM)) must divide dim \(dim)")
            try require(n >= 256, "PQ payloads need at least 256 vectors to train, got \(n)")
        case .pq4:
            pqM =
                o.pqSubquantizers > 0
                ? o.pqSubquantizers
                : ([2, 4, 8, 16, 32].first { dim % $0 == 0 && dim / $0 <= 256 }.map { dim / $0 } ?? 0)
            try require(
                pqM > 0 && pqM <= 256 && dim % pqM == 0,
                "4-bit PQ needs a sub-quantizer count <= 256 dividing dim \(dim) (set pqSubquantizers)")
            try require(n >= 16, "PQ payloads need at least 16 vectors to train, got \(n)")
        case .binary:
            pqM = rotation!.padded
        case .f32, .f16: break
        }
        let say = o.progress ?? { _ in }
        let start = DispatchTime.now().uptimeNanoseconds
        func elapsed() -> String {
            String(format: "%.1f s", Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
        }
        func pct(_ done: Int, _ total: Int) -> String { "\(done * 100 / max(1, total))%" }
        let H = max(1, min(n, Int((Double(n) * o.headFraction).rounded())))
        let C = max(1, min(H, o.coarseClusters > 0 ? o.coarseClusters : Int(Double(H).squareRoot().rounded())))
        say("index: \(n) vectors of \(dim), \(H) heads under \(C) coarse clusters, \(o.metric), \(o.payload)")

        try require(o.blockRows >= 0, "blockRows must be >= 0, got \(o.blockRows)")
        let blockRows = max(1, min(n, o.blockRows > 0 ? o.blockRows : (8 << 20) / (4 * dim)))
        let blocks = (n + blockRows - 1) / blockRows
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

        let tmp = directory + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        var committed = false
        defer { if !committed { try? FileManager.default.removeItem(atPath: tmp) } }
        var rng = SeededRandom(seed: o.seed &+ 99)
        let block = UnsafeMutablePointer<Float>.allocate(capacity: blockRows * dim)
        let block2 = UnsafeMutablePointer<Float>.allocate(capacity: blockRows * dim)
        defer {
            block.deallocate()
            block2.deallocate()
        }

        // (1) sample (random rows, read in runs), coarse centroids, balanced pass with spill
        let sampleN = min(n, max(C * 256, o.payload.isCoded ? 20_000 : 10_000))
        var sampleRows: [Int]
        if sampleN == n {
            sampleRows = Array(0..<n)
        } else {
            var picked = Set<Int>(minimumCapacity: sampleN)
            while picked.count < sampleN { picked.insert(Int(rng.next() % UInt64(n))) }
            sampleRows = picked.sorted()
        }
        var sample = [Float](repeating: 0, count: sampleN * dim)
        try sample.withUnsafeMutableBufferPointer { sp in
            var t = 0
            while t < sampleN {
                var e = t + 1
                while e < sampleN && sampleRows[e] == sampleRows[e - 1] + 1 && e - t < blockRows { e += 1 }
                try load(sampleRows[t]..<(sampleRows[t] + e - t), sp.baseAddress! + t * dim)
                t = e
            }
        }
        var coarseCent =
            C == 1
            ? [Float](repeating: 0, count: dim)
            : try sample.withUnsafeBufferPointer {
                try KMeans.train(data: $0, dim: dim, k: C, iterations: o.kmeansIterations, seed: o.seed)
            }
        let lambda =
            C == 1
            ? 0
            : try sample.withUnsafeBufferPointer { try nearestMean($0, dim: dim, centroids: coarseCent) }
                / Float(max(1, n / C))
        say("index: coarse centroids trained on \(sampleN) sampled vectors (\(elapsed()))")
        let spill = try ScratchFile(path: tmp + "/spill.tmp")
        var spillOffset = [Int](repeating: 0, count: blocks * C)
        var spillCount = [Int](repeating: 0, count: blocks * C)
        var csize = [Int](repeating: 0, count: C)
        var sums = [Double](repeating: 0, count: C * dim)
        var labels = [Int32](repeating: 0, count: blockRows)
        var blockOrder = Array(0..<blocks)
        blockOrder.shuffle(using: &rng) // balanced assignment favours early rows: no input-order bias
        var spilled = 0
        for (done, b) in blockOrder.enumerated() {
            let r = blockRange(b)
            let m = r.count
            try load(r, block)
            var perm = Array(0..<m)
            perm.shuffle(using: &rng)
            for t in 0..<m { (block2 + t * dim).update(from: block + perm[t] * dim, count: dim) }
            try labels.withUnsafeMutableBufferPointer { lp in
                try balancedAssign(
                    block2, count: m, dim: dim, centroids: coarseCent, lambda: lambda, sizes: &csize,
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
            if blocks >= 10 && (done + 1) % (blocks / 10) == 0 {
                say("index: coarse assignment \(pct(done + 1, blocks)) (\(elapsed()))")
            }
        }
        for c in 0..<C where csize[c] > 0 {
            for j in 0..<dim { coarseCent[c * dim + j] = Float(sums[c * dim + j] / Double(csize[c])) }
        }
        sums = []
        say("index: coarse clusters done, sizes \(csize.min()!)...\(csize.max()!) (\(elapsed()))")

        // (2) heads inside each coarse cluster, proportional to its size
        var headCent: [Float] = []
        var coarseStart: [UInt32] = [0]
        for c in 0..<C {
            let m = csize[c]
            if m == 0 {
                coarseStart.append(coarseStart.last!)
                continue
            }
            let h = max(1, min(m, Int((Double(H) * Double(m) / Double(n)).rounded())))
            var sub = [Float](repeating: 0, count: m * dim)
            try sub.withUnsafeMutableBytes { sp in
                var t = 0
                for b in 0..<blocks where spillCount[b * C + c] > 0 {
                    let k = spillCount[b * C + c]
                    try spill.read(sp.baseAddress! + 4 * t * dim, 4 * k * dim, at: 4 * spillOffset[b * C + c] * dim)
                    t += k
                }
            }
            if h == m {
                headCent += sub
            } else {
                headCent += try sub.withUnsafeBufferPointer {
                    try balancedKMeans(
                        $0, n: m, dim: dim, k: h, iterations: o.kmeansIterations, seed: o.seed &+ UInt64(c)
                    ).centroids
                }
            }
            coarseStart.append(coarseStart.last! + UInt32(h))
            if C >= 20 && (c + 1) % (C / 10) == 0 { say("index: heads \(c + 1)/\(C) coarse clusters (\(elapsed()))") }
        }
        try spill.remove()
        headCent = headCent.map { Float(Float16($0)) } // f16 values: the opened index holds heads as f16
        let heads = Int(coarseStart.last!)
        say("index: \(heads) heads (\(elapsed()))")

        // PQ codebooks from a spread subset of the sample: of the vectors (pq8) or of their
        // residuals to the nearest head (pq4); the rotation of binary codes
        var pq: ProductQuantizer? = nil
        if o.payload == .pq8 || o.payload == .pq4 {
            let trainN = min(sampleN, 20_000)
            var train = [Float](repeating: 0, count: trainN * dim)
            for t in 0..<trainN {
                let s = t * sampleN / trainN
                for j in 0..<dim { train[t * dim + j] = sample[s * dim + j] }
            }
            if o.payload == .pq4 {
                coarseCent.withUnsafeBufferPointer { cp in
                    headCent.withUnsafeBufferPointer { hp in
                        train.withUnsafeMutableBufferPointer { tp in
                            let nav = Navigation(
                                coarse: cp.baseAddress!, coarseCount: C, coarseStart: coarseStart,
                                heads: UnsafeRawPointer(hp.baseAddress!), headType: .f32, dim: dim, kernels: kernels)
                            for t in 0..<trainN {
                                guard
                                    let h = nav.nearestHeads(
                                        tp.baseAddress! + t * dim, metric: .l2,
                                        probe: Navigation.buildProbe(coarse: C, heads: heads), k: 1
                                    ).first
                                else { continue }
                                for j in 0..<dim { tp[t * dim + j] -= hp[Int(h.id) * dim + j] }
                            }
                        }
                    }
                }
            }
            let bits = o.payload == .pq8 ? 8 : 4
            pq = try train.withUnsafeBufferPointer {
                try ProductQuantizer(
                    training: $0, dim: dim, subquantizers: pqM, bits: bits, iterations: 10, seed: o.seed)
            }
            say("index: PQ codebooks (\(pqM) x \(1 << bits)\(bits == 4 ? ", residuals" : "")) trained (\(elapsed()))")
        }
        sample = []

        // (3) RNG-rule replication (heads of the vector's nearest coarse clusters, the 32 nearest
        // of them by squared L2); PQ codes and vectors.bin rows in the same pass.
        let R = o.maxReplicas
        let probe = Navigation.buildProbe(coarse: C, heads: heads)
        var assign = [Int32](repeating: -1, count: n * R)
        var adist = [Float](repeating: 0, count: n * R)
        var codes = [UInt8](repeating: 0, count: o.payload == .pq8 ? n * pqM : 0)
        let vw = o.payload.isCoded ? try AtomicFileWriter(path: tmp + "/vectors.bin") : nil
        let threads = max(1, kernels.threads)
        var rowBytes = [UInt8]()
        for b in 0..<blocks {
            let r = blockRange(b)
            let m = r.count
            try load(r, block)
            let chunk = 256
            let chunks = (m + chunk - 1) / chunk
            var failed = false
            coarseCent.withUnsafeBufferPointer { cp in
                headCent.withUnsafeBufferPointer { hp in
                    assign.withUnsafeMutableBufferPointer { ap in
                        adist.withUnsafeMutableBufferPointer { ad in
                            let nav = Navigation(
                                coarse: cp.baseAddress!, coarseCount: C, coarseStart: coarseStart,
                                heads: UnsafeRawPointer(hp.baseAddress!), headType: .f32, dim: dim, kernels: kernels)
                            Threads.parallelFor(chunks, threads: threads) { ch in
                                for t in (ch * chunk)..<min(m, (ch + 1) * chunk) {
                                    let i = r.lowerBound + t
                                    let cand = nav.nearestHeads(
                                        block + t * dim, metric: .l2, probe: probe, k: Navigation.buildCandidates)
                                    let chosen = nav.rngSelect(
                                        cand, maxReplicas: R, epsilon: o.replicaEpsilon, rngFactor: o.rngFactor)
                                    if chosen.isEmpty {
                                        failed = true
                                        continue
                                    }
                                    for (s, c) in chosen.enumerated() {
                                        ap[i * R + s] = Int32(c.head)
                                        ad[i * R + s] = c.dist
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if failed { throw EngineError.invalidArgument("a vector found no candidate head (internal error)") }
            if let pq, o.payload == .pq8 {
                let parts = Threads.ranges(m, parts: threads)
                var err: Error?
                codes.withUnsafeMutableBufferPointer { cp in
                    Threads.parallelFor(parts.count, threads: threads) { t in
                        let pr = parts[t]
                        if pr.isEmpty { return }
                        do {
                            let c = try pq.encode(
                                UnsafeBufferPointer(start: block + pr.lowerBound * dim, count: pr.count * dim),
                                kernels: kernels)
                            for i in 0..<c.count { cp[(r.lowerBound + pr.lowerBound) * pqM + i] = c[i] }
                        } catch { err = error }
                    }
                }
                if let err { throw err }
            }
            if let vw {
                rowBytes.removeAll(keepingCapacity: true)
                for t in 0..<m {
                    let s = rowBytes.count
                    UnsafeRawBufferPointer(start: block + t * dim, count: 4 * dim).withMemoryRebound(to: UInt8.self) {
                        rowBytes.append(contentsOf: $0)
                    }
                    let crc = rowBytes.withUnsafeBytes { kernels.crc32c(UnsafeRawBufferPointer(rebasing: $0[s...])) }
                    withUnsafeBytes(of: crc.littleEndian) { rowBytes.append(contentsOf: $0) }
                }
                try vw.write(rowBytes)
            }
            if blocks >= 10 && (b + 1) % (blocks / 10) == 0 {
                say("index: replicas \(pct(b + 1, blocks)) (\(elapsed()))")
            }
        }
        try vw?.commit()
        say("index: replicas assigned\(pq != nil ? ", vectors encoded" : "") (\(elapsed()))")

        // (4) lists (entries in vector order): primaries always kept; replicas nearest to the head
        // first, up to the cap.
        var lstart = [Int](repeating: 0, count: heads + 1)
        for a in assign where a >= 0 { lstart[Int(a) + 1] += 1 }
        for h in 0..<heads { lstart[h + 1] += lstart[h] }
        let total = lstart[heads]
        var lvec = [Int32](repeating: 0, count: total)
        var ldist = [Float](repeating: 0, count: total)
        var lprim = [Bool](repeating: false, count: total)
        var fill = Array(lstart.dropLast())
        for i in 0..<n {
            for t in 0..<R where assign[i * R + t] >= 0 {
                let h = Int(assign[i * R + t])
                let e = fill[h]
                lvec[e] = Int32(i)
                ldist[e] = adist[i * R + t]
                lprim[e] = t == 0
                fill[h] += 1
            }
        }
        adist = []
        let cap = o.postingCap > 0 ? o.postingCap : max(64, 4 * total / heads)
        var kept = (0..<heads).map { lstart[$0 + 1] - lstart[$0] }
        var dropped = 0
        for h in 0..<heads where kept[h] > cap {
            let a = lstart[h]
            var order = Array(a..<lstart[h + 1])
            order.sort { (lprim[$0] ? 0 : 1, ldist[$0]) < (lprim[$1] ? 0 : 1, ldist[$1]) }
            let keep = max(cap, order.prefix { lprim[$0] }.count)
            let chosen = order.prefix(keep).map { lvec[$0] }.sorted()
            for (t, v) in chosen.enumerated() { lvec[a + t] = v }
            dropped += kept[h] - keep
            kept[h] = keep
        }
        ldist = []
        lprim = []
        let entries = kept.reduce(0, +)
        say(
            "index: \(entries) entries (\(String(format: "%.2f", Double(entries) / Double(n))) per vector), cap \(cap), \(dropped) replicas dropped"
        )

        // (5) postings.bin with pwrite (no mapping: the build's memory stays its own): per-entry
        // codes of residuals (pq4, binary) computed in a pass over the input; ids, rows and codes
        // from memory list by list; vector payloads (f32, f16) streamed from the input in runs;
        // then per-list CRC-32C read back.
        let listBytes = { (h: Int) in HybridIndex.listBytes(o.payload, count: kept[h], dim: dim, m: pqM) }
        var offsets = [Int](repeating: 0, count: heads)
        var pos = 0
        for h in 0..<heads {
            offsets[h] = pos
            pos += (listBytes(h) + page - 1) / page * page
        }
        let out = try ScratchFile(path: tmp + "/postings.bin", reserve: pos)
        var staging = [UInt8]()
        /// Streams the input once more; for each block, the kept entries of its vectors sorted
        /// by entry number (lists are numbered in order, so one list's entries form runs).
        func forEachBlockEntries(_ what: String, _ body: ([(entry: Int32, head: Int32, row: Int32)]) throws -> Void)
            throws
        {
            var cursor = Array(lstart.dropLast())
            var writes: [(entry: Int32, head: Int32, row: Int32)] = []
            for b in 0..<blocks {
                let r = blockRange(b)
                try load(r, block)
                writes.removeAll(keepingCapacity: true)
                for i in r {
                    for s in 0..<R {
                        let a = assign[i * R + s]
                        if a < 0 { break }
                        let h = Int(a)
                        let e = cursor[h]
                        guard e < lstart[h] + kept[h], Int(lvec[e]) == i else { continue } // a dropped replica
                        cursor[h] += 1
                        writes.append((Int32(e), Int32(h), Int32(i - r.lowerBound)))
                    }
                }
                writes.sort { $0.entry < $1.entry }
                try body(writes)
                if blocks >= 10 && (b + 1) % (blocks / 10) == 0 {
                    say("index: \(what) \(pct(b + 1, blocks)) (\(elapsed()))")
                }
            }
        }
        // pq4: M codes (one per byte here) per entry; binary: ||r|| then P / 8 bytes of signs
        let codeBytes = o.payload == .pq4 ? pqM : (o.payload == .binary ? 4 + pqM / 8 : 0)
        var entryCodes = [UInt8](repeating: 0, count: codeBytes > 0 ? lstart[heads] * codeBytes : 0)
        if codeBytes > 0 {
            try forEachBlockEntries("residual codes") { writes in
                let parts = Threads.ranges(writes.count, parts: threads)
                var err: Error?
                headCent.withUnsafeBufferPointer { hp in
                    entryCodes.withUnsafeMutableBytes { ec in
                        Threads.parallelFor(parts.count, threads: threads) { t in
                            for c0 in stride(from: parts[t].lowerBound, to: parts[t].upperBound, by: 1024) {
                                let part = writes[c0..<min(parts[t].upperBound, c0 + 1024)]
                                // residuals x - head of these entries (1,024 at a time: bounded scratch)
                                var r = [Float](repeating: 0, count: part.count * dim)
                                for (i, x) in part.enumerated() {
                                    let src = block + Int(x.row) * dim
                                    let c = hp.baseAddress! + Int(x.head) * dim
                                    for j in 0..<dim { r[i * dim + j] = src[j] - c[j] }
                                }
                                if let pq {
                                    do {
                                        let cs = try r.withUnsafeBufferPointer { try pq.encode($0, kernels: kernels) }
                                        for (i, x) in part.enumerated() {
                                            cs.withUnsafeBytes {
                                                (ec.baseAddress! + Int(x.entry) * codeBytes).copyMemory(
                                                    from: $0.baseAddress! + i * pqM, byteCount: pqM)
                                            }
                                        }
                                    } catch { err = error }
                                } else if let rotation {
                                    var z = [Float](repeating: 0, count: rotation.padded)
                                    var words = [UInt64](repeating: 0, count: rotation.words)
                                    for (i, x) in part.enumerated() {
                                        let dst = ec.baseAddress! + Int(x.entry) * codeBytes
                                        var s: Float = 0
                                        for j in 0..<dim { s += r[i * dim + j] * r[i * dim + j] }
                                        dst.storeBytes(of: s.squareRoot().bitPattern.littleEndian, as: UInt32.self)
                                        r.withUnsafeBufferPointer { rp in
                                            z.withUnsafeMutableBufferPointer { zp in
                                                rotation.rotate(rp.baseAddress! + i * dim, into: zp.baseAddress!)
                                                words.withUnsafeMutableBufferPointer {
                                                    rotation.signBits(zp.baseAddress!, into: $0.baseAddress!)
                                                }
                                            }
                                        }
                                        for (w, v) in words.enumerated() {
                                            dst.storeBytes(of: v.littleEndian, toByteOffset: 4 + 8 * w, as: UInt64.self)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                if let err { throw err }
            }
        }
        for h in 0..<heads where kept[h] > 0 {
            let k = kept[h]
            let len = o.payload.isCoded ? listBytes(h) : 8 * k
            staging.removeAll(keepingCapacity: true)
            staging.append(contentsOf: repeatElement(0, count: len))
            staging.withUnsafeMutableBytes { r in
                for t in 0..<k {
                    let v = Int(lvec[lstart[h] + t])
                    let e = lstart[h] + t
                    r.storeBytes(of: (ids?[v] ?? UInt64(v)).littleEndian, toByteOffset: 8 * t, as: UInt64.self)
                    if o.payload.isCoded {
                        r.storeBytes(of: UInt32(v).littleEndian, toByteOffset: 8 * k + 4 * t, as: UInt32.self)
                    }
                    if o.payload == .pq8 {
                        for j in 0..<pqM {
                            r.storeBytes(of: codes[v * pqM + j], toByteOffset: 12 * k + t * pqM + j, as: UInt8.self)
                        }
                    } else if o.payload == .binary {
                        // entry code = norm (4 bytes) then signs: norms and signs are separate arrays in the list
                        entryCodes.withUnsafeBytes { ec in
                            (r.baseAddress! + 12 * k + 4 * t).copyMemory(
                                from: ec.baseAddress! + e * codeBytes, byteCount: 4)
                            (r.baseAddress! + 16 * k + t * (pqM / 8)).copyMemory(
                                from: ec.baseAddress! + e * codeBytes + 4, byteCount: pqM / 8)
                        }
                    }
                }
                if o.payload == .pq4 {
                    // codes are < 16 by construction; packed in place after the ids and rows
                    _ = entryCodes.withUnsafeBufferPointer {
                        ck_pq4_pack(
                            $0.baseAddress! + lstart[h] * pqM, k, pqM,
                            (r.baseAddress! + 12 * k).assumingMemoryBound(to: UInt8.self))
                    }
                }
            }
            try staging.withUnsafeBytes { try out.write($0.baseAddress!, len, at: offsets[h]) }
        }
        codes = []
        entryCodes = []
        if !o.payload.isCoded {
            let pb = o.payload == .f32 ? 4 * dim : 2 * dim
            try forEachBlockEntries("writing lists") { writes in
                var w = 0
                while w < writes.count {
                    var z = w + 1
                    while z < writes.count && writes[z].head == writes[w].head
                        && writes[z].entry == writes[z - 1].entry + 1
                    { z += 1 }
                    staging.removeAll(keepingCapacity: true)
                    staging.append(contentsOf: repeatElement(0, count: (z - w) * pb))
                    staging.withUnsafeMutableBytes { dst in
                        for (t, x) in writes[w..<z].enumerated() {
                            let src = block + Int(x.row) * dim
                            if o.payload == .f32 {
                                for j in 0..<dim {
                                    dst.storeBytes(
                                        of: src[j].bitPattern.littleEndian, toByteOffset: t * pb + 4 * j,
                                        as: UInt32.self)
                                }
                            } else {
                                for j in 0..<dim {
                                    dst.storeBytes(
                                        of: Float16(src[j]).bitPattern.littleEndian, toByteOffset: t * pb + 2 * j,
                                        as: UInt16.self)
                                }
                            }
                        }
                    }
                    let h = Int(writes[w].head)
                    try staging.withUnsafeBytes {
                        try out.write(
                            $0.baseAddress!, (z - w) * pb,
                            at: offsets[h] + 8 * kept[h] + (Int(writes[w].entry) - lstart[h]) * pb)
                    }
                    w = z
                }
            }
        }
        assign = []
        lvec = []
        var crcs = [UInt32](repeating: 0, count: heads)
        staging = [UInt8](repeating: 0, count: (0..<heads).map(listBytes).max() ?? 0)
        try staging.withUnsafeMutableBytes { buf in
            for h in 0..<heads where kept[h] > 0 {
                try out.read(buf.baseAddress!, listBytes(h), at: offsets[h])
                crcs[h] = kernels.crc32c(UnsafeRawBufferPointer(start: buf.baseAddress!, count: listBytes(h)))
            }
        }
        try out.sync()

        // Heads that ended with an empty list (balanced k-means placed a centroid where no vector
        // has it nearest: ~5% on i.i.d. clusters) are left out of the navigation: a probe spent
        // on them reads nothing.
        let live = (0..<heads).filter { kept[$0] > 0 }
        var liveStart: [Int] = [0]
        for c in 0..<C {
            liveStart.append(
                liveStart[c] + (Int(coarseStart[c])..<Int(coarseStart[c + 1])).filter { kept[$0] > 0 }.count)
        }
        if live.count < heads { say("index: \(heads - live.count) empty heads dropped, \(live.count) remain") }
        var hb = magic
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { hb.append(contentsOf: $0) } }
        func u64(_ v: Int) { withUnsafeBytes(of: UInt64(v).littleEndian) { hb.append(contentsOf: $0) } }
        u32(Int(version))
        u32(dim)
        u32([Metric.l2, .innerProduct, .cosine].firstIndex(of: o.metric)!)
        u32(o.payload.code)
        u64(n)
        u32(live.count)
        u32(C)
        u64(pos)
        u64(entries)
        u32(o.maxReplicas | Int((o.rngFactor * 256).rounded()) << 16)
        u32(Int(o.replicaEpsilon.bitPattern))
        for v in coarseCent { u32(Int(v.bitPattern)) }
        for s in liveStart { u32(s) }
        for h in live { for j in 0..<dim { u32(Int(headCent[h * dim + j].bitPattern)) } }
        for h in live {
            u64(offsets[h])
            u32(listBytes(h))
            u32(kept[h])
            u32(Int(crcs[h]))
            u32(0)
        }
        if let pq {
            u32(pqM)
            for v in pq.centroids { u32(Int(v.bitPattern)) }
        }
        if let rotation {
            u32(rotation.padded)
            for v in rotation.signs { u32(Int(v.bitPattern)) }
        }
        let crc = hb.withUnsafeBytes { kernels.crc32c($0) }
        u32(Int(crc))
        let hw = try AtomicFileWriter(path: tmp + "/heads.bin")
        try hw.write(hb)
        try hw.commit()
        // swap into place
        var old: String? = nil
        if FileManager.default.fileExists(atPath: directory) {
            guard
                FileManager.default.fileExists(atPath: directory + "/heads.bin")
                    || (try? FileManager.default.contentsOfDirectory(atPath: directory).isEmpty) == true
            else {
                throw EngineError.invalidArgument("\(directory) exists and is not an index: refusing to replace it")
            }
            old = directory + ".old-\(getpid())"
            guard rename(directory, old!) == 0 else {
                throw EngineError.io("cannot move the previous index aside: \(String(cString: strerror(errno)))")
            }
        }
        guard rename(tmp, directory) == 0 else {
            let e = String(cString: strerror(errno))
            if let old { rename(old, directory) }
            throw EngineError.io("cannot rename \(tmp) to \(directory): \(e)")
        }
        committed = true
        if let old { try? FileManager.default.removeItem(atPath: old) }
        say("index: written to \(directory): \(pos) bytes of posting lists (\(elapsed()))")
        return try HybridIndex(directory: directory, kernels: kernels)
    }

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
                    ck_sgemm(
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

/// A file read and written at offsets: the build's spill (unlinked by `remove()` or deinit) and
/// postings.bin (`reserve` allocates its size up front, so a full disk fails here; `sync()`
/// flushes and closes it, keeping the file).
final class ScratchFile {
    let path: String
    var fd: Int32
    var keep = false
    init(path: String, reserve: Int = 0) throws {
        self.path = path
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw EngineError.io("cannot create \(path): \(String(cString: strerror(errno)))") }
        if reserve > 0 {
            let e = posix_fallocate(fd, 0, off_t(reserve))
            guard e == 0 else {
                try? remove()
                throw EngineError.io("cannot reserve \(reserve) bytes for \(path): \(String(cString: strerror(e)))")
            }
        }
    }
    deinit { try? remove() }
    func write(_ p: UnsafeRawPointer, _ n: Int, at offset: Int) throws {
        var done = 0
        while done < n {
            let r = pwrite(fd, p + done, n - done, off_t(offset + done))
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { throw EngineError.io("write to \(path) failed: \(String(cString: strerror(errno)))") }
            done += r
        }
    }
    func read(_ p: UnsafeMutableRawPointer, _ n: Int, at offset: Int) throws {
        try preadFully(fd, p, n, at: offset, path: path)
    }
    func sync() throws {
        guard fsync(fd) == 0 else {
            throw EngineError.io("fsync of \(path) failed: \(String(cString: strerror(errno)))")
        }
        close(fd)
        fd = -1
        keep = true
    }
    func remove() throws {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if !keep {
            unlink(path)
            keep = true
        }
    }
}
