import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Inserts and deletes on top of a built hybrid index: in-memory per-head lists of inserted
/// vectors, tombstones, and an append-only log (`delta.log`) replayed on open.
///
/// Log record: u32 tag ("INS1" or "DEL1"), u64 id, for inserts dim f32 values, then a CRC-32C of
/// the record's preceding bytes. Appends are fsync'ed per call; a torn tail (a crash mid-append)
/// fails its CRC and is dropped on open (and truncated away when opened writable), so every
/// completed call survives and nothing half-written is applied.
final class DeltaLayer: @unchecked Sendable {
    struct List {
        var ids: [UInt64] = []
        var vectors: [Float] = []
        mutating func append(_ id: UInt64, _ v: [Float]) {
            ids.append(id)
            vectors += v
        }
        mutating func remove(_ id: UInt64, dim: Int) {
            guard let i = ids.firstIndex(of: id) else { return }
            ids.remove(at: i)
            vectors.removeSubrange((i * dim)..<((i + 1) * dim))
        }
    }
    struct State {
        var lists: [Int: List] = [:]
        var location: [UInt64: [Int]] = [:]
        var tombstones = Set<UInt64>()
        var dim = 0
        mutating func remove(_ id: UInt64) {
            guard let hs = location.removeValue(forKey: id) else { return }
            for h in hs { lists[h]?.remove(id, dim: dim) }
        }
    }
    static let insTag: UInt32 = 0x3153_4E49 // "INS1"
    static let delTag: UInt32 = 0x314C_4544 // "DEL1"

    let path: String
    let dim: Int
    let writable: Bool
    let kernels: Kernels
    private var state = State()
    private let lock = NSLock()
    private var fd: Int32 = -1
    /// Bytes of torn tail dropped when the log was replayed.
    private(set) var droppedTailBytes = 0
    /// Bytes of corrupt records skipped by a repair.
    private(set) var skippedBytes = 0

    init(path: String, dim: Int, writable: Bool, kernels: Kernels) throws {
        self.path = path
        self.dim = dim
        self.writable = writable
        self.kernels = kernels
        state.dim = dim
    }

    deinit { if fd >= 0 { close(fd) } }

    func snapshot() -> State {
        lock.lock()
        defer { lock.unlock() }
        return state
    }
    func mutate(_ body: (inout State) -> Void) {
        lock.lock()
        body(&state)
        lock.unlock()
    }

    /// Length of a valid record at o (tag known, fits, CRC matches), else nil.
    func recordLength(_ b: UnsafeRawBufferPointer, at o: Int) -> Int? {
        guard o + 16 <= b.count else { return nil }
        let tag = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self))
        let len = tag == Self.insTag ? 12 + 4 * dim : tag == Self.delTag ? 12 : -1
        guard len > 0, o + len + 4 <= b.count else { return nil }
        let crc = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o + len, as: UInt32.self))
        guard crc == kernels.crc32c(UnsafeRawBufferPointer(rebasing: b[o..<(o + len)])) else { return nil }
        return len + 4
    }

    /// The first valid record at or after `from`, if any.
    func nextValid(_ b: UnsafeRawBufferPointer, from: Int) -> Int? {
        var p = from
        while p + 16 <= b.count {
            if recordLength(b, at: p) != nil { return p }
            p += 1
        }
        return nil
    }

    /// Applies every valid record in order. A bad record with nothing valid after it is a torn
    /// tail (a crash mid-append): dropped, and truncated away when writable. A bad record followed
    /// by valid ones is corruption in the middle: the log is refused (applying only the records
    /// before it would bring back deleted ids), unless `repair`, which applies every record it can
    /// verify, reports what it skipped, and rewrites the log with those records alone.
    func replay(repair: Bool = false, _ apply: (UInt64, [Float]?) throws -> Void) throws {
        if let data = FileManager.default.contents(atPath: path) {
            let b = [UInt8](data)
            var kept: [Range<Int>] = []
            var skipped = 0
            var o = 0
            try b.withUnsafeBytes { r in
                while o < r.count {
                    guard let len = recordLength(r, at: o) else {
                        guard let next = nextValid(r, from: o + 1) else { break } // torn tail
                        guard repair else {
                            throw EngineError.invalidFile(
                                """
                                \(path): corrupt record at byte \(o), valid records follow at byte \(next): \
                                refusing to open (repair keeps every record that verifies: engine index repair)
                                """)
                        }
                        skipped += next - o
                        o = next
                        continue
                    }
                    let id = UInt64(littleEndian: r.loadUnaligned(fromByteOffset: o + 4, as: UInt64.self))
                    if len > 16 {
                        let v = (0..<dim).map {
                            Float(
                                bitPattern: UInt32(
                                    littleEndian: r.loadUnaligned(fromByteOffset: o + 12 + 4 * $0, as: UInt32.self)))
                        }
                        try apply(id, v)
                    } else {
                        try apply(id, nil)
                    }
                    kept.append(o..<(o + len))
                    o += len
                }
            }
            droppedTailBytes = b.count - o
            skippedBytes = skipped
            if repair && (skipped > 0 || droppedTailBytes > 0) {
                let w = try AtomicFileWriter(path: path)
                for range in kept { try w.write(Array(b[range])) }
                try w.commit()
            } else if writable && droppedTailBytes > 0 {
                guard truncate(path, off_t(o)) == 0 else {
                    throw EngineError.io("cannot truncate the torn tail of \(path)")
                }
            }
        }
        if writable {
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                throw EngineError.io("cannot open \(path) for appending: \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Appends records (vector nil: a delete) and fsyncs.
    func append(_ ops: [(UInt64, [Float]?)]) throws {
        guard fd >= 0 else { throw EngineError.invalidArgument("the index was opened read-only") }
        var b: [UInt8] = []
        for (id, v) in ops {
            let start = b.count
            withUnsafeBytes(of: (v == nil ? Self.delTag : Self.insTag).littleEndian) { b.append(contentsOf: $0) }
            withUnsafeBytes(of: id.littleEndian) { b.append(contentsOf: $0) }
            if let v { for x in v { withUnsafeBytes(of: x.bitPattern.littleEndian) { b.append(contentsOf: $0) } } }
            let crc = b.withUnsafeBytes { kernels.crc32c(UnsafeRawBufferPointer(rebasing: $0[start...])) }
            withUnsafeBytes(of: crc.littleEndian) { b.append(contentsOf: $0) }
        }
        lock.lock()
        defer { lock.unlock() }
        var off = 0
        while off < b.count {
            let n = b.withUnsafeBytes { write(fd, $0.baseAddress! + off, b.count - off) }
            if n < 0 {
                if errno == EINTR { continue }
                throw EngineError.io("append to \(path) failed: \(String(cString: strerror(errno)))")
            }
            off += n
        }
        guard fsync(fd) == 0 else {
            throw EngineError.io("fsync of \(path) failed: \(String(cString: strerror(errno)))")
        }
    }
}
