import XCTest
import Engine

/// The hybrid index on synthetic clustered data against brute force, and its failure modes.
final class HybridIndexTests: XCTestCase {
    /// n points in `clusters` Gaussian blobs (cluster spread 1, centres spread 10).
    static func clustered(n: Int, dim: Int, clusters: Int, seed: UInt64) -> [Float] {
        var rng = SeededRandom(seed: seed)
        let centres = rng.gaussian(clusters * dim).map { $0 * 10 }
        var out = [Float](repeating: 0, count: n * dim)
        let noise = rng.gaussian(n * dim)
        for i in 0..<n {
            let c = Int(rng.next() % UInt64(clusters))
            for j in 0..<dim { out[i * dim + j] = centres[c * dim + j] + noise[i * dim + j] }
        }
        return out
    }

    func tmpDir(_ name: String) -> String { NSTemporaryDirectory() + "engine-idx-\(getpid())-\(name)" }

    /// Builds an index over `base` in tmpDir(name), removed when the test ends; `configure` sets options.
    func buildIndex(
        _ name: String, _ base: [Float], dim: Int, ids: [UInt64]? = nil, kernels: Kernels,
        _ configure: (inout HybridIndexOptions) -> Void = { _ in }
    ) throws -> (index: HybridIndex, dir: String) {
        let dir = tmpDir(name)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        var o = HybridIndexOptions()
        configure(&o)
        return (
            try HybridIndex.build(vectors: base, dim: dim, ids: ids, directory: dir, options: o, kernels: kernels), dir
        )
    }

    func recall(_ idx: HybridIndex, _ q: [Float], _ gt: [Int32], ids: [UInt64]? = nil, k: Int = 10, nprobe: Int) throws
        -> Double
    {
        let d = idx.dim
        let m = q.count / d
        var hits = 0
        for i in 0..<m {
            let r = try idx.search(
                Array(q[(i * d)..<((i + 1) * d)]), k: k, parameters: HybridSearchParameters(nprobe: nprobe))
            let truth = Set(gt[(i * k)..<((i + 1) * k)].map { ids?[Int($0)] ?? UInt64($0) })
            hits += r.neighbors.filter { truth.contains($0.id) }.count
        }
        return Double(hits) / Double(m * k)
    }

    func testRecallAgainstBruteForceAllMetrics() throws {
        let k = try Kernels.selected()
        let (n, d) = (6000, 24)
        let base = Self.clustered(n: n, dim: d, clusters: 50, seed: 1)
        let queries = Self.clustered(n: 200, dim: d, clusters: 50, seed: 1)
            .enumerated().map { $0.element + 0.3 * Float(($0.offset * 7919) % 13) / 13 }
        let ids = (0..<n).map { UInt64($0) * 1_000_003 + 17 } // external UInt64 ids
        for metric in Metric.allCases {
            let (idx, _) = try buildIndex("\(metric)", base, dim: d, ids: ids, kernels: k) { $0.metric = metric }
            let gt = try BruteForce.search(base: base, queries: queries, dim: d, k: 10, metric: metric)
            let low = try recall(idx, queries, gt, ids: ids, nprobe: 4)
            let high = try recall(idx, queries, gt, ids: ids, nprobe: 64)
            print(
                """
                HybridIndex \(metric): recall@10 \(low) at nprobe 4, \(high) at nprobe 64 (\(idx.heads) heads, \
                \(idx.entries) entries)
                """
            )
            // Clustered data and 64 of ~600 lists: the exact neighbours are found almost always;
            // 0.95 leaves room for boundary points. Recall grows with effort.
            XCTAssertGreaterThanOrEqual(high, 0.95, "\(metric)")
            XCTAssertGreaterThanOrEqual(high, low)
            // Distances are exact (f32 vectors on disk): under L2 and cosine the first hit of a
            // stored vector is itself (under inner product a longer vector may beat it).
            if metric != .innerProduct {
                let r = try idx.search(
                    Array(base[(5 * d)..<(6 * d)]), k: 1, parameters: HybridSearchParameters(nprobe: 8))
                XCTAssertEqual(r.neighbors.first?.id, ids[5])
            }
        }
    }

    func testF16VectorsFiltersAndLargeK() throws {
        let k = try Kernels.selected()
        let (n, d) = (3000, 16)
        let base = Self.clustered(n: n, dim: d, clusters: 20, seed: 2)
        let (idx, _) = try buildIndex("f16", base, dim: d, kernels: k) { $0.payload = .f16 }
        let gt = try BruteForce.search(base: base, queries: Array(base[0..<(100 * d)]), dim: d, k: 10, metric: .l2)
        XCTAssertGreaterThanOrEqual(try recall(idx, Array(base[0..<(100 * d)]), gt, nprobe: 64), 0.95)
        // allow-list: only even ids come back
        var p = HybridSearchParameters(nprobe: 32)
        p.filter = { $0 % 2 == 0 }
        let r = try idx.search(Array(base[0..<d]), k: 20, parameters: p)
        XCTAssertFalse(r.neighbors.isEmpty)
        XCTAssertTrue(r.neighbors.allSatisfy { $0.id % 2 == 0 })
        // k larger than the collection: everything probed, no duplicates, sorted
        let all = try idx.search(Array(base[0..<d]), k: 10 * n, parameters: HybridSearchParameters(nprobe: idx.heads))
        XCTAssertEqual(all.neighbors.count, n)
        XCTAssertEqual(Set(all.neighbors.map(\.id)).count, n)
        XCTAssertEqual(all.neighbors.map(\.distance), all.neighbors.map(\.distance).sorted())
    }

    func testConcurrentSearchesEqualSerial() throws {
        let k = try Kernels.selected(threads: 1)
        let (n, d) = (4000, 32)
        let base = Self.clustered(n: n, dim: d, clusters: 30, seed: 3)
        let (idx, _) = try buildIndex("conc", base, dim: d, kernels: k)
        let m = 64
        let serial = try (0..<m).map { try idx.search(Array(base[($0 * d)..<(($0 + 1) * d)]), k: 10).neighbors }
        let box = ResultsBox(m)
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            for i in stride(from: t, to: m, by: 4) {
                box.set(i, (try? idx.search(Array(base[(i * d)..<((i + 1) * d)]), k: 10).neighbors) ?? [])
            }
        }
        for i in 0..<m { XCTAssertEqual(box.get(i), serial[i]) }
    }

    func testBadInputAndCorruptFiles() throws {
        let k = try Kernels.selected()
        let (n, d) = (2000, 8)
        let base = Self.clustered(n: n, dim: d, clusters: 10, seed: 4)
        let (idx, dir) = try buildIndex("bad", base, dim: d, kernels: k)
        assertThrowsEngineError(isInvalidArgument) { _ = try idx.search([1, 2, 3], k: 5) }
        assertThrowsEngineError(isNonFinite) { _ = try idx.search([Float](repeating: .nan, count: d), k: 5) }
        assertThrowsEngineError(isInvalidArgument) { _ = try idx.search([], k: 5) }
        assertThrowsEngineError(isInvalidArgument) { _ = try idx.search(Array(base[0..<d]), k: 0) }
        XCTAssertThrowsError(try HybridIndex.build(vectors: [1, .nan], dim: 2, directory: tmpDir("nan"), kernels: k))
        XCTAssertThrowsError(try HybridIndex.build(vectors: [1, 2, 3], dim: 2, directory: tmpDir("dim"), kernels: k))
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmpDir("nan")))

        let heads = dir + "/heads.bin"
        let postings = dir + "/postings.bin"
        let h0 = try Data(contentsOf: URL(fileURLWithPath: heads))
        let p0 = try Data(contentsOf: URL(fileURLWithPath: postings))
        // a flipped byte anywhere in heads.bin is refused at open
        for pos in [3, 20, h0.count / 2, h0.count - 2] {
            var h = h0
            h[pos] ^= 0x40
            try h.write(to: URL(fileURLWithPath: heads))
            XCTAssertThrowsError(try HybridIndex(directory: dir, kernels: k), "flipped byte \(pos)")
        }
        try h0.prefix(h0.count - 10).write(to: URL(fileURLWithPath: heads))
        XCTAssertThrowsError(try HybridIndex(directory: dir, kernels: k), "truncated heads")
        try h0.write(to: URL(fileURLWithPath: heads))
        // truncated postings: refused at open; a flipped byte inside a list: refused when read
        try p0.prefix(p0.count - 4096).write(to: URL(fileURLWithPath: postings))
        XCTAssertThrowsError(try HybridIndex(directory: dir, kernels: k), "truncated postings")
        var p = p0
        p[9] ^= 0x01 // inside the first list's ids
        try p.write(to: URL(fileURLWithPath: postings))
        let opened = try HybridIndex(directory: dir, kernels: k)
        var caught = 0
        for i in 0..<200 {
            do {
                _ = try opened.search(
                    Array(base[(i * d)..<((i + 1) * d)]), k: 5, parameters: HybridSearchParameters(nprobe: opened.heads)
                )
            } catch let e as EngineError { if case .invalidFile = e { caught += 1 } }
        }
        XCTAssertEqual(caught, 200, "every search that reads the corrupt list reports it")
        try p0.write(to: URL(fileURLWithPath: postings))
        XCTAssertNoThrow(try HybridIndex(directory: dir, kernels: k).search(Array(base[0..<d]), k: 5))
    }

    /// An interrupted build (a leftover temporary directory) is not an index, and a failed
    /// rebuild leaves the previous index intact.
    func testInterruptedBuildLeavesNothingThatOpens() throws {
        let k = try Kernels.selected()
        let (n, d) = (1500, 8)
        let base = Self.clustered(n: n, dim: d, clusters: 8, seed: 5)
        let dir = tmpDir("atomic")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HybridIndex.build(vectors: base, dim: d, directory: dir, kernels: k)
        // a partial build as a crash would leave it: postings written, heads missing
        let partial = dir + ".tmp-99999-1"
        try FileManager.default.createDirectory(atPath: partial, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: partial) }
        try FileManager.default.copyItem(atPath: dir + "/postings.bin", toPath: partial + "/postings.bin")
        XCTAssertThrowsError(try HybridIndex(directory: partial, kernels: k))
        // a rebuild that fails validation leaves the old index as it was
        XCTAssertThrowsError(
            try HybridIndex.build(vectors: [Float](repeating: .infinity, count: 16), dim: d, directory: dir, kernels: k)
        )
        XCTAssertEqual(try HybridIndex(directory: dir, kernels: k).count, n)
        // and a directory that is not an index is never replaced
        let other = tmpDir("other")
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: other) }
        try Data([1]).write(to: URL(fileURLWithPath: other + "/keep.txt"))
        XCTAssertThrowsError(try HybridIndex.build(vectors: base, dim: d, directory: other, kernels: k))
        XCTAssertTrue(FileManager.default.fileExists(atPath: other + "/keep.txt"))
    }
}

extension HybridIndexTests {
    /// 10% inserts and 10% deletes after the build: recall@10 within 1 point of a rebuild over
    /// the final collection; the log survives reopening; a torn log tail is dropped.
    func testInsertDeleteMatchRebuild() throws {
        let k = try Kernels.selected()
        let (n, d) = (8000, 24)
        let all = Self.clustered(n: n + n / 10, dim: d, clusters: 60, seed: 6)
        let dir = tmpDir("upd")
        let ref = tmpDir("upd-ref")
        defer {
            try? FileManager.default.removeItem(atPath: dir)
            try? FileManager.default.removeItem(atPath: ref)
        }
        try HybridIndex.build(vectors: Array(all[0..<(n * d)]), dim: d, directory: dir, kernels: k)
        let idx = try HybridIndex(directory: dir, writable: true, kernels: k)
        let newIDs = (n..<(n + n / 10)).map { UInt64($0) }
        try idx.insert(vectors: Array(all[(n * d)...]), ids: newIDs)
        let deleted = stride(from: 0, to: n, by: 10).map { UInt64($0) } // 10% of the originals
        try idx.delete(deleted)
        // the final collection and its exact neighbours
        let gone = Set(deleted)
        let keep = (0..<(n + n / 10)).filter { !gone.contains(UInt64($0)) }
        var final: [Float] = []
        for i in keep { final += all[(i * d)..<((i + 1) * d)] }
        let queries = Self.clustered(n: 600, dim: d, clusters: 60, seed: 6).map { $0 + 0.1 }
        let gtRows = try BruteForce.search(base: final, queries: queries, dim: d, k: 10, metric: .l2)
        let gt = gtRows.map { Int32(keep[Int($0)]) } // row -> original id
        let rebuilt = try HybridIndex.build(
            vectors: final, dim: d, ids: keep.map { UInt64($0) }, directory: ref, kernels: k)
        for nprobe in [4, 8, 16] {
            let a = try recall(idx, queries, gt, nprobe: nprobe)
            let b = try recall(rebuilt, queries, gt, nprobe: nprobe)
            print(
                "HybridIndex updates: recall@10 \(a) after 10% inserts + 10% deletes vs \(b) rebuilt (nprobe \(nprobe))"
            )
            // Within 1 point of a rebuild at working settings (rebuilt recall >= 0.9); at nprobe 4
            // (recall ~0.7) the rebuilt heads fit the new data better: reported, bounded at 3 points.
            XCTAssertGreaterThanOrEqual(a, b - (b >= 0.9 ? 0.01 : 0.03), "nprobe \(nprobe)")
        }
        // no deleted id comes back
        for i in 0..<50 {
            let r = try idx.search(
                Array(queries[(i * d)..<((i + 1) * d)]), k: 20, parameters: HybridSearchParameters(nprobe: 64))
            XCTAssertTrue(r.neighbors.allSatisfy { !gone.contains($0.id) })
        }
        // reopen: same answers from the replayed log; read-only handles refuse updates
        let before = try idx.search(Array(queries[0..<d]), k: 10).neighbors
        let reopened = try HybridIndex(directory: dir, kernels: k)
        XCTAssertEqual(try reopened.search(Array(queries[0..<d]), k: 10).neighbors, before)
        XCTAssertEqual(reopened.insertedCount, n / 10)
        XCTAssertThrowsError(try reopened.insert(Array(all[0..<d]), id: 1))
        // a torn record at the end of the log is dropped; everything before it stays
        let log = dir + "/delta.log"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: log))
        bytes += Data([0x49, 0x4E, 0x53, 0x31, 1, 2, 3]) // half an insert record
        try bytes.write(to: URL(fileURLWithPath: log))
        let torn = try HybridIndex(directory: dir, writable: true, kernels: k)
        XCTAssertEqual(try torn.search(Array(queries[0..<d]), k: 10).neighbors, before)
        try torn.insert(Array(all[0..<d]), id: 999_999)
        XCTAssertEqual(
            try HybridIndex(directory: dir, kernels: k).search(Array(all[0..<d]), k: 1).neighbors.first?.id, 999_999)
        assertThrowsEngineError(isNonFinite) { try torn.insert([Float](repeating: .nan, count: d), id: 5) }
        assertThrowsEngineError(isInvalidArgument) { try torn.insert([1, 2], id: 5) }
    }
}

extension HybridIndexTests {
    /// PQ codes in the lists, exact re-ranking from vectors.bin: recall close to the f32 payload;
    /// a flipped byte in vectors.bin is reported when that row is re-ranked.
    func testPQPayloadWithRerank() throws {
        let k = try Kernels.selected()
        let (n, d) = (5000, 32)
        let base = Self.clustered(n: n, dim: d, clusters: 40, seed: 8)
        let (idx, dir) = try buildIndex("pq", base, dim: d, kernels: k) { $0.payload = .pq8 }
        XCTAssertEqual(idx.pq?.subquantizers, 4)
        let queries = Array(base[0..<(200 * d)]).map { $0 + 0.05 }
        let gt = try BruteForce.search(base: base, queries: queries, dim: d, k: 10, metric: .l2)
        let r = try recall(idx, queries, gt, nprobe: 32)
        print("HybridIndex pq8: recall@10 \(r) at nprobe 32 (re-rank 100)")
        XCTAssertGreaterThanOrEqual(r, 0.95)
        // exact distances after re-ranking: the stored vector itself at distance ~0.05^2 * d
        let hit = try idx.search(Array(queries[0..<d]), k: 1).neighbors[0]
        XCTAssertEqual(hit.id, 0)
        XCTAssertEqual(hit.distance, 0.05 * 0.05 * Float(d), accuracy: 1e-3)
        // corrupt vectors.bin: re-ranking that row throws
        let vp = dir + "/vectors.bin"
        var v = try Data(contentsOf: URL(fileURLWithPath: vp))
        v[5] ^= 0x10 // row 0
        try v.write(to: URL(fileURLWithPath: vp))
        let bad = try HybridIndex(directory: dir, io: .pread, kernels: k)
        assertThrowsEngineError({
            if case .invalidFile = $0 { return true }
            return false
        }) { _ = try bad.search(Array(queries[0..<d]), k: 1) }
        try v.prefix(v.count - 1).write(to: URL(fileURLWithPath: vp))
        XCTAssertThrowsError(try HybridIndex(directory: dir, kernels: k), "truncated vectors.bin")
    }

    /// Re-rank rows follow the checksum policy: `.once` checks a row the first time this process
    /// reads it, `.always` every time, `.never` not at all. A row changed under a running index
    /// (rewritten in place: the mapping sees the page cache) passes `.once` after its first check
    /// and is caught by `.always` and by a fresh open.
    func testRerankRowChecksumPolicy() throws {
        let k = try Kernels.selected()
        let (n, d) = (3000, 16)
        let base = Self.clustered(n: n, dim: d, clusters: 20, seed: 9)
        let (_, dir) = try buildIndex("rows", base, dim: d, kernels: k) { $0.payload = .pq4 }
        let idx = try HybridIndex(directory: dir, kernels: k) // mapped
        let q = Array(base[0..<d]).map { $0 + 0.01 }
        var p = HybridSearchParameters(nprobe: 8)
        XCTAssertEqual(try idx.search(q, k: 1, parameters: p).neighbors.first?.id, 0) // row 0 checked once
        let fd = open(dir + "/vectors.bin", O_WRONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var byte: UInt8 = 0x7F
        XCTAssertEqual(pwrite(fd, &byte, 1, 5), 1) // a value of row 0, its CRC unchanged
        close(fd)
        XCTAssertNoThrow(try idx.search(q, k: 1, parameters: p), ".once: row 0 was verified before")
        p.verify = .always
        XCTAssertThrowsError(try idx.search(q, k: 1, parameters: p), ".always checks it again")
        p.verify = .never
        XCTAssertNoThrow(try idx.search(q, k: 1, parameters: p))
        let fresh = try HybridIndex(directory: dir, kernels: k)
        XCTAssertThrowsError(try fresh.search(q, k: 1, parameters: HybridSearchParameters(nprobe: 8)), "a new process")
    }
}

final class ResultsBox: @unchecked Sendable {
    private var r: [[SearchHit]]
    private let lock = NSLock()
    init(_ m: Int) { r = Array(repeating: [], count: m) }
    func set(_ i: Int, _ v: [SearchHit]) {
        lock.lock()
        r[i] = v
        lock.unlock()
    }
    func get(_ i: Int) -> [SearchHit] {
        lock.lock()
        defer { lock.unlock() }
        return r[i]
    }
}

extension HybridIndexTests {
    /// Builds stream their input: from .fvecs, .npy and .bvecs files the index is byte-identical
    /// to the one built from the same values in memory (the build is seeded and reads the same
    /// rows in the same order), with many blocks so that the spill and its per-cluster segments
    /// are exercised; a truncated or mixed file is refused with the record named.
    func testStreamedBuildFromFilesMatchesArrayBuild() throws {
        let k = try Kernels.selected()
        let (n, d) = (4000, 16)
        // integer-valued so that .bvecs (uint8) holds exactly the same vectors
        let base = Self.clustered(n: n, dim: d, clusters: 30, seed: 11).map {
            max(0, min(255, ($0 * 6 + 128).rounded())) + 0
        } // + 0: no -0.0
        let dir = tmpDir("stream")
        let files = tmpDir("stream-files")
        try FileManager.default.createDirectory(atPath: files, withIntermediateDirectories: true)
        defer { for p in [dir, files, dir + "-f"] { try? FileManager.default.removeItem(atPath: p) } }
        var o = HybridIndexOptions()
        o.blockRows = 333 // 13 blocks, the last one partial
        let mem = try HybridIndex.build(vectors: base, dim: d, directory: dir, options: o, kernels: k)
        let gt = try BruteForce.search(
            base: base, queries: Array(base[0..<(100 * d)]).map { $0 + 0.5 }, dim: d, k: 10, metric: .l2)
        let r = try recall(mem, Array(base[0..<(100 * d)]).map { $0 + 0.5 }, gt, nprobe: 32)
        XCTAssertGreaterThanOrEqual(r, 0.95, "blocked build recall") // as the single-block builds above
        let heads0 = try Data(contentsOf: URL(fileURLWithPath: dir + "/heads.bin"))
        let post0 = try Data(contentsOf: URL(fileURLWithPath: dir + "/postings.bin"))
        try VectorFile.write(base, dim: d, to: files + "/b.fvecs")
        try VectorFile.write(base, dim: d, to: files + "/b.npy")
        var bv = Data()
        for i in 0..<n {
            var dd = Int32(d).littleEndian
            bv.append(Data(bytes: &dd, count: 4))
            bv.append(contentsOf: base[(i * d)..<((i + 1) * d)].map { UInt8($0) })
        }
        try bv.write(to: URL(fileURLWithPath: files + "/b.bvecs"))
        for name in ["b.fvecs", "b.npy", "b.bvecs"] {
            let src = try VectorFile.source(path: files + "/" + name)
            XCTAssertEqual(src.count, n)
            XCTAssertEqual(src.dim, d)
            try HybridIndex.build(source: src, directory: dir + "-f", options: o, kernels: k)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "-f/heads.bin")), heads0, name)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "-f/postings.bin")), post0, name)
        }
        XCTAssertFalse(
            try FileManager.default.contentsOfDirectory(atPath: dir + "-f").contains { $0.contains("spill") },
            "the spill is deleted")
        // truncated files: refused on open
        let fv = try Data(contentsOf: URL(fileURLWithPath: files + "/b.fvecs"))
        let np = try Data(contentsOf: URL(fileURLWithPath: files + "/b.npy"))
        try fv.prefix(fv.count - 3).write(to: URL(fileURLWithPath: files + "/t.fvecs"))
        try np.prefix(np.count - 64).write(to: URL(fileURLWithPath: files + "/t.npy"))
        assertThrowsEngineError(isInvalidFile) { _ = try VectorFile.source(path: files + "/t.fvecs") }
        assertThrowsEngineError(isInvalidFile) { _ = try VectorFile.source(path: files + "/t.npy") }
        // a record with another dimension (same size): refused when the build reaches it
        var mixed = fv
        let at = 1234 * (4 + 4 * d)
        mixed[at] = UInt8(d + 1)
        try mixed.write(to: URL(fileURLWithPath: files + "/m.fvecs"))
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "-f/heads.bin"))
        XCTAssertThrowsError(
            try HybridIndex.build(
                source: VectorFile.source(path: files + "/m.fvecs"), directory: dir + "-f", options: o, kernels: k)
        ) {
            XCTAssertTrue("\($0)".contains("record 1234"), "\($0)")
        }
        XCTAssertEqual(
            try Data(contentsOf: URL(fileURLWithPath: dir + "-f/heads.bin")), before,
            "a failed build leaves the previous index")
    }
}

extension HybridIndexTests {
    /// 4-bit fast-scan PQ of the residual and binary sign codes of the rotated residual, every
    /// metric: candidates from the codes, exact distances after re-ranking from vectors.bin.
    func testPQ4AndBinaryPayloads() throws {
        let k = try Kernels.selected()
        let (n, d) = (5000, 32)
        let base = Self.clustered(n: n, dim: d, clusters: 40, seed: 12)
        let queries = Self.clustered(n: 200, dim: d, clusters: 40, seed: 13).map { $0 * 0.98 }
        for payload in [PostingPayload.pq4, .binary] {
            for metric in Metric.allCases {
                let (idx, _) = try buildIndex("\(payload)-\(metric)", base, dim: d, kernels: k) {
                    $0.payload = payload
                    $0.metric = metric
                }
                let gt = try BruteForce.search(base: base, queries: queries, dim: d, k: 10, metric: metric)
                let r = try recall(idx, queries, gt, nprobe: 32)
                var p = HybridSearchParameters(nprobe: 32)
                p.rerank = 10
                var noRerank = 0
                for i in 0..<200 {
                    let hits = try idx.search(Array(queries[(i * d)..<((i + 1) * d)]), k: 10, parameters: p).neighbors
                    noRerank += Set(hits.map(\.id)).intersection(gt[(i * 10)..<((i + 1) * 10)].map { UInt64($0) }).count
                }
                let r10 = Double(noRerank) / 2000
                print(
                    """
                    HybridIndex \(payload) \(metric): recall@10 \(r) (re-rank 100), \(r10) (re-rank 10: the \
                    codes' own ranking)
                    """
                )
                // Neighbours inside a Gaussian blob differ by isotropic noise, the hardest case for
                // codes (measured here: 0.90-0.98 with 100 re-ranked, 0.38-0.74 from the codes
                // alone). Chance is 10 of the ~1,600 entries scanned (0.006): a broken estimator
                // (a sign, a norm, a table offset) falls near it. Bounds: 0.85 re-ranked, 0.2 (30x
                // chance) from the codes alone.
                XCTAssertGreaterThanOrEqual(r, 0.85, "\(payload) \(metric)")
                XCTAssertGreaterThanOrEqual(r10, 0.2, "\(payload) \(metric)")
                // exact distances after re-ranking
                let q0 = Array(queries[0..<d])
                let hit = try idx.search(q0, k: 1).neighbors[0]
                var exact = [Float](repeating: 0, count: 1)
                try q0.withUnsafeBufferPointer { qp in
                    try Array(base[(Int(hit.id) * d)..<((Int(hit.id) + 1) * d)]).withUnsafeBufferPointer { bp in
                        try exact.withUnsafeMutableBufferPointer {
                            try k.distances(metric == .cosine ? .innerProduct : metric, query: qp, data: bp, into: $0)
                        }
                    }
                }
                if metric != .cosine { XCTAssertEqual(hit.distance, exact[0], accuracy: 1e-3 * max(1, abs(exact[0]))) }
            }
        }
    }
}

extension HybridIndexTests {
    /// The three read paths (mapped, pread, one io_uring batch per query) return identical
    /// results, from several threads, for vector and code payloads (io_uring also batches the
    /// re-rank rows); a list corrupted on disk is reported through every path.
    func testReadPathsAgree() throws {
        let k = try Kernels.selected(threads: 1)
        let (n, d) = (4000, 32)
        let base = Self.clustered(n: n, dim: d, clusters: 30, seed: 14)
        var uringMissing = false
        for payload in [PostingPayload.f16, .pq4] {
            let (_, dir) = try buildIndex("io-\(payload)", base, dim: d, kernels: k) { $0.payload = payload }
            let m = 64
            let queries = (0..<m).map { Array(base[($0 * d)..<(($0 + 1) * d)]).map { $0 + 0.05 } }
            let mapped = try HybridIndex(directory: dir, io: .mapped, kernels: k)
            let expected = try queries.map {
                try mapped.search($0, k: 10, parameters: HybridSearchParameters(nprobe: 16)).neighbors
            }
            for io in [IndexIO.pread, .uring] {
                let idx = try HybridIndex(directory: dir, io: io, kernels: k)
                if io == .uring && idx.io != .uring {
                    uringMissing = true // the index fell back to pread: nothing new to compare
                    continue
                }
                let box = ResultsBox(m)
                DispatchQueue.concurrentPerform(iterations: 3) { t in
                    for i in stride(from: t, to: m, by: 3) {
                        box.set(
                            i,
                            (try? idx.search(queries[i], k: 10, parameters: HybridSearchParameters(nprobe: 16))
                                .neighbors) ?? [])
                    }
                }
                for i in 0..<m { XCTAssertEqual(box.get(i), expected[i], "\(payload) \(io) query \(i)") }
            }
            // corrupt the middle of the postings: every path refuses the damaged list
            let pp = dir + "/postings.bin"
            var bytes = try Data(contentsOf: URL(fileURLWithPath: pp))
            let p0 = bytes
            for i in stride(from: 0, to: bytes.count, by: 97) { bytes[i] ^= 0x5A }
            try bytes.write(to: URL(fileURLWithPath: pp))
            for io in IndexIO.allCases {
                let idx = try HybridIndex(directory: dir, io: io, kernels: k)
                assertThrowsEngineError(isInvalidFile, "\(io)") {
                    _ = try idx.search(queries[0], k: 10, parameters: HybridSearchParameters(nprobe: 16))
                }
            }
            try p0.write(to: URL(fileURLWithPath: pp))
        }
        if uringMissing {
            throw XCTSkip("io_uring is unavailable here (ring setup refused): mapped and pread compared, uring not")
        }
    }
}
