import Engine
import Foundation
import XCTest

/// The recall-to-nprobe table a build stores (`RecallCalibration`): what it delivers on queries
/// the build never saw, measured against brute-force ground truth (`BruteForce`, blocked sgemm,
/// independent of the index's code), its file format, and refusal of bad tables and targets.
final class RecallCalibrationTests: XCTestCase {
    static let dim = 24
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "engine-calibration-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// m points around `centres` (Gaussian, sd 1; centres spread with sd 3: overlapping clusters,
    /// so recall rises over several lists rather than jumping to 1 at nprobe 1).
    static func draw(_ m: Int, centres: [Float], _ rng: inout SeededRandom) -> [Float] {
        let c = centres.count / dim
        return (0..<m).flatMap { _ -> [Float] in
            let j = Int(rng.next() % UInt64(c))
            return (0..<dim).map { centres[j * dim + $0] + gaussian(&rng) }
        }
    }

    static func gaussian(_ rng: inout SeededRandom) -> Float {
        let u = max(Double(rng.next() >> 11) / Double(1 << 53), 1e-12)
        let v = Double(rng.next() >> 11) / Double(1 << 53)
        return Float((-2 * log(u)).squareRoot() * cos(2 * .pi * v))
    }

    func build(_ n: Int, calibration: Int = 1000, metric: Metric = .l2) throws -> (HybridIndex, [Float], [Float]) {
        var rng = SeededRandom(seed: 11)
        let centres = (0..<(60 * Self.dim)).map { _ in 3 * Self.gaussian(&rng) }
        let base = Self.draw(n, centres: centres, &rng)
        let held = Self.draw(600, centres: centres, &rng)
        var o = HybridIndexOptions()
        o.metric = metric
        o.calibrationQueries = calibration
        let idx = try HybridIndex.build(vectors: base, dim: Self.dim, directory: dir + "/idx", options: o)
        return (idx, base, held)
    }

    /// Mean recall@10 of `p` over the held-out queries, and the lists each query read.
    func recall(_ idx: HybridIndex, _ base: [Float], _ held: [Float], _ p: HybridSearchParameters) throws -> (
        Double, [Int]
    ) {
        let m = held.count / Self.dim
        let truth = try BruteForce.search(base: base, queries: held, dim: Self.dim, k: 10, metric: idx.metric)
        var hits = 0
        var lists: [Int] = []
        for i in 0..<m {
            let r = try idx.search(Array(held[(i * Self.dim)..<((i + 1) * Self.dim)]), k: 10, parameters: p)
            let t = Set(truth[(i * 10)..<((i + 1) * 10)].map { UInt64($0) })
            hits += r.neighbors.filter { t.contains($0.id) }.count
            lists.append(r.cost.listsRead)
        }
        return (Double(hits) / Double(10 * m), lists)
    }

    /// Held-out queries get the recall asked for. Tolerance 0.04: the table's recalls are means
    /// over 1,000 sample queries (standard error ~0.005 at recall 0.9 here), the 600 held-out
    /// queries add ~0.008, the interpolation between measured points is linear where the curve
    /// bends, and the samples are base vectors with their own id removed rather than new points.
    func testTargetRecallIsDeliveredOnHeldOutQueries() throws {
        let (idx, base, held) = try build(8000)
        let c = try XCTUnwrap(idx.calibration)
        XCTAssertEqual(c.queries, 1000)
        XCTAssertEqual(c.k, 10)
        XCTAssertGreaterThan(c.points.count, 3)
        XCTAssertEqual(c.points.first?.nprobe, 1)
        XCTAssertTrue(zip(c.points, c.points.dropFirst()).allSatisfy { $0.nprobe < $1.nprobe })
        XCTAssertLessThan(c.points[0].recall, 0.8, "the test data must need several lists")
        XCTAssertGreaterThan(c.points.last!.recall, 0.99)
        for target in [0.8, 0.9, 0.95] {
            let (r, lists) = try recall(idx, base, held, HybridSearchParameters(targetRecall: target))
            XCTAssertEqual(r, target, accuracy: 0.04, "target \(target)")
            // a fractional nprobe: floor or floor + 1 lists, the extra list for its share of queries
            let x = c.nprobe(forRecall: target).nprobe
            let lo = Int(x.rounded(.down))
            XCTAssertTrue(lists.allSatisfy { $0 == lo || $0 == lo + 1 }, "lists read \(Set(lists)) for \(x)")
            let share = Double(lists.filter { $0 == lo + 1 }.count) / Double(lists.count)
            // binomial over 600 queries: 4 standard deviations at most 0.082
            XCTAssertEqual(share, x - Double(lo), accuracy: 0.082, "share of queries reading one list more")
            // and the same query always reads the same lists
            let q = Array(held[0..<Self.dim])
            let a = try idx.search(q, k: 10, parameters: HybridSearchParameters(targetRecall: target))
            let b = try idx.search(q, k: 10, parameters: HybridSearchParameters(targetRecall: target))
            XCTAssertEqual(a.neighbors, b.neighbors)
        }
        // assigning nprobe asks for exactly that many lists
        var fixedLists = HybridSearchParameters()
        fixedLists.nprobe = 3
        XCTAssertNil(fixedLists.targetRecall)
        let (_, three) = try recall(idx, base, held, fixedLists)
        XCTAssertEqual(Set(three), [3])
        // the default parameters aim for 0.95
        let (rd, _) = try recall(idx, base, held, HybridSearchParameters())
        XCTAssertEqual(rd, 0.95, accuracy: 0.04)
        // above the table's best: its last point
        let top = c.nprobe(forRecall: 1)
        XCTAssertEqual(top.nprobe, Double(c.points.last!.nprobe))
        XCTAssertEqual(top.reached, c.points.last!.recall >= 1)
    }

    func testCosineIndexIsCalibrated() throws {
        let (idx, base, held) = try build(3000, calibration: 400, metric: .cosine)
        XCTAssertEqual(idx.calibration?.queries, 400)
        let (r, _) = try recall(idx, base, held, HybridSearchParameters(targetRecall: 0.9))
        XCTAssertEqual(r, 0.9, accuracy: 0.05) // 400 samples: wider than the 1,000-sample bound
    }

    func testNoCalibrationMeansNprobe() throws {
        let (idx, _, held) = try build(2000, calibration: 0)
        XCTAssertNil(idx.calibration)
        let r = try idx.search(Array(held[0..<Self.dim]), k: 10, parameters: HybridSearchParameters(targetRecall: 0.9))
        XCTAssertEqual(r.cost.listsRead, min(32, idx.heads), "without a table the fallback nprobe is read")
    }

    func testBadTargetsAreRefused() throws {
        let (idx, _, held) = try build(1000, calibration: 200)
        let q = Array(held[0..<Self.dim])
        for t in [-0.1, 1.5, .nan, .infinity] {
            XCTAssertThrowsError(try idx.search(q, k: 10, parameters: HybridSearchParameters(targetRecall: t)), "\(t)")
        }
        var o = HybridIndexOptions()
        for bad in [-1, 100_001, Int.max] {
            o.calibrationQueries = bad
            XCTAssertThrowsError(
                try HybridIndex.build(
                    vectors: [Float](repeating: 1, count: 48), dim: 24, directory: dir + "/bad", options: o),
                "\(bad)")
        }
    }

    /// A single vector: no neighbour to calibrate on, no table.
    func testTinyIndexes() throws {
        let one = try HybridIndex.build(vectors: [Float](repeating: 1, count: 24), dim: 24, directory: dir + "/one")
        XCTAssertNil(one.calibration)
        let two = try HybridIndex.build(
            vectors: (0..<48).map { Float($0) }, dim: 24, directory: dir + "/two")
        XCTAssertEqual(two.calibration?.k, 1)
        XCTAssertEqual(two.calibration?.points.last?.recall, 1)
    }

    /// The command line: `index search` aims for 0.95 by default and says which nprobe it chose,
    /// takes --target-recall or --nprobe, refuses a target on an index without a table; `index
    /// stats` prints the table.
    func testCommandLine() throws {
        var rng = SeededRandom(seed: 11)
        let centres = (0..<(60 * Self.dim)).map { _ in 3 * Self.gaussian(&rng) }
        try VectorFile.write(Self.draw(3000, centres: centres, &rng), dim: Self.dim, to: dir + "/base.fvecs")
        try VectorFile.write(Self.draw(50, centres: centres, &rng), dim: Self.dim, to: dir + "/q.fvecs")
        let build = ["index", "build", "--input", dir + "/base.fvecs"]
        var (st, out) = try runEngine(build + ["--output", dir + "/cal", "--calibration-queries", "300"])
        XCTAssertEqual(st, 0, out)
        XCTAssertTrue(out.contains("calibration (recall@10, 300 sample queries): 0.90 at nprobe"), out)
        let idx = try HybridIndex(directory: dir + "/cal")
        let want = String(format: "%.2f", idx.calibration!.nprobe(forRecall: 0.95).nprobe)
        let search = ["index", "search", "--index", dir + "/cal", "--queries", dir + "/q.fvecs"]
        (st, out) = try runEngine(search + ["--output", dir + "/a.ivecs"])
        XCTAssertEqual(st, 0, out)
        XCTAssertTrue(out.contains("target recall@10 0.950: nprobe \(want)"), out)
        (st, out) = try runEngine(search + ["--output", dir + "/b.ivecs", "--nprobe", "3"])
        XCTAssertEqual(st, 0, out)
        XCTAssertTrue(out.contains("nprobe 3"), out)
        (st, out) = try runEngine(search + ["--output", dir + "/c.ivecs", "--target-recall", "1"])
        XCTAssertEqual(st, 0, out)
        // the table stops at 0.999 or a plateau, so a target of 1 is above it
        XCTAssertTrue(out.contains("above the calibrated maximum") || idx.calibration!.points.last!.recall >= 1, out)
        (st, out) = try runEngine(build + ["--output", dir + "/none", "--calibration-queries", "0"])
        XCTAssertEqual(st, 0, out)
        XCTAssertTrue(out.contains("calibration: none"), out)
        let plain = ["index", "search", "--index", dir + "/none", "--queries", dir + "/q.fvecs"]
        (st, out) = try runEngine(plain + ["--output", dir + "/d.ivecs", "--target-recall", "0.9"])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("has no calibration table"), out)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/d.ivecs"))
        (st, out) = try runEngine(plain + ["--output", dir + "/e.ivecs"])
        XCTAssertEqual(st, 0, out)
        XCTAssertTrue(out.contains("nprobe 32 (the index has no calibration table)"), out)
    }

    // MARK: the file

    /// heads.bin with its calibration section edited by `edit` (offsets from the section's start:
    /// 0 queries, 4 k, 8 points, 12 + 8i nprobe, 16 + 8i recall) and the CRC recomputed.
    func rewrite(_ path: String, _ edit: (inout [UInt8], Int) -> Void) throws {
        var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path + "/heads.bin")))
        // the section's start: walk back from the CRC over the points
        var start = -1
        for points in 0...64 {
            let s = b.count - 4 - 8 * points - 12
            let stored = b.withUnsafeBytes {
                Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: s + 8, as: UInt32.self)))
            }
            if stored == points {
                start = s
                break
            }
        }
        XCTAssertGreaterThan(start, 0)
        edit(&b, start)
        let crc = b.withUnsafeBytes { Kernels.default.crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<(b.count - 4)])) }
        withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { b[b.count - 4 + i] = $0[i] } }
        try Data(b).write(to: URL(fileURLWithPath: path + "/heads.bin"))
    }

    static func put(_ v: UInt32, _ b: inout [UInt8], _ at: Int) {
        withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { b[at + i] = $0[i] } }
    }

    func testVersion1FilesOpenWithoutATable() throws {
        let (idx, _, held) = try build(1500, calibration: 200)
        let points = idx.calibration!.points.count
        let path = idx.directory
        // version 1: no calibration section
        try rewrite(path) { b, start in
            b.removeSubrange(start..<(start + 12 + 8 * points))
            Self.put(1, &b, 8)
        }
        let old = try HybridIndex(directory: path)
        XCTAssertNil(old.calibration)
        let r = try old.search(Array(held[0..<Self.dim]), k: 10)
        XCTAssertEqual(r.cost.listsRead, min(32, old.heads))
    }

    func testCorruptTablesAreRefused() throws {
        let (idx, _, _) = try build(1500, calibration: 200)
        let path = idx.directory
        let good = try Data(contentsOf: URL(fileURLWithPath: path + "/heads.bin"))
        let heads = UInt32(idx.heads)
        let edits: [(String, (inout [UInt8], Int) -> Void)] = [
            ("65 points", { b, s in Self.put(65, &b, s + 8) }),
            ("huge point count", { b, s in Self.put(UInt32.max, &b, s + 8) }),
            ("nprobe 0", { b, s in Self.put(0, &b, s + 12) }),
            ("nprobe beyond the lists", { b, s in Self.put(heads + 1, &b, s + 12) }),
            ("nprobe not increasing", { b, s in Self.put(9, &b, s + 12) }),
            ("recall NaN", { b, s in Self.put(Float.nan.bitPattern, &b, s + 16) }),
            ("recall above 1", { b, s in Self.put(Float(1.5).bitPattern, &b, s + 16) }),
            ("recall negative", { b, s in Self.put(Float(-0.5).bitPattern, &b, s + 16) }),
            ("k 0", { b, s in Self.put(0, &b, s + 4) }),
            ("no queries", { b, s in Self.put(0, &b, s) }),
            ("version 3", { b, _ in Self.put(3, &b, 8) }),
        ]
        for (what, edit) in edits {
            try good.write(to: URL(fileURLWithPath: path + "/heads.bin"))
            try rewrite(path, edit)
            XCTAssertThrowsError(try HybridIndex(directory: path), what) { e in
                XCTAssertTrue("\(e)".contains("heads.bin"), "\(what): \(e)")
            }
        }
        // a table cut short (the CRC recomputed over the shorter file) fails the size check
        try good.write(to: URL(fileURLWithPath: path + "/heads.bin"))
        try rewrite(path) { b, s in b.removeSubrange((s + 12)..<(s + 20)) }
        XCTAssertThrowsError(try HybridIndex(directory: path))
        try good.write(to: URL(fileURLWithPath: path + "/heads.bin"))
        XCTAssertNoThrow(try HybridIndex(directory: path))
    }
}
