import CKernels
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Build options of a `HybridIndex` (SPANN-style: heads in memory, posting lists on disk).
public struct HybridIndexOptions: Sendable {
    /// Distance: squared L2, inner product, or cosine (vectors normalised at build and query time).
    public var metric: Metric = .l2
    /// Heads (posting lists) per vector. SPANN uses 0.1-0.2; here 0.03 with f16 lists answered
    /// faster at equal recall than 0.1 on all three benchmark sets (fewer, longer lists scan
    /// better; half the navigation work; RAM ~1.6% of the raw vectors). Default 0.03.
    public var headFraction: Double = 0.03
    /// Most posting lists a vector is written to (RNG rule; <= 8).
    public var maxReplicas: Int = 8
    /// A vector is considered for a head only if d(x, head) <= (1 + replicaEpsilon) d(x, nearest
    /// head) (squared L2). Default 1.0.
    public var replicaEpsilon: Float = 1.0
    /// RNG rule relaxation: a candidate head h is rejected if rngFactor x d(h, g) < d(x, h) for an
    /// accepted head g (squared L2). 1 is the plain rule; heads here are centroids, which sit
    /// closer to each other than data points do, so larger values keep more replicas.
    public var rngFactor: Float = 2.0
    /// Longest posting list; replicas farthest from the head are dropped first (a vector's nearest
    /// head always keeps it). 0: automatic, 4x the mean list length (at least 64).
    public var postingCap: Int = 0
    /// What the posting lists hold: f32 or f16 vectors (exact or near-exact distances), or codes
    /// scanned for candidates that are re-ranked exactly from full vectors kept in `vectors.bin`:
    /// 8-bit PQ (float tables), 4-bit PQ of the residual to the head (fast-scan, uint8 tables in
    /// registers), or binary sign codes of the rotated residual (Hamming). See `PostingPayload`.
    public var payload: PostingPayload = .f32
    /// PQ sub-quantizers (0: `.pq8` dim / 8; `.pq4` dim / 2, or dim / 4, ... so that M <= 256).
    public var pqSubquantizers: Int = 0
    /// Lloyd iterations per k-means level.
    public var kmeansIterations: Int = 8
    /// Coarse clusters (the navigation level above the heads): 0 = sqrt(heads).
    public var coarseClusters: Int = 0
    public var seed: UInt64 = 1
    /// Rows per block when the build streams its input (0: about 8 MiB of f32 per block).
    public var blockRows: Int = 0
    /// Progress messages during long builds (nil: silent).
    public var progress: (@Sendable (String) -> Void)? = nil

    public init() {}
}

/// Search effort of one query.
public struct HybridSearchParameters: Sendable {
    /// Posting lists read (nearest heads).
    public var nprobe: Int = 32
    /// Coarse clusters whose heads are ranked (0: automatic, max(4, nprobe / 4)).
    public var coarseProbe: Int = 0
    /// Query-aware pruning (L2 and cosine): skip head i if d(q, c_i) > (1 + eps) d(q, c_1) in
    /// squared L2 (cosine: on 2 - 2 cos). nil: read all nprobe lists.
    public var pruneEpsilon: Float? = nil
    /// Checksum policy for posting lists: `.once` verifies each list's CRC-32C the first time
    /// this process reads it (default), `.always` on every read, `.never` skips it.
    public var verify: ChecksumPolicy = .once
    /// PQ payloads: candidates (by approximate distance) re-ranked with their full vectors.
    public var rerank: Int = 100
    /// Only ids for which this returns true are returned (filtered search).
    public var filter: (@Sendable (UInt64) -> Bool)? = nil

    public init(nprobe: Int = 32) { self.nprobe = nprobe }
}

public enum ChecksumPolicy: Sendable { case once, always, never }

/// Posting-list payload of a hybrid index.
/// Lists hold per entry (besides its UInt64 id):
///  - `f32`, `f16`: the vector (4d or 2d bytes); exact (f16: to half precision) distances.
///  - `pq8`: a vectors.bin row number and M 8-bit PQ codes of the vector (M bytes).
///  - `pq4`: a row number and M 4-bit PQ codes of the residual x - head, packed in blocks of 32
///    for fast-scan (M / 2 bytes).
///  - `binary`: a row number, ||x - head|| and the P sign bits of the rotated residual (P / 8
///    bytes, P the power of two >= d); approximate distance from the Hamming angle estimate.
/// Code payloads keep full f32 vectors, with a CRC per row, in vectors.bin for re-ranking.
public enum PostingPayload: String, Sendable, CaseIterable {
    case f32, f16, pq8, pq4, binary
    static let order: [PostingPayload] = [.f32, .f16, .pq8, .pq4, .binary]
    var code: Int { Self.order.firstIndex(of: self)! }
    /// Candidates are approximate and re-ranked from vectors.bin.
    var isCoded: Bool { self != .f32 && self != .f16 }
}

/// How posting lists are read. `.mapped` (default): the postings file is memory-mapped; the
/// lists a query needs are announced with madvise(WILLNEED) (the kernel reads them
/// concurrently) and scanned in place, no copy. `.pread`: each list is read into a buffer with
/// pread (one I/O per list), the access pattern of an index far larger than the page cache.
/// `.uring`: all lists of a query (and its re-rank rows) read in one io_uring batch, up to 64
/// in flight (Linux); where io_uring is unavailable the index opens with `.pread` instead.
public enum IndexIO: String, Sendable, CaseIterable { case mapped, pread, uring }

/// One result and the work one search did.
public struct SearchHit: Sendable, Equatable {
    public var id: UInt64
    public var distance: Float
}

public struct SearchCost: Sendable {
    public var listsRead = 0
    public var bytesRead = 0
    public var pagesRead = 0
    public var candidatesScored = 0
}

/// A memory/disk hybrid vector index (SPANN-style). Directory layout:
///  - `heads.bin`: header, coarse centroids, head centroids grouped by coarse cluster, per-list
///    (offset, bytes, count, CRC-32C), and a CRC-32C of the whole file; loaded into RAM.
///  - `postings.bin`: posting lists at 4 KiB-aligned offsets, each `count` UInt64 ids followed
///    by `count` vectors (f32 or f16); read with pread per query.
/// Opened read-only; searches are thread-safe. Built by `HybridIndex.build`, atomically (a
/// temporary directory renamed into place once every file is written and synced).
public final class HybridIndex: @unchecked Sendable {
    public static let magic = Array("EHIDX001".utf8)
    public static let version: UInt32 = 1
    static let page = 4096
    static let headerBytes = 64
    static let entryBytes = 24

    public let directory: String
    public let dim: Int
    public let metric: Metric
    public let payload: PostingPayload
    /// Codebooks of a `.pq8` or `.pq4` index (in RAM).
    public let pq: ProductQuantizer?
    /// Rotation of a `.binary` index.
    let rotation: SignRotation?
    let vectorsFD: Int32
    let vectorsMapping: UnsafeRawPointer?
    let vectorsSize: Int
    public let count: Int
    public let heads: Int
    public let coarse: Int
    public let entries: Int
    let coarseCentroids: [Float]
    let coarseStart: [UInt32]
    /// Head centroids as f16 bits (built f16-representable: the same values the build used).
    let headCentroids: [UInt16]
    let listOffset: [UInt64]
    let listBytes: [UInt32]
    let listCount: [UInt32]
    let listCRC: [UInt32]
    let postingsFD: Int32
    /// Size of heads.bin (checked against the header's counts at open).
    let headsFileBytes: Int
    let postingsSize: Int
    let kernels: Kernels
    public let io: IndexIO
    /// Replication settings of the build, reused when inserting.
    let maxReplicas: Int
    let replicaEpsilon: Float
    let rngFactor: Float
    /// Inserts, deletes and their log (`delta.log`); always present (empty when no log exists).
    let delta: DeltaLayer
    public let writable: Bool
    let mapping: UnsafeRawPointer?
    /// io_uring readers, one per concurrent search (IndexIO.uring).
    let readers = UringReaders()
    /// One flag per list: its checksum has been verified (ChecksumPolicy.once).
    let verified: UnsafeMutablePointer<UInt8>

    // MARK: open

    /// Opens an index. `writable`: inserts and deletes are allowed and appended to
    /// `delta.log` (fsync'ed per call); otherwise the log, if any, is replayed read-only.
    public init(directory: String, io: IndexIO = .mapped, writable: Bool = false, kernels: Kernels) throws {
        self.directory = directory
        self.kernels = kernels
        self.io = io == .uring && UringReader() == nil ? .pread : io
        self.writable = writable
        let hp = directory + "/heads.bin"
        let pp = directory + "/postings.bin"
        guard let data = FileManager.default.contents(atPath: hp) else {
            throw EngineError.io("cannot read \(hp): not an index directory (or an interrupted build)")
        }
        let b = [UInt8](data)
        headsFileBytes = b.count
        func fail(_ m: String) -> EngineError { .invalidFile("\(hp): \(m)") }
        guard b.count >= Self.headerBytes + 4, Array(b[0..<8]) == Self.magic else {
            throw fail("not an Engine hybrid index (bad magic or truncated)")
        }
        let stored = b.withUnsafeBytes {
            UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: b.count - 4, as: UInt32.self))
        }
        let actual = b.withUnsafeBytes { kernels.crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<(b.count - 4)])) }
        guard stored == actual else { throw fail("checksum mismatch (corrupt or truncated file)") }
        func u32(_ o: Int) -> Int {
            b.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt32.self))) }
        }
        func u64(_ o: Int) -> Int {
            b.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt64.self))) }
        }
        guard u32(8) == Int(Self.version) else {
            throw fail("version \(u32(8)); this build reads version \(Self.version)")
        }
        dim = u32(12)
        guard let m = [Metric.l2, .innerProduct, .cosine][safe: u32(16)], let pl = PostingPayload.order[safe: u32(20)]
        else {
            throw fail("unknown metric or payload type")
        }
        metric = m
        payload = pl
        count = u64(24)
        heads = u32(32)
        coarse = u32(36)
        postingsSize = u64(40)
        entries = u64(48)
        maxReplicas = max(1, min(8, u32(56) & 0xFFFF))
        rngFactor = u32(56) >> 16 == 0 ? 1 : Float(u32(56) >> 16) / 256
        replicaEpsilon = Float(bitPattern: UInt32(u32(60)))
        guard dim > 0, heads > 0, coarse > 0 else {
            throw fail("inconsistent header (dim \(dim), heads \(heads), coarse \(coarse))")
        }
        let tableEnd =
            Self.headerBytes + 4 * coarse * dim + 4 * (coarse + 1) + 4 * heads * dim + Self.entryBytes * heads
        // code section: M and the PQ codebooks (pq8, pq4), or P and the rotation's signs (binary)
        var pqM = 0
        if pl.isCoded {
            guard b.count >= tableEnd + 8 else { throw fail("truncated before the code section") }
            pqM = u32(tableEnd)
            if pl == .binary {
                guard pqM >= 64, pqM & (pqM - 1) == 0, pqM >= dim, pqM < 2 * max(64, dim) else {
                    throw fail("bad binary code width \(pqM)")
                }
            } else {
                guard pqM > 0, dim % pqM == 0, pl == .pq8 || pqM <= 256 else {
                    throw fail("bad PQ sub-quantizer count \(pqM)")
                }
            }
        }
        let codeSection =
            [PostingPayload.pq8: 4 + 4 * 256 * dim, .pq4: 4 + 4 * 16 * dim, .binary: 4 + 4 * pqM][pl] ?? 0
        let expected = tableEnd + codeSection + 4
        guard b.count == expected else { throw fail("size \(b.count), expected \(expected)") }
        func floats(_ o: Int, _ n: Int) -> [Float] {
            b.withUnsafeBytes { r in
                (0..<n).map {
                    Float(
                        bitPattern: UInt32(littleEndian: r.loadUnaligned(fromByteOffset: o + 4 * $0, as: UInt32.self)))
                }
            }
        }
        var o = Self.headerBytes
        coarseCentroids = floats(o, coarse * dim)
        o += 4 * coarse * dim
        coarseStart = (0...coarse).map { UInt32(u32(o + 4 * $0)) }
        o += 4 * (coarse + 1)
        headCentroids = floats(o, heads * dim).map { Float16($0).bitPattern }
        o += 4 * heads * dim
        var off: [UInt64] = []
        var bytes: [UInt32] = []
        var cnt: [UInt32] = []
        var crc: [UInt32] = []
        for h in 0..<heads {
            let e = o + Self.entryBytes * h
            off.append(UInt64(u64(e)))
            bytes.append(UInt32(u32(e + 8)))
            cnt.append(UInt32(u32(e + 12)))
            crc.append(UInt32(u32(e + 16)))
        }
        listOffset = off
        listBytes = bytes
        listCount = cnt
        listCRC = crc
        pq =
            pl == .pq8 || pl == .pq4
            ? try ProductQuantizer(
                dim: dim, subquantizers: pqM, bits: pl == .pq8 ? 8 : 4,
                centroids: floats(tableEnd + 4, (pl == .pq8 ? 256 : 16) * dim)) : nil
        if pl == .binary {
            let s = floats(tableEnd + 4, pqM)
            guard s.allSatisfy({ $0 == 1 || $0 == -1 }) else { throw fail("bad rotation signs") }
            rotation = SignRotation(dim: dim, signs: s)
        } else {
            rotation = nil
        }
        guard coarseStart.first == 0, coarseStart.last == UInt32(heads),
            zip(coarseStart, coarseStart.dropFirst()).allSatisfy({ $0 <= $1 })
        else {
            throw fail("coarse-to-head table is inconsistent")
        }
        for h in 0..<heads {
            guard Int(listBytes[h]) == Self.listBytes(pl, count: Int(listCount[h]), dim: dim, m: pqM),
                Int(listOffset[h]) % Self.page == 0,
                Int(listOffset[h]) + Int(listBytes[h]) <= postingsSize
            else { throw fail("posting list \(h) entry is inconsistent") }
        }
        postingsFD = open(pp, O_RDONLY | O_CLOEXEC)
        guard postingsFD >= 0 else { throw EngineError.io("cannot open \(pp): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(postingsFD, &st) == 0, Int(st.st_size) == postingsSize else {
            close(postingsFD)
            throw EngineError.invalidFile(
                "\(pp): size differs from the header's \(postingsSize) bytes (truncated or from another build)")
        }
        if io == .mapped && postingsSize > 0 {
            let m = mmap(nil, postingsSize, PROT_READ, MAP_SHARED, postingsFD, 0)
            guard let m, m != MAP_FAILED else {
                close(postingsFD)
                throw EngineError.io("cannot map \(pp): \(String(cString: strerror(errno)))")
            }
            madvise(m, postingsSize, MADV_RANDOM)
            mapping = UnsafeRawPointer(m)
        } else {
            mapping = nil
        }
        verified = .allocate(capacity: heads)
        verified.initialize(repeating: 0, count: heads)
        if pl.isCoded {
            let vp = directory + "/vectors.bin"
            vectorsFD = open(vp, O_RDONLY | O_CLOEXEC)
            guard vectorsFD >= 0 else { throw EngineError.io("cannot open \(vp): \(String(cString: strerror(errno)))") }
            var vs = stat()
            vectorsSize = fstat(vectorsFD, &vs) == 0 ? Int(vs.st_size) : -1
            guard vectorsSize == count * (4 * dim + 4) else {
                throw EngineError.invalidFile(
                    "\(vp): \(vectorsSize) bytes, expected \(count * (4 * dim + 4)) (truncated or from another build)")
            }
            if io == .mapped {
                let m = mmap(nil, vectorsSize, PROT_READ, MAP_SHARED, vectorsFD, 0)
                guard let m, m != MAP_FAILED else { throw EngineError.io("cannot map \(vp)") }
                madvise(m, vectorsSize, MADV_RANDOM)
                vectorsMapping = UnsafeRawPointer(m)
            } else {
                vectorsMapping = nil
            }
        } else {
            vectorsFD = -1
            vectorsMapping = nil
            vectorsSize = 0
        }
        delta = try DeltaLayer(path: directory + "/delta.log", dim: dim, writable: writable, kernels: kernels)
        try delta.replay { id, vector in
            if let vector { try self.placeInsert(id, vector) } else { self.placeDelete(id) }
        }
    }

    /// Bytes of a posting list of `count` entries (m: PQ sub-quantizers, or the binary code width P).
    static func listBytes(_ p: PostingPayload, count n: Int, dim: Int, m: Int) -> Int {
        switch p {
        case .f32: return n * (8 + 4 * dim)
        case .f16: return n * (8 + 2 * dim)
        case .pq8: return n * (12 + m)
        case .pq4: return 12 * n + (n == 0 ? 0 : ck_pq4_packed_bytes(n, m))
        case .binary: return n * (16 + m / 8)
        }
    }

    deinit {
        if let vectorsMapping { munmap(UnsafeMutableRawPointer(mutating: vectorsMapping), vectorsSize) }
        if vectorsFD >= 0 { close(vectorsFD) }
        if let mapping { munmap(UnsafeMutableRawPointer(mutating: mapping), postingsSize) }
        close(postingsFD)
        verified.deallocate()
    }

    /// Bytes this index keeps in RAM (centroids and the list directory).
    public var ramBytes: Int {
        4 * (coarseCentroids.count + coarseStart.count) + 2 * headCentroids.count + Self.entryBytes * heads
            + codeSectionBytes
    }
    /// Codebooks (PQ) or rotation signs (binary) in heads.bin and in RAM.
    var codeSectionBytes: Int {
        (pq.map { 4 + 4 * $0.centroids.count } ?? 0) + (rotation.map { 4 + 4 * $0.padded } ?? 0)
    }
    /// Bytes on disk (both files).
    public var diskBytes: Int { postingsSize + vectorsSize + headsFileBytes }

    // MARK: search

    /// The k nearest stored vectors of `query` (fewer if the probed lists hold fewer), nearest
    /// first, and what the search cost. Throws on a wrong dimension, NaN, k < 1, or a corrupt list.
    public func search(_ query: [Float], k: Int, parameters p: HybridSearchParameters = .init()) throws -> (
        neighbors: [SearchHit], cost: SearchCost
    ) {
        try require(query.count == dim, "query has \(query.count) values, the index holds \(dim)-d vectors")
        try require(k >= 1, "k must be >= 1, got \(k)")
        try require(p.nprobe >= 1, "nprobe must be >= 1, got \(p.nprobe)")
        try query.withUnsafeBufferPointer { try requireFinite($0, "query") }
        var q = query
        if metric == .cosine {
            let n = q.reduce(0) { $0 + $1 * $1 }.squareRoot()
            try require(n > 0, "a cosine query must not be the zero vector")
            q = q.map { $0 / n }
        }
        let heads = rankHeads(q, p)
        var cost = SearchCost()
        var top = TopK(k: k)
        var seen = IDSet(expected: heads.reduce(0) { $0 + Int(listCount[$1]) })
        var buf = [UInt8]()
        var dist = [Float]()
        let order = heads.sorted { listOffset[$0] < listOffset[$1] }
        let live = delta.snapshot()
        // io_uring: every list of the query in one batch into the reader's buffer
        let reader = io == .uring ? try readers.take() : nil
        defer { if let reader { readers.put(reader) } }
        var inBuffer: [Int: Int] = [:]
        if let reader {
            var offs: [UInt64] = []
            var lens: [UInt32] = []
            var dsts: [Int] = []
            var total = 0
            for h in order where listCount[h] > 0 {
                offs.append(listOffset[h])
                lens.append(listBytes[h])
                dsts.append(total)
                inBuffer[h] = total
                total += (Int(listBytes[h]) + 63) / 64 * 64
            }
            try reader.read(
                fd: postingsFD, offsets: offs, lengths: lens, at: dsts, total: total, file: "\(directory)/postings.bin")
        }
        var approx = TopK(k: payload.isCoded ? max(k, p.rerank) : 1)
        var approxRow: [UInt64: UInt32] = [:]
        var codes = try CodeScanner(self, q)
        if let mapping {
            // announce every list first: the kernel reads missing pages concurrently
            for h in order where listCount[h] > 0 {
                let o = Int(listOffset[h])
                let len = (Int(listBytes[h]) + Self.page - 1) / Self.page * Self.page
                madvise(UnsafeMutableRawPointer(mutating: mapping + o), len, MADV_WILLNEED)
            }
        }
        for h in order {
            let n = Int(listCount[h])
            let bytes = Int(listBytes[h])
            if n == 0 { continue }
            if dist.count < n { dist = [Float](repeating: 0, count: n) }
            let scan = { (raw: UnsafeRawPointer) throws in
                if p.verify == .always || (p.verify == .once && self.verified[h] == 0) {
                    guard self.kernels.crc32c(UnsafeRawBufferPointer(start: raw, count: bytes)) == self.listCRC[h]
                    else {
                        throw EngineError.invalidFile(
                            "\(self.directory)/postings.bin: posting list \(h) fails its checksum (corrupt file)")
                    }
                    self.verified[h] = 1 // a benign race: concurrent verifiers write the same value
                }
                if self.payload.isCoded {
                    try dist.withUnsafeMutableBufferPointer {
                        try codes.scan(raw, count: n, head: h, into: $0.baseAddress!)
                    }
                    for i in 0..<n {
                        let id = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                        if let f = p.filter, !f(id) { continue }
                        if !live.tombstones.isEmpty && live.tombstones.contains(id) { continue }
                        if approx.accepts(dist[i]) && seen.insert(id) {
                            approx.push(dist[i], id)
                            approxRow[id] = UInt32(
                                littleEndian: raw.loadUnaligned(fromByteOffset: 8 * n + 4 * i, as: UInt32.self))
                        }
                    }
                    return
                }
                q.withUnsafeBufferPointer { qp in
                    dist.withUnsafeMutableBufferPointer { dp in
                        self.kernels.distancesUnchecked(
                            self.metric, query: qp.baseAddress!, rows: raw + 8 * n,
                            type: self.payload == .f16 ? .f16 : .f32,
                            count: n, dim: self.dim, stride: self.dim, into: dp.baseAddress!)
                    }
                }
                for i in 0..<n where top.accepts(dist[i]) {
                    let id = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                    if let f = p.filter, !f(id) { continue }
                    if !live.tombstones.isEmpty && live.tombstones.contains(id) { continue }
                    if seen.insert(id) { top.push(dist[i], id) }
                }
            }
            if let mapping {
                try scan(mapping + Int(listOffset[h]))
            } else if let reader {
                try scan(UnsafeRawPointer(reader.buffer + inBuffer[h]!))
            } else {
                if buf.count < bytes { buf = [UInt8](repeating: 0, count: bytes) }
                try buf.withUnsafeMutableBytes { raw in
                    try preadFully(
                        postingsFD, raw.baseAddress!, bytes, at: Int(listOffset[h]), path: "\(directory)/postings.bin")
                    try scan(UnsafeRawPointer(raw.baseAddress!))
                }
            }
            cost.listsRead += 1
            cost.bytesRead += bytes
            cost.pagesRead += (bytes + Self.page - 1) / Self.page
            cost.candidatesScored += n
        }
        if payload.isCoded { try rerank(approx.sorted(), approxRow, q, into: &top, cost: &cost, reader: reader) }
        // inserted vectors of the probed heads (held in RAM)
        for h in heads {
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
                if let f = p.filter, !f(id) { continue }
                if top.accepts(dist[i]) && seen.insert(id) { top.push(dist[i], id) }
            }
            cost.candidatesScored += l.ids.count
        }
        return (top.sorted(), cost)
    }

    /// Exact distances of PQ candidates from their full vectors in vectors.bin (row CRC checked).
    func rerank(
        _ cands: [SearchHit], _ rows: [UInt64: UInt32], _ q: [Float], into top: inout TopK, cost: inout SearchCost,
        reader: UringReader? = nil
    ) throws {
        let rb = 4 * dim + 4
        var buf = [UInt8](repeating: 0, count: rb)
        var d: Float = 0
        let candRows = try cands.map { c -> Int in
            let row = Int(rows[c.id]!)
            guard row < count else {
                throw EngineError.invalidFile("\(directory)/postings.bin: row \(row) out of range (corrupt list)")
            }
            return row
        }
        if let vm = vectorsMapping {
            // announce every row first: the kernel reads the missing pages concurrently
            for row in candRows {
                let start = row * rb
                let page0 = start / Self.page * Self.page
                madvise(UnsafeMutableRawPointer(mutating: vm + page0), start + rb - page0, MADV_WILLNEED)
            }
        }
        if let reader, !cands.isEmpty {
            // all rows in one batch (the lists' buffer is no longer needed)
            try reader.read(
                fd: vectorsFD, offsets: candRows.map { UInt64($0 * rb) }, lengths: candRows.map { _ in UInt32(rb) },
                at: cands.indices.map { $0 * rb }, total: cands.count * rb, file: "\(directory)/vectors.bin")
        }
        for (ci, c) in cands.enumerated() {
            let row = candRows[ci]
            let check = { (r: UnsafeRawPointer) throws in
                let stored = UInt32(littleEndian: r.loadUnaligned(fromByteOffset: 4 * self.dim, as: UInt32.self))
                guard self.kernels.crc32c(UnsafeRawBufferPointer(start: r, count: 4 * self.dim)) == stored else {
                    throw EngineError.invalidFile(
                        "\(self.directory)/vectors.bin: vector row \(row) fails its checksum (corrupt file)")
                }
                q.withUnsafeBufferPointer { qp in
                    withUnsafeMutablePointer(to: &d) { dp in
                        self.kernels.distancesUnchecked(
                            self.metric, query: qp.baseAddress!, rows: r, type: .f32, count: 1, dim: self.dim,
                            stride: self.dim, into: dp)
                    }
                }
            }
            if let vm = vectorsMapping {
                try check(vm + row * rb)
            } else if let reader {
                try check(UnsafeRawPointer(reader.buffer + ci * rb))
            } else {
                try buf.withUnsafeMutableBytes { b in
                    try preadFully(vectorsFD, b.baseAddress!, rb, at: row * rb, path: "\(directory)/vectors.bin")
                    try check(UnsafeRawPointer(b.baseAddress!))
                }
            }
            cost.bytesRead += rb
            cost.pagesRead += 1
            if top.accepts(d) { top.push(d, c.id) }
        }
    }

    // MARK: updates

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
            coarseCentroids.withUnsafeBufferPointer { cp in
                headCentroids.withUnsafeBufferPointer { hp in
                    let nav = Navigation(
                        coarse: cp.baseAddress!, coarseCount: coarse, coarseStart: coarseStart,
                        heads: UnsafeRawPointer(hp.baseAddress!), headType: .f16, dim: dim, kernels: kernels)
                    let cand = nav.nearestHeads(
                        xp.baseAddress!, metric: .l2, probe: Navigation.buildProbe(coarse: coarse, heads: heads),
                        k: Navigation.buildCandidates)
                    let r = nav.rngSelect(cand, maxReplicas: maxReplicas, epsilon: replicaEpsilon, rngFactor: rngFactor)
                        .map(\.head)
                    return r.isEmpty ? [0] : r
                }
            }
        }
    }

    /// Heads to read for q: nearest coarse clusters, then their heads ranked, pruned, cut at nprobe.
    func rankHeads(_ q: [Float], _ p: HybridSearchParameters) -> [Int] {
        let cp0 = min(coarse, p.coarseProbe > 0 ? p.coarseProbe : max(4, p.nprobe / 4))
        let cand = q.withUnsafeBufferPointer { qp in
            coarseCentroids.withUnsafeBufferPointer { cp in
                headCentroids.withUnsafeBufferPointer { hp in
                    Navigation(
                        coarse: cp.baseAddress!, coarseCount: coarse, coarseStart: coarseStart,
                        heads: UnsafeRawPointer(hp.baseAddress!), headType: .f16, dim: dim, kernels: kernels
                    )
                    .nearestHeads(qp.baseAddress!, metric: metric, probe: cp0, k: p.nprobe)
                }
            }
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

/// The navigation structure over head centroids (coarse centroids and their head ranges), shared
/// by build-time replica assignment, inserts and search.
struct Navigation {
    /// Head centroids are f32 during a build and f16 in an opened index (RAM and bandwidth halved;
    /// the build rounds them to f16 values, so both hold the same numbers).
    let coarse: UnsafePointer<Float>, coarseCount: Int, coarseStart: [UInt32], heads: UnsafeRawPointer,
        headType: VectorType, dim: Int, kernels: Kernels
    func head(_ h: Int) -> UnsafeRawPointer { heads + h * dim * headType.bytes }
    /// Candidate heads a vector is placed among (build and inserts).
    static let buildCandidates = 32
    /// Coarse clusters probed when placing a vector: at least 4, more when clusters hold few heads.
    static func buildProbe(coarse: Int, heads: Int) -> Int { min(coarse, max(4, 64 / max(1, heads / coarse))) }

    /// The k nearest heads of x (metric distances) among the heads of its `probe` nearest coarse
    /// clusters, nearest first (bounded-heap selection: a full sort cost ~40% of a query at 100k heads).
    func nearestHeads(_ x: UnsafePointer<Float>, metric: Metric, probe: Int, k: Int) -> [SearchHit] {
        var cd = [Float](repeating: 0, count: coarseCount)
        cd.withUnsafeMutableBufferPointer {
            kernels.distancesUnchecked(
                metric, query: x, rows: UnsafeRawPointer(coarse), type: .f32, count: coarseCount, dim: dim, stride: dim,
                into: $0.baseAddress!)
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
            }
            for i in 0..<(b - a) where sel.accepts(hd[i]) { sel.push(hd[i], UInt64(a + i)) }
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

/// Indices of the m smallest values, nearest first (bounded heap, O(n log m)).
func smallest(_ v: [Float], _ m: Int) -> [Int] {
    if m >= v.count { return Array(v.indices) }
    var t = TopK(k: m)
    for (i, x) in v.enumerated() where t.accepts(x) { t.push(x, UInt64(i)) }
    return t.sorted().map { Int($0.id) }
}

/// A set of ids for one query: open addressing, linear probing, sized once (at most half full).
struct IDSet {
    var slots: [UInt64]
    var mask: Int
    var count = 0
    var hasMax = false // UInt64.max marks an empty slot, so that id is kept aside
    init(expected: Int) {
        var c = 64
        while c < 2 * expected { c *= 2 }
        slots = [UInt64](repeating: .max, count: c)
        mask = c - 1
    }
    /// Inserts id; true if it was not present.
    mutating func insert(_ id: UInt64) -> Bool {
        if id == .max {
            defer { hasMax = true }
            return !hasMax
        }
        if 2 * (count + 1) > slots.count { grow() }
        var i = Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
        while true {
            let v = slots[i]
            if v == id { return false }
            if v == .max {
                slots[i] = id
                count += 1
                return true
            }
            i = (i + 1) & mask
        }
    }
    mutating func grow() {
        let old = slots
        slots = [UInt64](repeating: .max, count: old.count * 2)
        mask = slots.count - 1
        count = 0
        for v in old where v != .max { _ = insert(v) }
    }
}

/// k smallest (distance, id) pairs: a bounded max-heap.
struct TopK {
    let k: Int
    var d: [Float] = [], id: [UInt64] = []
    init(k: Int) { self.k = k }
    func accepts(_ x: Float) -> Bool { d.count < k || x < d[0] }
    mutating func push(_ x: Float, _ i: UInt64) {
        if d.count < k {
            d.append(x)
            id.append(i)
            var c = d.count - 1
            while c > 0 {
                let p = (c - 1) / 2
                if d[p] >= d[c] { break }
                d.swapAt(p, c)
                id.swapAt(p, c)
                c = p
            }
        } else if x < d[0] {
            d[0] = x
            id[0] = i
            var c = 0
            while true {
                let l = 2 * c + 1
                let r = l + 1
                var m = c
                if l < d.count && d[l] > d[m] { m = l }
                if r < d.count && d[r] > d[m] { m = r }
                if m == c { break }
                d.swapAt(m, c)
                id.swapAt(m, c)
                c = m
            }
        }
    }
    func sorted() -> [SearchHit] {
        zip(d, id).sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.map { SearchHit(id: $0.1, distance: $0.0) }
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}

/// An io_uring ring (CKernels ck_uring) and its read buffer, used by one search at a time.
final class UringReader {
    let ring: OpaquePointer
    private(set) var buffer: UnsafeMutableRawPointer
    private(set) var capacity: Int
    /// io_uring_enter failed with reads in flight: the buffer may still be written by the
    /// kernel, so it is never freed or reused.
    private(set) var broken = false

    init?() {
        var err: Int32 = 0
        guard let r = ck_uring_open(64, &err) else { return nil }
        ring = r
        capacity = 1 << 20
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
    }

    deinit {
        if !broken {
            ck_uring_close(ring)
            buffer.deallocate()
        }
    }

    /// Reads lengths[i] bytes at offsets[i] of fd to buffer + at[i]; `total` bytes of buffer needed.
    func read(fd: Int32, offsets: [UInt64], lengths: [UInt32], at: [Int], total: Int, file: String) throws {
        if total > capacity {
            buffer.deallocate()
            capacity = max(total, 2 * capacity)
            buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
        }
        let dsts: [UnsafeMutablePointer<UInt8>?] = at.map { (buffer + $0).assumingMemoryBound(to: UInt8.self) }
        let rc = offsets.withUnsafeBufferPointer { o in
            lengths.withUnsafeBufferPointer { l in
                dsts.withUnsafeBufferPointer { d in
                    ck_uring_read(ring, fd, o.count, o.baseAddress, l.baseAddress, d.baseAddress)
                }
            }
        }
        if rc == CK_URING_BROKEN {
            broken = true
            throw EngineError.io("\(file): io_uring failed with reads in flight")
        }
        if rc == -ENODATA { throw EngineError.invalidFile("\(file): unexpected end of file (truncated)") }
        if rc < 0 { throw EngineError.io("\(file): read failed: \(String(cString: strerror(-rc)))") }
    }
}

/// Idle readers, one is taken per search and put back after it (a broken one is dropped).
final class UringReaders: @unchecked Sendable {
    private var idle: [UringReader] = []
    private let lock = NSLock()

    func take() throws -> UringReader {
        lock.lock()
        if let r = idle.popLast() {
            lock.unlock()
            return r
        }
        lock.unlock()
        guard let r = UringReader() else { throw EngineError.io("io_uring is unavailable (cannot open a ring)") }
        return r
    }

    func put(_ r: UringReader) {
        if r.broken { return }
        lock.lock()
        idle.append(r)
        lock.unlock()
    }
}
