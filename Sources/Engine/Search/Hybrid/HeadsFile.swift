import Foundation

#if canImport(Glibc)
    import Glibc
#endif

#if _endian(big)
    #error("index files are little-endian; HeadsFile copies floats in host order")
#endif

/// The bytes of `heads.bin`, the part of a hybrid index held in RAM. This type alone writes and
/// reads it; every offset is defined here. All integers and floats are little-endian.
///
/// Header (64 bytes):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `EHIDX001` |
/// | 8 | 4 | format version (2; version 1 files, without the calibration section, are read too) |
/// | 12 | 4 | dimension d |
/// | 16 | 4 | metric: 0 L2, 1 inner product, 2 cosine (`Metric.fileCode`) |
/// | 20 | 4 | payload: 0 f32, 1 f16, 2 pq8, 3 pq4, 4 binary (`PostingPayload.fileCode`) |
/// | 24 | 8 | vectors n |
/// | 32 | 4 | heads H (posting lists) |
/// | 36 | 4 | coarse clusters C |
/// | 40 | 8 | size of postings.bin in bytes |
/// | 48 | 8 | posting entries (vector replicas) |
/// | 56 | 4 | replication: maxReplicas in bits 0-15, round(rngFactor x 256) in bits 16-31 (0: 1) |
/// | 60 | 4 | replicaEpsilon (f32) |
///
/// Then, in order: coarse centroids (C x d f32); coarse-to-head table (C + 1 u32, heads of
/// cluster c are start[c]..<start[c+1]); head centroids (H x d f32, values representable in f16);
/// one 24-byte entry per list (offset u64 in postings.bin, a multiple of 4096; byte length u32;
/// entry count u32; CRC-32C u32 of the list's bytes; 4 reserved bytes, zero); for code payloads a
/// code section (u32 M then the PQ codebooks, 2^bits x d f32 in `ProductQuantizer` order, for pq8
/// and pq4; u32 P then the P rotation signs as f32 +-1 for binary); in version 2 the calibration
/// section (u32 sample queries S, u32 k, u32 points N <= 64, then N pairs of u32 nprobe and f32
/// recall@k, nprobe strictly increasing within 1...H, recall in 0...1; N = 0: no table, see
/// `RecallCalibration`); last, a CRC-32C (u32) of all preceding bytes.
struct HeadsFile: Equatable {
    static let magic = Array("EHIDX001".utf8)
    static let version: UInt32 = 2
    /// Most points of a calibration table.
    static let maxCalibrationPoints = 64
    static let headerBytes = 64
    static let entryBytes = 24

    /// One posting list's place in postings.bin.
    struct ListEntry: Equatable {
        var offset: UInt64
        var bytes: UInt32
        var count: UInt32
        var crc: UInt32
    }

    var dim: Int
    var metric: Metric
    var payload: PostingPayload
    var count: Int
    var postingsBytes: Int
    var entries: Int
    var maxReplicas: Int
    /// Stored as round(x 256); reads back 1 when stored as 0.
    var rngFactor: Float
    var replicaEpsilon: Float
    var coarseCentroids: [Float]
    var coarseStart: [UInt32]
    /// Head centroids as IEEE half bit patterns, H x d. The file stores them as f32 values the
    /// build made f16-representable; reading converts straight from the file's bytes (a value
    /// that is not representable rounds to nearest even, as the search would).
    var headBits: [UInt16]
    var lists: [ListEntry]
    /// PQ sub-quantizers M (pq8, pq4) or the binary code width P; 0 for vector payloads.
    var codeWidth: Int
    /// PQ codebooks (pq8, pq4) or rotation signs (binary); empty for vector payloads.
    var codeValues: [Float]
    /// The build's recall-to-nprobe table (nil: none, as in version 1 files).
    var calibration: RecallCalibration? = nil

    var coarse: Int { coarseStart.count - 1 }
    /// Size of the encoded file in bytes.
    var byteCount: Int {
        Self.headerBytes + 4 * coarseCentroids.count + 4 * coarseStart.count + 4 * headBits.count
            + Self.entryBytes * lists.count + (payload.isCoded ? 4 + 4 * codeValues.count : 0)
            + 12 + 8 * (calibration?.points.count ?? 0) + 4
    }
    var heads: Int { lists.count }

    /// Floats in the code section after its width field.
    static func codeValueCount(_ payload: PostingPayload, dim: Int, width: Int) -> Int {
        switch payload {
        case .f32, .f16: return 0
        case .pq8: return 256 * dim
        case .pq4: return 16 * dim
        case .binary: return width
        }
    }

    /// The file's bytes, ending with their CRC-32C.
    func encoded(kernels: Kernels) -> [UInt8] {
        var b = Self.magic
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        func floats(_ v: [Float]) { for x in v { u32(x.bitPattern) } }
        u32(Self.version)
        u32(UInt32(dim))
        u32(metric.fileCode)
        u32(payload.fileCode)
        u64(UInt64(count))
        u32(UInt32(heads))
        u32(UInt32(coarse))
        u64(UInt64(postingsBytes))
        u64(UInt64(entries))
        u32(UInt32(maxReplicas) | UInt32((rngFactor * 256).rounded()) << 16)
        u32(replicaEpsilon.bitPattern)
        floats(coarseCentroids)
        for s in coarseStart { u32(s) }
        floats(kernels.floats(fromFloat16Bits: headBits)) // exact: every half is an f32
        for e in lists {
            u64(e.offset)
            u32(e.bytes)
            u32(e.count)
            u32(e.crc)
            u32(0)
        }
        if payload.isCoded {
            u32(UInt32(codeWidth))
            floats(codeValues)
        }
        u32(UInt32(calibration?.queries ?? 0))
        u32(UInt32(calibration?.k ?? 0))
        u32(UInt32(calibration?.points.count ?? 0))
        for p in calibration?.points ?? [] {
            u32(UInt32(p.nprobe))
            u32(p.recall.bitPattern)
        }
        u32(b.withUnsafeBytes { kernels.crc32c($0) })
        return b
    }

    /// Reads and validates the file at `path` (checksum, sizes against the file's length with
    /// checked arithmetic, table consistency); `fail` errors name the path.
    init(path: String, kernels: Kernels) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) // a FIFO must not block the open
        guard fd >= 0 else {
            throw EngineError.io("cannot read \(path): not an index directory (or an interrupted build)")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw EngineError.io("cannot read \(path): not a regular file")
        }
        // read straight into the array (no intermediate Data); a file that shrinks meanwhile
        // is reported as truncated
        let size = Int(st.st_size)
        let bytes = try [UInt8](unsafeUninitializedCapacity: size) { buf, count in
            if size > 0 {
                adviseHugePages(buf.baseAddress!, size)
                try preadFully(fd, buf.baseAddress!, size, at: 0, path: path)
            }
            count = size
        }
        try self.init(bytes: bytes, path: path, kernels: kernels)
    }

    init(bytes b: [UInt8], path: String, kernels: Kernels) throws {
        func fail(_ m: String) -> EngineError { .invalidFile("\(path): \(m)") }
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
        func u64(_ o: Int) throws -> Int {
            let v = b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
            guard v <= UInt64(Int.max) else { throw fail("header field at offset \(o) is out of range (\(v))") }
            return Int(v)
        }
        func floats(_ o: Int, _ n: Int) -> [Float] {
            // little-endian f32 on a little-endian host (checked at compile time above): a copy
            [Float](unsafeUninitializedCapacity: n) { buf, count in
                if n > 0 {
                    b.withUnsafeBytes { r in
                        UnsafeMutableRawPointer(buf.baseAddress!).copyMemory(from: r.baseAddress! + o, byteCount: 4 * n)
                    }
                }
                count = n
            }
        }
        let version = u32(8)
        guard version == 1 || version == Int(Self.version) else {
            throw fail("version \(version); this build reads versions 1 and \(Self.version)")
        }
        dim = u32(12)
        guard let m = Metric(fileCode: u32(16)), let pl = PostingPayload(fileCode: u32(20)) else {
            throw fail("unknown metric or payload type")
        }
        metric = m
        payload = pl
        count = try u64(24)
        let heads = u32(32)
        let coarse = u32(36)
        postingsBytes = try u64(40)
        entries = try u64(48)
        maxReplicas = max(1, min(8, u32(56) & 0xFFFF))
        rngFactor = u32(56) >> 16 == 0 ? 1 : Float(u32(56) >> 16) / 256
        replicaEpsilon = Float(bitPattern: UInt32(u32(60)))
        guard dim > 0, heads > 0, coarse > 0 else {
            throw fail("inconsistent header (dim \(dim), heads \(heads), coarse \(coarse))")
        }
        let what = "\(path) header"
        let tableEnd = try CheckedSize.sum(
            Self.headerBytes, CheckedSize.product(4, coarse, dim, what: what), 4 * (coarse + 1),
            CheckedSize.product(4, heads, dim, what: what), Self.entryBytes * heads, what: what)
        var width = 0
        if pl.isCoded {
            guard b.count >= tableEnd + 8 else { throw fail("truncated before the code section") }
            width = u32(tableEnd)
            if pl == .binary {
                guard width >= 64, width & (width - 1) == 0, width >= dim, width < 2 * max(64, dim) else {
                    throw fail("bad binary code width \(width)")
                }
            } else {
                guard width > 0, dim % width == 0, pl == .pq8 || width <= 256 else {
                    throw fail("bad PQ sub-quantizer count \(width)")
                }
            }
        }
        let values = Self.codeValueCount(pl, dim: dim, width: width)
        let codeEnd = try CheckedSize.sum(tableEnd, pl.isCoded ? 4 + 4 * values : 0, what: what)
        var points = 0
        if version >= 2 {
            guard b.count >= codeEnd + 16 else { throw fail("truncated before the calibration section") }
            points = u32(codeEnd + 8)
            guard points <= Self.maxCalibrationPoints else { throw fail("\(points) calibration points (at most 64)") }
        }
        let expected = try CheckedSize.sum(codeEnd, version >= 2 ? 12 + 8 * points : 0, 4, what: what)
        guard b.count == expected else { throw fail("size \(b.count), expected \(expected)") }
        var o = Self.headerBytes
        coarseCentroids = floats(o, coarse * dim)
        o += 4 * coarse * dim
        coarseStart = (0...coarse).map { UInt32(u32(o + 4 * $0)) }
        o += 4 * (coarse + 1)
        // f32 in the file to half bits, read in place: no f32 copy of the largest section
        let (at, headValues) = (o, heads * dim) // locals: self is not initialized yet
        headBits = [UInt16](unsafeUninitializedCapacity: headValues) { out, count in
            adviseHugePages(out.baseAddress!, 2 * headValues)
            b.withUnsafeBytes { r in
                // the bytes are bound to UInt8: rebound for the read (offset `at` is a multiple of 4)
                (r.baseAddress! + at).withMemoryRebound(to: Float.self, capacity: headValues) {
                    kernels.float16Bits(UnsafeBufferPointer(start: $0, count: headValues), into: out)
                }
            }
            count = headValues
        }
        o += 4 * heads * dim
        lists = (0..<heads).map { h in
            let e = o + Self.entryBytes * h
            let off = b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: e, as: UInt64.self)) }
            return ListEntry(
                offset: off, bytes: UInt32(u32(e + 8)), count: UInt32(u32(e + 12)), crc: UInt32(u32(e + 16)))
        }
        codeWidth = width
        codeValues = pl.isCoded ? floats(tableEnd + 4, values) : []
        if points > 0 {
            let table = (0..<points).map {
                RecallCalibration.Point(
                    nprobe: u32(codeEnd + 12 + 8 * $0), recall: Float(bitPattern: UInt32(u32(codeEnd + 16 + 8 * $0))))
            }
            let c = RecallCalibration(queries: u32(codeEnd), k: u32(codeEnd + 4), points: table)
            guard c.isValid(heads: heads) else { throw fail("calibration table is inconsistent") }
            calibration = c
        }
        guard coarseStart.first == 0, coarseStart.last == UInt32(heads),
            zip(coarseStart, coarseStart.dropFirst()).allSatisfy({ $0 <= $1 })
        else { throw fail("coarse-to-head table is inconsistent") }
        let listEntries = lists.reduce(0) { $0 + Int($1.count) }
        guard listEntries == entries, count >= 1, count <= entries else {
            throw fail("header counts (\(count) vectors, \(entries) entries) disagree with the lists (\(listEntries))")
        }
        let layout = PostingListLayout(payload: pl, dim: dim, codeWidth: width)
        for (h, e) in lists.enumerated() {
            guard e.offset <= UInt64(postingsBytes), Int(e.bytes) == layout.bytes(count: Int(e.count)),
                Int(e.offset) % PostingListLayout.page == 0, Int(e.offset) + Int(e.bytes) <= postingsBytes
            else { throw fail("posting list \(h) entry is inconsistent") }
        }
    }

    init(
        dim: Int, metric: Metric, payload: PostingPayload, count: Int, postingsBytes: Int, entries: Int,
        maxReplicas: Int, rngFactor: Float, replicaEpsilon: Float, coarseCentroids: [Float], coarseStart: [UInt32],
        headBits: [UInt16], lists: [ListEntry], codeWidth: Int, codeValues: [Float],
        calibration: RecallCalibration? = nil
    ) {
        self.calibration = calibration
        self.dim = dim
        self.metric = metric
        self.payload = payload
        self.count = count
        self.postingsBytes = postingsBytes
        self.entries = entries
        self.maxReplicas = maxReplicas
        self.rngFactor = rngFactor
        self.replicaEpsilon = replicaEpsilon
        self.coarseCentroids = coarseCentroids
        self.coarseStart = coarseStart
        self.headBits = headBits
        self.lists = lists
        self.codeWidth = codeWidth
        self.codeValues = codeValues
    }
}

extension Metric {
    /// The metric's code in index headers.
    var fileCode: UInt32 {
        switch self {
        case .l2: return 0
        case .innerProduct: return 1
        case .cosine: return 2
        }
    }
    init?(fileCode c: Int) {
        guard let m = [Metric.l2, .innerProduct, .cosine].first(where: { Int($0.fileCode) == c }) else { return nil }
        self = m
    }
}

extension PostingPayload {
    /// The payload's code in index headers.
    var fileCode: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .pq8: return 2
        case .pq4: return 3
        case .binary: return 4
        }
    }
    init?(fileCode c: Int) {
        guard let p = Self.allCases.first(where: { Int($0.fileCode) == c }) else { return nil }
        self = p
    }
}
