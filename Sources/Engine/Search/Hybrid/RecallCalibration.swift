import Foundation

/// How many posting lists a query must read for a given recall: a table measured when the index
/// was built and stored in heads.bin (format version 2).
///
/// The build draws `queries` of its own vectors (a seeded sample), finds each one's `k` exact
/// nearest neighbours by brute force over every vector except itself, then searches the finished
/// index with each sample at a rising sequence of nprobe values (1, 2, ..., 8, then about 17% more
/// each step) and records the mean recall@k (the sample's own id is dropped from the results as
/// from the truth). It stops at recall 0.999, at all lists, when doubling nprobe gained less than
/// 0.002, after the work of 200 scans of the whole index, or at 64 points. Search parameters
/// other than nprobe are the defaults (`HybridSearchParameters`); inserts after the build are not
/// reflected.
public struct RecallCalibration: Sendable, Equatable, Encodable {
    /// One measured setting.
    public struct Point: Sendable, Equatable, Encodable {
        /// Posting lists read.
        public var nprobe: Int
        /// Mean recall@k of the sample queries at that nprobe.
        public var recall: Float

        /// A point.
        public init(nprobe: Int, recall: Float) {
            self.nprobe = nprobe
            self.recall = recall
        }
    }

    /// Sample queries measured.
    public var queries: Int
    /// Neighbours per query the recall counts (recall@k).
    public var k: Int
    /// Measured settings, nprobe increasing.
    public var points: [Point]

    /// A table.
    public init(queries: Int, k: Int, points: [Point]) {
        self.queries = queries
        self.k = k
        self.points = points
    }

    /// Sample queries a build measures by default.
    public static let defaultQueries = 1000
    /// Recall the CLI and the server aim for when no nprobe is given.
    public static let defaultTarget = 0.95

    /// The nprobe expected to deliver `target` mean recall, a real number: between the two
    /// measured points around the target, interpolated linearly; the first point when it already
    /// reaches the target; the last point (`reached` false) when no point does. A search reads
    /// floor(nprobe) lists, and one more for the fractional part of the queries (chosen by a hash
    /// of the query, so a query always gets the same answer): the mean recall then follows the
    /// interpolation instead of jumping to the next whole nprobe.
    public func nprobe(forRecall target: Double) -> (nprobe: Double, reached: Bool) {
        guard let first = points.first else { return (1, false) }
        if Double(first.recall) >= target { return (Double(first.nprobe), true) }
        for (a, b) in zip(points, points.dropFirst()) where Double(b.recall) >= target {
            let span = Double(b.recall) - Double(a.recall)
            let t = span > 0 ? (target - Double(a.recall)) / span : 1
            return (Double(a.nprobe) + min(1, max(0, t)) * Double(b.nprobe - a.nprobe), true)
        }
        return (Double(points.last!.nprobe), false)
    }

    /// The table in a line: the nprobe for recall 0.90, 0.95 and 0.99, and the best point.
    public var summary: String {
        func f(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }
        let at = [0.9, 0.95, 0.99].map { t -> String in
            let (np, reached) = nprobe(forRecall: t)
            return reached ? "\(f(t, 2)) at nprobe \(f(np, 2))" : "\(f(t, 2)) not reached"
        }
        let best = points.last.map { "; best \(f(Double($0.recall), 3)) at \($0.nprobe)" } ?? ""
        return "(recall@\(k), \(queries) sample queries): \(at.joined(separator: ", "))\(best)"
    }

    /// The table as read from a file is usable: sizes in range, nprobe increasing within 1...heads,
    /// recalls finite in 0...1.
    func isValid(heads: Int) -> Bool {
        guard queries >= 1, (1...Limits.neighbors).contains(k), points.count <= HeadsFile.maxCalibrationPoints else {
            return false
        }
        var last = 0
        for p in points {
            guard p.nprobe > last, p.nprobe <= heads, p.recall.isFinite, p.recall >= 0, p.recall <= 1 else {
                return false
            }
            last = p.nprobe
        }
        return true
    }

    /// The nprobe values a calibration tries, in order, up to `heads`.
    static func ladder(heads: Int) -> [Int] {
        var out: [Int] = []
        var p = 1
        while p < heads && out.count < HeadsFile.maxCalibrationPoints - 1 {
            out.append(p)
            p = p < 8 ? p + 1 : max(p + 1, Int(Double(p) * 1.17))
        }
        out.append(heads)
        return out
    }
}

extension IndexBuilder {
    // MARK: phase 10: recall calibration

    /// Measures the recall-to-nprobe table of the index written to the temporary directory (see
    /// `RecallCalibration`) and rewrites its heads.bin with the table.
    func calibrate() throws {
        let s = min(o.calibrationQueries, n)
        let k = min(10, n - 1)
        guard s >= 1, k >= 1 else { return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        // sample rows: a seeded choice of its own, so the rest of the build is unchanged by it
        var pick = SeededRandom(seed: o.seed ^ 0x6361_6C69_6272_6174)
        var rows = Set<Int>()
        while rows.count < s { rows.insert(Int(pick.next() % UInt64(n))) }
        let sample = rows.sorted()
        let queries = try sampleRows(sample)
        let truth = try exactNeighbours(queries, rows: sample, k: k)
        say("index: calibration ground truth for \(s) sample queries (\(elapsed()))")
        // pread: the calibration's reads must not count as the build's memory (a mapping would)
        let index = try HybridIndex(directory: tmp, io: .pread, kernels: kernels)
        let liveHeads = index.heads
        var points: [RecallCalibration.Point] = []
        var scored = 0
        let idOf: (Int) -> UInt64 = { r in self.ids.map { $0[r] } ?? UInt64(r) }
        let hits = UnsafeMutablePointer<Int>.allocate(capacity: s)
        let cost = UnsafeMutablePointer<Int>.allocate(capacity: s)
        defer {
            hits.deallocate()
            cost.deallocate()
        }
        for p in RecallCalibration.ladder(heads: liveHeads) {
            let failure = FirstError()
            Threads.parallelFor(s, threads: Threads.defaultCount) { i in
                do {
                    let q = Array(queries[(i * self.dim)..<((i + 1) * self.dim)])
                    let r = try index.search(q, k: k + 1, parameters: HybridSearchParameters(nprobe: p))
                    let own = idOf(sample[i])
                    let found = Set(r.neighbors.lazy.map(\.id).filter { $0 != own }.prefix(k))
                    hits[i] = truth[i].filter { found.contains(idOf($0)) }.count
                    cost[i] = r.cost.candidatesScored
                } catch {
                    failure.set(error)
                }
            }
            try failure.check()
            let recall = Float(Double((0..<s).reduce(0) { $0 + hits[$1] }) / Double(s * k))
            scored += (0..<s).reduce(0) { $0 + cost[$1] }
            points.append(.init(nprobe: p, recall: recall))
            // stop: recall near 1; doubling nprobe gained < 0.002; the work of 200 scans of the
            // whole index spent (a payload whose recall creeps up slowly must not scan it s times)
            let half = points.last(where: { 2 * $0.nprobe <= p })
            if recall >= 0.999 || (half.map { recall - $0.recall < 0.002 } ?? false) || scored > 200 * entries {
                break
            }
        }
        let c = RecallCalibration(queries: s, k: k, points: points)
        var file = headsFile!
        file.calibration = c
        let w = try AtomicFileWriter(path: tmp + "/heads.bin")
        try w.write(file.encoded(kernels: kernels))
        try w.commit()
        let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        say("index: calibrated in \(Int(ms)) ms \(c.summary)")
    }

    /// The sample rows (normalised for cosine, as the index holds them).
    func sampleRows(_ sample: [Int]) throws -> [Float] {
        var out = [Float](repeating: 0, count: sample.count * dim)
        try out.withUnsafeMutableBufferPointer { op in
            for (i, r) in sample.enumerated() { try load(r..<(r + 1), op.baseAddress! + i * dim) }
        }
        return out
    }

    /// Each sample's k nearest rows other than itself, by exact distance over one streamed pass
    /// of the input (row tiles of ~256 KiB, every query per tile, queries split across threads).
    func exactNeighbours(_ queries: [Float], rows sample: [Int], k: Int) throws -> [[Int]] {
        let s = sample.count
        let threads = max(1, min(Threads.defaultCount, s))
        var tops = [TopK](repeating: TopK(k: k + 1), count: s)
        let tile = max(16, (256 << 10) / (4 * dim))
        for b in 0..<blocks {
            let r = blockRange(b)
            try load(r, block)
            let blockBase = UnsafePointer(block)
            tops.withUnsafeMutableBufferPointer { tp in
                queries.withUnsafeBufferPointer { qp in
                    let tpb = tp.baseAddress!
                    let qpb = qp.baseAddress!
                    Threads.parallelFor(threads, threads: threads) { t in
                        let mine = (t * s / threads)..<((t + 1) * s / threads)
                        var dist = [Float](repeating: 0, count: tile)
                        dist.withUnsafeMutableBufferPointer { dp in
                            for t0 in stride(from: 0, to: r.count, by: tile) {
                                let c = min(tile, r.count - t0)
                                for i in mine {
                                    self.kernels.distancesUnchecked(
                                        self.o.metric, query: qpb + i * self.dim,
                                        rows: UnsafeRawPointer(blockBase + t0 * self.dim), type: .f32, count: c,
                                        dim: self.dim, stride: self.dim, into: dp.baseAddress!)
                                    tpb[i].push(dp.baseAddress!, count: c, base: r.lowerBound + t0)
                                }
                            }
                        }
                    }
                }
            }
        }
        return (0..<s).map { i in
            Array(tops[i].sorted().map { Int($0.id) }.filter { $0 != sample[i] }.prefix(k))
        }
    }
}

/// The first error of concurrent work, rethrown by `check`.
final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private var error: Error?
    func set(_ e: Error) {
        lock.lock()
        if error == nil { error = e }
        lock.unlock()
    }
    func check() throws {
        lock.lock()
        defer { lock.unlock() }
        if let error { throw error }
    }
}
