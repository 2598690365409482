import CKernels
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A memory/disk hybrid vector index (SPANN-style). Directory layout (docs/index-format.md):
///  - `heads.bin` (`HeadsFile`): header, coarse centroids, head centroids grouped by coarse
///    cluster, the list directory and code tables; loaded into RAM.
///  - `postings.bin`: posting lists at 4 KiB-aligned offsets (`PostingListLayout`), read per query.
///  - `vectors.bin` (code payloads): full f32 vectors with a CRC-32C per row, for re-ranking.
///  - `delta.log` (`DeltaLayer`): inserts and deletes since the build.
/// Searches are thread-safe. Built by `HybridIndex.build`, atomically.
public final class HybridIndex: @unchecked Sendable {
    /// The index directory.
    public let directory: String
    /// Dimension of the vectors.
    public let dim: Int
    /// Distance of the index.
    public let metric: Metric
    /// What the posting lists hold.
    public let payload: PostingPayload
    /// Codebooks of a `.pq8` or `.pq4` index (in RAM).
    public let pq: ProductQuantizer?
    /// Rotation of a `.binary` index.
    let rotation: SignRotation?
    /// Vectors in the base index (inserts not counted).
    public let count: Int
    /// Posting lists.
    public let heads: Int
    /// Coarse clusters above the heads.
    public let coarse: Int
    /// Posting entries (vector replicas).
    public let entries: Int
    /// Recall-to-nprobe table measured by the build (nil: none, see `RecallCalibration`).
    public let calibration: RecallCalibration?
    let layout: PostingListLayout
    let coarseCentroids: [Float]
    let coarseStart: [UInt32]
    /// Head centroids as f16 (built f16-representable: the same values the build used).
    let headTable: HeadTable
    let lists: [HeadsFile.ListEntry]
    let postings: IndexDataFile
    let vectors: IndexDataFile?
    /// Size of heads.bin.
    let headsFileBytes: Int
    let kernels: Kernels
    /// How posting lists are read.
    public let io: IndexIO
    /// Replication settings of the build, reused when inserting.
    let maxReplicas: Int
    let replicaEpsilon: Float
    let rngFactor: Float
    /// Inserts, deletes and their log (`delta.log`); always present (empty when no log exists).
    let delta: DeltaLayer
    /// Whether inserts and deletes are allowed.
    public let writable: Bool
    /// io_uring rings, one per concurrent search (IndexIO.uring).
    let rings = UringReaders()
    /// One flag per list: its checksum has been verified (ChecksumPolicy.once).
    let verified: UnsafeMutablePointer<UInt8>
    /// One bit per vectors.bin row (code payloads): its checksum has been verified (`.once`).
    let rowsVerified: UnsafeMutablePointer<UInt64>?
    var rowWords: Int { payload.isCoded ? (count + 63) / 64 : 0 }

    /// Opens an index. `writable`: inserts and deletes are allowed and appended to
    /// `delta.log` (fsync'ed per call); otherwise the log, if any, is replayed read-only.
    /// `io`: how posting lists are read; `.uring` falls back to `.pread` where io_uring is unavailable.
    /// `repair`: a delta log with a corrupt record in its middle (refused otherwise) is rewritten
    /// with every record that verifies.
    public init(
        directory: String, io: IndexIO = .mapped, writable: Bool = false, repair: Bool = false,
        kernels: Kernels = .default
    ) throws {
        self.directory = directory
        self.kernels = kernels
        self.io = io == .uring && UringReader() == nil ? .pread : io
        self.writable = writable
        let h = try HeadsFile(path: directory + "/heads.bin", kernels: kernels)
        headsFileBytes = h.byteCount
        dim = h.dim
        metric = h.metric
        payload = h.payload
        count = h.count
        heads = h.heads
        coarse = h.coarse
        entries = h.entries
        calibration = h.calibration
        maxReplicas = h.maxReplicas
        rngFactor = h.rngFactor
        replicaEpsilon = h.replicaEpsilon
        coarseCentroids = h.coarseCentroids
        coarseStart = h.coarseStart
        headTable = HeadTable(bits: h.headBits, dim: h.dim)
        lists = h.lists
        layout = PostingListLayout(payload: h.payload, dim: h.dim, codeWidth: h.codeWidth)
        switch h.payload {
        case .pq8, .pq4:
            pq = try ProductQuantizer(
                dim: dim, subquantizers: h.codeWidth, bits: h.payload == .pq8 ? 8 : 4, centroids: h.codeValues)
            rotation = nil
        case .binary:
            guard h.codeValues.allSatisfy({ $0 == 1 || $0 == -1 }) else {
                throw EngineError.invalidFile("\(directory)/heads.bin: bad rotation signs")
            }
            pq = nil
            rotation = SignRotation(dim: dim, signs: h.codeValues)
        case .f32, .f16:
            pq = nil
            rotation = nil
        }
        postings = try IndexDataFile(
            path: directory + "/postings.bin", expectedSize: h.postingsBytes, map: io == .mapped,
            what: "the header's \(h.postingsBytes) bytes")
        if h.payload.isCoded {
            let rowBytes = 4 * h.dim + 4
            vectors = try IndexDataFile(
                path: directory + "/vectors.bin",
                expectedSize: CheckedSize.product(h.count, rowBytes, what: "\(directory)/heads.bin vector count"),
                map: io == .mapped, what: "\(h.count) rows of \(rowBytes) bytes")
        } else {
            vectors = nil
        }
        verified = .allocate(capacity: heads)
        verified.initialize(repeating: 0, count: heads)
        if h.payload.isCoded {
            let words = (h.count + 63) / 64
            rowsVerified = .allocate(capacity: words)
            rowsVerified!.initialize(repeating: 0, count: words)
        } else {
            rowsVerified = nil
        }
        delta = try DeltaLayer(path: directory + "/delta.log", dim: dim, writable: writable, kernels: kernels)
        try delta.replay(repair: repair) { id, vector in
            if let vector { try self.placeInsert(id, vector) } else { self.placeDelete(id) }
        }
    }

    deinit {
        verified.deallocate()
        rowsVerified?.deallocate()
    }

    /// Bytes this index keeps in RAM (centroids, the list directory, code tables, and the
    /// verified-checksum flags: a byte per list, a bit per vectors.bin row).
    public var ramBytes: Int {
        4 * (coarseCentroids.count + coarseStart.count) + 2 * headTable.bits.count + HeadsFile.entryBytes * heads
            + codeSectionBytes + heads + 8 * rowWords
    }
    /// Codebooks (PQ) or rotation signs (binary) in heads.bin and in RAM.
    var codeSectionBytes: Int {
        (pq.map { 4 + 4 * $0.centroids.count } ?? 0) + (rotation.map { 4 + 4 * $0.padded } ?? 0)
    }
    /// Bytes on disk (all files but the delta log).
    public var diskBytes: Int { postings.size + (vectors?.size ?? 0) + headsFileBytes }

    // MARK: search

    /// The scanner of this index's payload for one (normalised) query.
    func makeScanner(_ q: [Float]) throws -> any ListScanner {
        switch payload {
        case .f32, .f16:
            return VectorScanner(query: q, metric: metric, type: payload == .f16 ? .f16 : .f32, kernels: kernels)
        case .pq8: return try PQ8Scanner(query: q, pq: pq!, metric: metric, kernels: kernels)
        case .pq4: return try PQ4Scanner(query: q, pq: pq!, metric: metric, heads: headTable, kernels: kernels)
        case .binary:
            return BinaryScanner(query: q, rotation: rotation!, metric: metric, heads: headTable, kernels: kernels)
        }
    }

    /// A reader of `file` for one query (`io`); uring readers share the query's ring.
    func makeReader(_ file: IndexDataFile, ring: UringReader?) -> any ExtentReader {
        if let base = file.mapping { return MappedExtents(base: base) }
        if let ring { return UringExtents(reader: ring, fd: file.fd, path: file.path) }
        return PreadExtents(fd: file.fd, path: file.path)
    }

    /// The k nearest stored vectors of `query` (fewer if the probed lists hold fewer), nearest
    /// first, and what the search cost. Throws on a wrong dimension, NaN, k < 1, or a corrupt list.
    public func search(_ query: [Float], k: Int, parameters p: HybridSearchParameters = .init()) throws -> (
        neighbors: [SearchHit], cost: SearchCost
    ) {
        try require(query.count == dim, "query has \(query.count) values, the index holds \(dim)-d vectors")
        try require(k >= 1, "k must be >= 1, got \(k)")
        // never more neighbours than vectors: a huge k must not become a huge allocation
        let live = delta.snapshot()
        let limit = min(k, count + live.location.count)
        let p0 = try resolved(p)
        try query.withUnsafeBufferPointer { try requireFinite($0, "query") }
        var q = query
        if metric == .cosine {
            let n = q.reduce(0) { $0 + $1 * $1 }.squareRoot()
            try require(n > 0, "a cosine query must not be the zero vector")
            q = q.map { $0 / n }
        }
        var p = p0
        if p.extraListFraction > 0 {
            // one list more for this share of queries, chosen by the query's bits (deterministic)
            let h = q.withUnsafeBytes { kernels.crc32c($0) }
            if Double(h) < p.extraListFraction * 4_294_967_296 { p.nprobe += 1 }
        }
        let probed = rankHeads(q, p)
        var cost = SearchCost()
        var top = TopK(k: limit)
        var seen = IDSet(expected: probed.reduce(0) { $0 + Int(lists[$1].count) })
        let ring = io == .uring ? try rings.take() : nil
        defer { if let ring { rings.put(ring) } }
        var scanner = try makeScanner(q)
        var approx = TopK(k: scanner.approximate ? max(limit, min(p.rerank, count)) : 1)
        // lists in file order; empty ones are skipped
        let order = probed.sorted { lists[$0].offset < lists[$1].offset }.filter { lists[$0].count > 0 }
        let reader = makeReader(postings, ring: ring)
        try reader.prepare(
            order.map {
                FileExtent(
                    offset: Int(lists[$0].offset), length: Int(lists[$0].bytes),
                    readBefore: ck_atomic_flag_get(verified, $0) != 0)
            })
        var dist = [Float]()
        var cand = [UInt32]()
        let approximate = scanner.approximate
        let filter = p.filter
        let tombstones = live.tombstones
        for (i, h) in order.enumerated() {
            let e = lists[h]
            let n = Int(e.count)
            let raw = try reader.bytes(i)
            reader.prefetch(i + 1) // the next list's first lines load while this one is scanned
            try verify(raw, list: h, policy: p.verify)
            let list = PostingList(raw: raw, count: n, layout: layout)
            if dist.count < n { dist = [Float](repeating: 0, count: n) }
            if approximate && cand.count < n { cand = [UInt32](repeating: 0, count: n) }
            try dist.withUnsafeMutableBufferPointer { dp in
                let dd = dp.baseAddress!
                // candidates: cheap distance bound first, then id checks, then the heap
                if approximate {
                    try cand.withUnsafeMutableBufferPointer { cp in
                        let m = try scanner.candidates(
                            list, head: h, bound: approx.bound, into: dd, indices: cp.baseAddress!)
                        for c in 0..<m {
                            let j = Int(cp[c])
                            guard approx.mayAccept(dd[j]) else { continue }
                            let id = list.id(j)
                            if let filter, !filter(id) { continue }
                            if !tombstones.isEmpty && tombstones.contains(id) { continue }
                            if approx.accepts(dd[j], id) && seen.insert(id, value: list.row(j)) {
                                approx.push(dd[j], id)
                            }
                        }
                    }
                } else {
                    try scanner.scan(list, head: h, into: dd)
                    for j in 0..<n where top.mayAccept(dd[j]) {
                        let id = list.id(j)
                        if let filter, !filter(id) { continue }
                        if !tombstones.isEmpty && tombstones.contains(id) { continue }
                        if top.accepts(dd[j], id) && seen.insert(id) { top.push(dd[j], id) }
                    }
                }
            }
            cost.listsRead += 1
            cost.bytesRead += Int(e.bytes)
            cost.pagesRead += (Int(e.bytes) + PostingListLayout.page - 1) / PostingListLayout.page
            cost.candidatesScored += n
        }
        if approximate {
            try rerank(
                approx.sorted(), seen, q, into: &top, cost: &cost, reader: makeReader(vectors!, ring: ring),
                policy: p.verify)
        }
        try searchInserted(q, heads: probed, live: live, filter: p.filter, top: &top, seen: &seen, cost: &cost)
        return (top.sorted(), cost)
    }

    /// The parameters with nprobe chosen for the target recall (where one applies), checked.
    public func resolved(_ p: HybridSearchParameters) throws -> HybridSearchParameters {
        var p = p
        if let t = p.targetRecall {
            try require(t.isFinite && t >= 0 && t <= 1, "target recall must be in 0...1, got \(t)")
            if let c = calibration {
                let x = c.nprobe(forRecall: t).nprobe
                p.nprobe = Int(x.rounded(.down)) // clears the target: the result is a plain nprobe
                p.extraListFraction = x - x.rounded(.down)
            }
        }
        try require(p.nprobe >= 1, "nprobe must be >= 1, got \(p.nprobe)")
        return p
    }

    /// Checks list h's CRC-32C as the policy asks (`.once`: the first time this process reads it).
    func verify(_ raw: UnsafeRawPointer, list h: Int, policy: ChecksumPolicy) throws {
        guard policy == .always || (policy == .once && ck_atomic_flag_get(verified, h) == 0) else { return }
        guard kernels.crc32c(UnsafeRawBufferPointer(start: raw, count: Int(lists[h].bytes))) == lists[h].crc else {
            throw EngineError.invalidFile("\(postings.path): posting list \(h) fails its checksum (corrupt file)")
        }
        ck_atomic_flag_set(verified, h, 1) // concurrent verifiers may set it together (atomic)
    }

    /// Inserted vectors of the probed heads (held in RAM), scored exactly.
    func searchInserted(
        _ q: [Float], heads probed: [Int], live: DeltaLayer.State, filter: (@Sendable (UInt64) -> Bool)?,
        top: inout TopK, seen: inout IDSet, cost: inout SearchCost
    ) throws {
        var dist = [Float]()
        for h in probed {
            guard let l = live.lists[h], !l.ids.isEmpty else { continue }
            if dist.count < l.ids.count { dist = [Float](repeating: 0, count: l.ids.count) }
            q.withUnsafeBufferPointer { qp in
                l.vectors.withUnsafeBytes { vb in
                    dist.withUnsafeMutableBufferPointer { dp in
                        kernels.distancesUnchecked(
                            metric, query: qp.baseAddress!, rows: vb.baseAddress!, type: .f32, count: l.ids.count,
                            dim: dim, stride: dim, into: dp.baseAddress!)
                    }
                }
            }
            for (i, id) in l.ids.enumerated() {
                if let filter, !filter(id) { continue }
                if top.accepts(dist[i], id) && seen.insert(id) { top.push(dist[i], id) }
            }
            cost.candidatesScored += l.ids.count
        }
    }

    /// Exact distances of code candidates from their full vectors in vectors.bin, each row's CRC
    /// checked as the policy asks (`.once`: the first time this process reads the row).
    func rerank(
        _ cands: [SearchHit], _ rows: IDSet, _ q: [Float], into top: inout TopK, cost: inout SearchCost,
        reader: any ExtentReader, policy: ChecksumPolicy
    ) throws {
        let rb = 4 * dim + 4
        let candRows = try cands.map { c -> Int in
            let row = Int(rows.value(of: c.id)!)
            guard row < count else {
                throw EngineError.invalidFile("\(postings.path): row \(row) out of range (corrupt list)")
            }
            return row
        }
        try reader.prepare(
            candRows.map {
                FileExtent(offset: $0 * rb, length: rb, readBefore: ck_atomic_bit_get(rowsVerified!, $0) != 0)
            })
        var d: Float = 0
        reader.prefetch(1)
        for (ci, c) in cands.enumerated() {
            let r = try reader.bytes(ci)
            reader.prefetch(ci + 2) // rows sit at random places: start the misses two rows ahead
            let row = candRows[ci]
            if policy == .always || (policy == .once && ck_atomic_bit_get(rowsVerified!, row) == 0) {
                let stored = UInt32(littleEndian: r.loadUnaligned(fromByteOffset: 4 * dim, as: UInt32.self))
                guard kernels.crc32c(UnsafeRawBufferPointer(start: r, count: 4 * dim)) == stored else {
                    throw EngineError.invalidFile(
                        "\(vectors!.path): vector row \(row) fails its checksum (corrupt file)")
                }
                ck_atomic_bit_set(rowsVerified!, row)
            }
            q.withUnsafeBufferPointer { qp in
                kernels.distancesUnchecked(
                    metric, query: qp.baseAddress!, rows: r, type: .f32, count: 1, dim: dim, stride: dim, into: &d)
            }
            cost.bytesRead += rb
            cost.pagesRead += 1
            if top.accepts(d, c.id) { top.push(d, c.id) }
        }
    }

    /// The navigation structure over this index's heads (f16 centroids).
    func withNavigation<R>(_ body: (Navigation) throws -> R) rethrows -> R {
        try coarseCentroids.withUnsafeBufferPointer { cp in
            try headTable.bits.withUnsafeBufferPointer { hp in
                try body(
                    Navigation(
                        coarse: cp.baseAddress!, coarseCount: coarse, coarseStart: coarseStart,
                        heads: UnsafeRawPointer(hp.baseAddress!), headType: .f16, dim: dim, kernels: kernels))
            }
        }
    }

    /// Heads to read for q: nearest coarse clusters, then their heads ranked, pruned, cut at nprobe.
    func rankHeads(_ q: [Float], _ p: HybridSearchParameters) -> [Int] {
        let cp0 = min(coarse, p.coarseProbe > 0 ? p.coarseProbe : max(4, p.nprobe / 4))
        let cand = q.withUnsafeBufferPointer { qp in
            withNavigation { $0.nearestHeads(qp.baseAddress!, metric: metric, probe: cp0, k: p.nprobe) }
        }
        if let eps = p.pruneEpsilon, metric != .innerProduct, let best = cand.first?.distance {
            // cosine distances are -cos; 2 - 2cos is the squared L2 of unit vectors
            func sq(_ d: Float) -> Float { metric == .cosine ? 2 + 2 * d : d }
            let limit = (1 + eps) * sq(best)
            return cand.filter { sq($0.distance) <= limit }.map { Int($0.id) }
        }
        return cand.map { Int($0.id) }
    }
}

/// An index data file (postings.bin, vectors.bin): opened read-only, size checked against what
/// heads.bin says, memory-mapped when the index reads it that way.
final class IndexDataFile {
    let path: String
    let fd: Int32
    let size: Int
    let mapping: UnsafeRawPointer?

    init(path: String, expectedSize: Int, map: Bool, what: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) // a FIFO must not block the open
        guard fd >= 0 else { throw EngineError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw EngineError.invalidFile("\(path): not a regular file")
        }
        guard Int(st.st_size) == expectedSize else {
            let actual = Int(st.st_size)
            close(fd)
            throw EngineError.invalidFile(
                "\(path): \(actual) bytes, expected \(what) (truncated or from another build)")
        }
        size = expectedSize
        if map && size > 0 {
            let m = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0)
            guard let m, m != MAP_FAILED else {
                close(fd)
                throw EngineError.io("cannot map \(path): \(String(cString: strerror(errno)))")
            }
            madvise(m, size, MADV_RANDOM)
            mapping = UnsafeRawPointer(m)
        } else {
            // pread / io_uring read each extent whole: read-ahead past it only brings in bytes of
            // neighbouring lists or rows that no query asked for, and on an index larger than
            // the page cache evicts ones that will be (synthetic 1M, 128 MiB cgroup: 3x the
            // disk reads per query; docs/benchmarks.md)
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM)
            mapping = nil
        }
    }

    deinit {
        if let mapping { munmap(UnsafeMutableRawPointer(mutating: mapping), size) }
        close(fd)
    }
}
