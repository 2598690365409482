import CKernels
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension HybridIndex {
    /// Builds an index over `vectors` (n x dim, row-major) with external `ids` (default 0..<n)
    /// into `directory`, atomically: files are written to a temporary sibling directory, synced,
    /// and renamed into place (an existing index there is replaced only after the new one is
    /// complete). Steps: (1) coarse balanced k-means, (2) per coarse cluster balanced k-means
    /// into heads (headFraction x n in all), (3) every vector to up to maxReplicas heads by the
    /// RNG rule among its nearest candidates, (4) lists capped, written page-aligned with CRC-32C.
    @discardableResult
    public static func build(vectors input: [Float], dim: Int, ids: [UInt64]? = nil, directory: String,
                             options o: HybridIndexOptions = .init(), kernels: Kernels) throws -> HybridIndex {
        try require(dim > 0 && input.count % dim == 0, "\(input.count) values are not whole \(dim)-d vectors")
        let n = input.count / dim
        try require(n >= 1, "cannot build an index over no vectors")
        try require(ids == nil || ids!.count == n, "\(ids?.count ?? 0) ids for \(n) vectors")
        if let ids { try require(Set(ids).count == n, "ids must be distinct") }
        try require(o.headFraction > 0 && o.headFraction <= 1, "headFraction must be in (0, 1], got \(o.headFraction)")
        try require((1...8).contains(o.maxReplicas), "maxReplicas must be in 1...8, got \(o.maxReplicas)")
        try require(o.replicaEpsilon >= 0 && o.replicaEpsilon.isFinite, "replicaEpsilon must be >= 0")
        try require(o.rngFactor >= 1 && o.rngFactor < 255, "rngFactor must be in [1, 255), got \(o.rngFactor)")
        try input.withUnsafeBufferPointer { try requireFinite($0, "vectors") }
        let say = o.progress ?? { _ in }
        let start = DispatchTime.now().uptimeNanoseconds
        func elapsed() -> String { String(format: "%.1f s", Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9) }

        var data = input
        if o.metric == .cosine {
            for i in 0..<n {
                var s: Float = 0
                for j in 0..<dim { s += data[i * dim + j] * data[i * dim + j] }
                try require(s > 0, "vector \(i) is zero: cosine is undefined")
                let inv = 1 / s.squareRoot()
                for j in 0..<dim { data[i * dim + j] *= inv }
            }
        }
        let H = max(1, min(n, Int((Double(n) * o.headFraction).rounded())))
        let C = max(1, min(H, o.coarseClusters > 0 ? o.coarseClusters : Int(Double(H).squareRoot().rounded())))
        say("index: \(n) vectors of \(dim), \(H) heads under \(C) coarse clusters, \(o.metric), \(o.payload)")

        // (1) coarse level
        let (coarseCent, coarseLabel) = try data.withUnsafeBufferPointer {
            try balancedKMeans($0, n: n, dim: dim, k: C, iterations: o.kmeansIterations, seed: o.seed)
        }
        var members = [[Int]](repeating: [], count: C)
        for i in 0..<n { members[Int(coarseLabel[i])].append(i) }
        say("index: coarse clusters done (\(elapsed()))")

        // (2) heads inside each coarse cluster, proportional to its size
        var headCent: [Float] = [], coarseStart: [UInt32] = [0]
        for c in 0..<C {
            let m = members[c].count
            if m == 0 { coarseStart.append(coarseStart.last!); continue }
            let h = max(1, min(m, Int((Double(H) * Double(m) / Double(n)).rounded())))
            var sub = [Float](repeating: 0, count: m * dim)
            for (r, i) in members[c].enumerated() { for j in 0..<dim { sub[r * dim + j] = data[i * dim + j] } }
            if h == m {
                headCent += sub
            } else {
                headCent += try sub.withUnsafeBufferPointer {
                    try balancedKMeans($0, n: m, dim: dim, k: h, iterations: o.kmeansIterations, seed: o.seed &+ UInt64(c)).centroids
                }
            }
            coarseStart.append(coarseStart.last! + UInt32(h))
            if C >= 20 && (c + 1) % (C / 10) == 0 { say("index: heads \(c + 1)/\(C) coarse clusters (\(elapsed()))") }
        }
        let heads = Int(coarseStart.last!)
        say("index: \(heads) heads (\(elapsed()))")

        // (3) RNG-rule replication. Candidates: heads of the vector's 4 nearest coarse clusters
        // (8 for tiny indexes), the 32 nearest of them by squared L2.
        let R = o.maxReplicas, probe = Navigation.buildProbe(coarse: C, heads: heads)
        var assign = [Int32](repeating: -1, count: n * R), adist = [Float](repeating: 0, count: n * R)
        let threads = max(1, kernels.threads)
        let chunk = 1024
        let chunks = (n + chunk - 1) / chunk
        try data.withUnsafeBufferPointer { dp in try coarseCent.withUnsafeBufferPointer { cp in try headCent.withUnsafeBufferPointer { hp in
            try assign.withUnsafeMutableBufferPointer { ap in try adist.withUnsafeMutableBufferPointer { ad in
                let nav = Navigation(coarse: cp.baseAddress!, coarseCount: C, coarseStart: coarseStart, heads: hp.baseAddress!, dim: dim, kernels: kernels)
                var failed = false
                Threads.parallelFor(chunks, threads: threads) { ch in
                    for i in (ch * chunk)..<min(n, (ch + 1) * chunk) {
                        let cand = nav.nearestHeads(dp.baseAddress! + i * dim, metric: .l2, probe: probe, k: Navigation.buildCandidates)
                        let chosen = nav.rngSelect(cand, maxReplicas: R, epsilon: o.replicaEpsilon, rngFactor: o.rngFactor)
                        if chosen.isEmpty { failed = true; continue }
                        for (t, c) in chosen.enumerated() { ap[i * R + t] = Int32(c.head); ad[i * R + t] = c.dist }
                    }
                }
                if failed { throw EngineError.invalidArgument("a vector found no candidate head (internal error)") }
            } }
        } } }
        say("index: replicas assigned (\(elapsed()))")

        // (4) lists: primaries always kept; replicas nearest to the head first, up to the cap.
        var lists = [[(dist: Float, vec: Int, primary: Bool)]](repeating: [], count: heads)
        for i in 0..<n { for t in 0..<R where assign[i * R + t] >= 0 { lists[Int(assign[i * R + t])].append((adist[i * R + t], i, t == 0)) } }
        let total = lists.reduce(0) { $0 + $1.count }
        let cap = o.postingCap > 0 ? o.postingCap : max(64, 4 * total / heads)
        var dropped = 0
        for h in 0..<heads where lists[h].count > cap {
            lists[h].sort { ($0.primary ? 0 : 1, $0.dist) < ($1.primary ? 0 : 1, $1.dist) }
            let keep = max(cap, lists[h].prefix { $0.primary }.count)
            dropped += lists[h].count - keep
            lists[h].removeLast(lists[h].count - keep)
        }
        let entries = lists.reduce(0) { $0 + $1.count }
        say("index: \(entries) entries (\(String(format: "%.2f", Double(entries) / Double(n))) per vector), cap \(cap), \(dropped) replicas dropped")

        // write into a temporary directory, then rename into place
        let tmp = directory + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        var committed = false
        defer { if !committed { try? FileManager.default.removeItem(atPath: tmp) } }
        // PQ payload: codebooks on a sample, codes for every vector, full vectors in vectors.bin
        var pq: ProductQuantizer? = nil
        var codes: [UInt8] = []
        var pqM = 0
        if o.payload == .pq8 {
            pqM = o.pqSubquantizers > 0 ? o.pqSubquantizers : ([8, 4, 2, 1].first { dim % $0 == 0 }.map { dim / $0 } ?? dim)
            try require(pqM > 0 && dim % pqM == 0, "PQ sub-quantizers (\(pqM)) must divide dim \(dim)")
            try require(n >= 256, "PQ payloads need at least 256 vectors to train, got \(n)")
            let sampleN = min(n, 20_000)
            var rng = SeededRandom(seed: o.seed &+ 77)
            var sample = [Float](repeating: 0, count: sampleN * dim)
            for r in 0..<sampleN { let i = sampleN == n ? r : Int(rng.next() % UInt64(n)); for j in 0..<dim { sample[r * dim + j] = data[i * dim + j] } }
            let trained = try sample.withUnsafeBufferPointer { try ProductQuantizer(training: $0, dim: dim, subquantizers: pqM, bits: 8, iterations: 10, seed: o.seed) }
            pq = trained
            say("index: PQ codebooks (\(pqM) x 256) trained (\(elapsed()))")
            codes = [UInt8](repeating: 0, count: n * pqM)
            let parts = max(1, kernels.threads)
            let ranges = Threads.ranges(n, parts: parts)
            try data.withUnsafeBufferPointer { dp in try codes.withUnsafeMutableBufferPointer { cp in
                var failed: Error?
                Threads.parallelFor(parts, threads: parts) { t in
                    let r = ranges[t]
                    if r.isEmpty { return }
                    do {
                        let c = try trained.encode(UnsafeBufferPointer(rebasing: dp[(r.lowerBound * dim)..<(r.upperBound * dim)]), kernels: kernels)
                        for i in 0..<c.count { cp[r.lowerBound * pqM + i] = c[i] }
                    } catch { failed = error }
                }
                if let failed { throw failed }
            } }
            say("index: \(n) vectors encoded (\(elapsed()))")
            let vw = try AtomicFileWriter(path: tmp + "/vectors.bin")
            var chunkBuf: [UInt8] = []
            for i in 0..<n {
                let start = chunkBuf.count
                for j in 0..<dim { withUnsafeBytes(of: data[i * dim + j].bitPattern.littleEndian) { chunkBuf.append(contentsOf: $0) } }
                let crc = chunkBuf.withUnsafeBytes { kernels.crc32c(UnsafeRawBufferPointer(rebasing: $0[start...])) }
                withUnsafeBytes(of: crc.littleEndian) { chunkBuf.append(contentsOf: $0) }
                if chunkBuf.count > 1 << 22 { try vw.write(chunkBuf); chunkBuf.removeAll(keepingCapacity: true) }
            }
            try vw.write(chunkBuf)
            try vw.commit()
        }
        let pw = try AtomicFileWriter(path: tmp + "/postings.bin")
        var offsets: [UInt64] = [], bytes: [UInt32] = [], counts: [UInt32] = [], crcs: [UInt32] = []
        var pos = 0
        let eb = HybridIndex.entryBytes(o.payload, dim: dim, m: pqM)
        for h in 0..<heads {
            let l = lists[h]
            var b = [UInt8](repeating: 0, count: l.count * eb)
            b.withUnsafeMutableBytes { r in
                for (t, e) in l.enumerated() {
                    r.storeBytes(of: (ids?[e.vec] ?? UInt64(e.vec)).littleEndian, toByteOffset: 8 * t, as: UInt64.self)
                    switch o.payload {
                    case .f32:
                        let base = 8 * l.count + t * dim * 4
                        for j in 0..<dim { r.storeBytes(of: data[e.vec * dim + j].bitPattern.littleEndian, toByteOffset: base + 4 * j, as: UInt32.self) }
                    case .f16:
                        let base = 8 * l.count + t * dim * 2
                        for j in 0..<dim { r.storeBytes(of: Float16(data[e.vec * dim + j]).bitPattern.littleEndian, toByteOffset: base + 2 * j, as: UInt16.self) }
                    case .pq8:
                        r.storeBytes(of: UInt32(e.vec).littleEndian, toByteOffset: 8 * l.count + 4 * t, as: UInt32.self)
                        let base = 12 * l.count + t * pqM
                        for j in 0..<pqM { r.storeBytes(of: codes[e.vec * pqM + j], toByteOffset: base + j, as: UInt8.self) }
                    }
                }
            }
            offsets.append(UInt64(pos)); bytes.append(UInt32(b.count)); counts.append(UInt32(l.count))
            crcs.append(b.withUnsafeBytes { kernels.crc32c($0) })
            let padded = (b.count + page - 1) / page * page
            b += [UInt8](repeating: 0, count: padded - b.count)
            try pw.write(b)
            pos += padded
        }
        try pw.commit()
        var hb = magic
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { hb.append(contentsOf: $0) } }
        func u64(_ v: Int) { withUnsafeBytes(of: UInt64(v).littleEndian) { hb.append(contentsOf: $0) } }
        u32(Int(version)); u32(dim); u32([Metric.l2, .innerProduct, .cosine].firstIndex(of: o.metric)!); u32(o.payload.code)
        u64(n); u32(heads); u32(C); u64(pos); u64(entries); u32(o.maxReplicas | Int((o.rngFactor * 256).rounded()) << 16); u32(Int(o.replicaEpsilon.bitPattern))
        for v in coarseCent { u32(Int(v.bitPattern)) }
        for s in coarseStart { u32(Int(s)) }
        for v in headCent { u32(Int(v.bitPattern)) }
        for h in 0..<heads { u64(Int(offsets[h])); u32(Int(bytes[h])); u32(Int(counts[h])); u32(Int(crcs[h])); u32(0) }
        if let pq { u32(pqM); for v in pq.centroids { u32(Int(v.bitPattern)) } }
        let crc = hb.withUnsafeBytes { kernels.crc32c($0) }
        u32(Int(crc))
        let hw = try AtomicFileWriter(path: tmp + "/heads.bin")
        try hw.write(hb)
        try hw.commit()
        // swap into place
        var old: String? = nil
        if FileManager.default.fileExists(atPath: directory) {
            guard FileManager.default.fileExists(atPath: directory + "/heads.bin") || (try? FileManager.default.contentsOfDirectory(atPath: directory).isEmpty) == true else {
                throw EngineError.invalidArgument("\(directory) exists and is not an index: refusing to replace it")
            }
            old = directory + ".old-\(getpid())"
            guard rename(directory, old!) == 0 else { throw EngineError.io("cannot move the previous index aside: \(String(cString: strerror(errno)))") }
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

    /// k-means (k-means++ on a sample, Lloyd with sgemm assignment), then a balanced assignment
    /// pass: points in random order go to argmin d(x, c) + lambda |c|, lambda = mean nearest
    /// distance / (n / k) (a cluster at twice the mean size pays one typical distance extra);
    /// centroids are the means of the balanced clusters.
    static func balancedKMeans(_ data: UnsafeBufferPointer<Float>, n: Int, dim: Int, k: Int, iterations: Int,
                               seed: UInt64) throws -> (centroids: [Float], labels: [Int32]) {
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
            cent = try s.withUnsafeBufferPointer { try KMeans.train(data: $0, dim: dim, k: k, iterations: iterations, seed: seed) }
        } else {
            cent = try KMeans.train(data: data, dim: dim, k: k, iterations: iterations, seed: seed)
        }
        // distances of every point to every centroid, chunked through sgemm
        var cnorm = [Float](repeating: 0, count: k)
        for c in 0..<k { var s: Float = 0; for j in 0..<dim { s += cent[c * dim + j] * cent[c * dim + j] }; cnorm[c] = s }
        var order = Array(0..<n)
        order.shuffle(using: &rng)
        var labels = [Int32](repeating: 0, count: n)
        var sizes = [Int](repeating: 0, count: k)
        // lambda from the unpenalised nearest distances
        var nearest = [Float](repeating: 0, count: n)
        var lab0 = [Int32](repeating: 0, count: n)
        try cent.withUnsafeBufferPointer { try KMeans.assignNearest(data: data, dim: dim, centroids: $0, k: k, labels: &lab0, distances: &nearest) }
        let lambda = Float(nearest.reduce(0.0) { $0 + Double($1) } / Double(n)) / Float(max(1, n / k))
        let block = 2048
        var dist = [Float](repeating: 0, count: block * k)
        var rows = [Float](repeating: 0, count: block * dim)
        for b0 in stride(from: 0, to: n, by: block) {
            let m = min(block, n - b0)
            for r in 0..<m { let i = order[b0 + r]; for j in 0..<dim { rows[r * dim + j] = data[i * dim + j] } }
            rows.withUnsafeBufferPointer { rp in cent.withUnsafeBufferPointer { cp in dist.withUnsafeMutableBufferPointer { dp in
                ck_sgemm(false, true, m, k, dim, -2, rp.baseAddress, dim, cp.baseAddress, dim, 0, dp.baseAddress, k)
            } } }
            for r in 0..<m {
                var best = Float.infinity, bc = 0
                for c in 0..<k {
                    let v = dist[r * k + c] + cnorm[c] + lambda * Float(sizes[c])
                    if v < best { best = v; bc = c }
                }
                labels[order[b0 + r]] = Int32(bc); sizes[bc] += 1
            }
        }
        var sums = [Double](repeating: 0, count: k * dim)
        for i in 0..<n { let c = Int(labels[i]); for j in 0..<dim { sums[c * dim + j] += Double(data[i * dim + j]) } }
        for c in 0..<k where sizes[c] > 0 { for j in 0..<dim { cent[c * dim + j] = Float(sums[c * dim + j] / Double(sizes[c])) } }
        return (cent, labels)
    }
}
