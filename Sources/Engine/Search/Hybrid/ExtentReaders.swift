import CKernels
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A byte range of an index file. `readBefore`: this process has read (and checked) it already,
/// so in the warm steady state it is in the page cache.
struct FileExtent {
    var offset: Int
    var length: Int
    var readBefore = false
}

/// How one query reads byte ranges of one index file (posting lists, or re-rank rows). The index
/// makes one per query and file (`IndexIO`): `prepare` receives every extent before any is used,
/// in the order they will be used, so a reader can batch or announce them.
protocol ExtentReader: AnyObject {
    func prepare(_ extents: [FileExtent]) throws
    /// The bytes of extent i of the last `prepare` (valid until the next call to either).
    func bytes(_ i: Int) throws -> UnsafeRawPointer
    /// Asks the CPU to start loading extent i (its first 4 KiB) while the caller works on an
    /// earlier one. The mapped reader does; pread (which reads on `bytes`) and io_uring (whose
    /// batch has just been written to its buffer) keep the default no-op.
    func prefetch(_ i: Int)
}

extension ExtentReader {
    func prefetch(_ i: Int) {}
}

/// Memory-mapped file: extents are announced with madvise(WILLNEED), so the kernel reads the
/// missing pages concurrently, then used in place (no copy). Extents this process has read
/// before are not announced: on a warm index the call finds every page present and only costs
/// the syscall and the page-cache walk (~20% of a pq4 search's CPU on WordNet at nprobe 32,
/// one call per list and per re-ranked row). If the kernel has evicted them since, the access
/// faults them back in one at a time; an index far larger than RAM reads with `.pread` or
/// `.uring`.
final class MappedExtents: ExtentReader {
    let base: UnsafeRawPointer
    private var extents: [FileExtent] = []
    init(base: UnsafeRawPointer) { self.base = base }

    func prepare(_ extents: [FileExtent]) throws {
        self.extents = extents
        for e in extents where !e.readBefore {
            let page0 = e.offset / PostingListLayout.page * PostingListLayout.page
            madvise(UnsafeMutableRawPointer(mutating: base + page0), e.offset + e.length - page0, MADV_WILLNEED)
        }
    }

    func bytes(_ i: Int) throws -> UnsafeRawPointer { base + extents[i].offset }

    func prefetch(_ i: Int) {
        guard i < extents.count else { return }
        ck_prefetch_read(base + extents[i].offset, extents[i].length)
    }
}

/// pread into one reused buffer, one I/O per extent when it is used: the access pattern of an
/// index far larger than the page cache.
final class PreadExtents: ExtentReader {
    let fd: Int32
    let path: String
    private var extents: [FileExtent] = []
    private var buffer: UnsafeMutableRawPointer?
    private var capacity = 0
    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }
    deinit { buffer?.deallocate() }

    func prepare(_ extents: [FileExtent]) throws { self.extents = extents }

    func bytes(_ i: Int) throws -> UnsafeRawPointer {
        let e = extents[i]
        if capacity < e.length || buffer == nil {
            buffer?.deallocate()
            capacity = max(e.length, 2 * capacity, 64)
            buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        }
        try preadFully(fd, buffer!, e.length, at: e.offset, path: path)
        return UnsafeRawPointer(buffer!)
    }
}

/// Every extent of a query read in one io_uring batch (up to 64 in flight) into the ring's buffer.
final class UringExtents: ExtentReader {
    let reader: UringReader
    let fd: Int32
    let path: String
    private var at: [Int] = []
    init(reader: UringReader, fd: Int32, path: String) {
        self.reader = reader
        self.fd = fd
        self.path = path
    }

    func prepare(_ extents: [FileExtent]) throws {
        at.removeAll(keepingCapacity: true)
        var total = 0
        for e in extents {
            at.append(total)
            total += (e.length + 63) / 64 * 64
        }
        if extents.isEmpty { return }
        try reader.read(
            fd: fd, offsets: extents.map { UInt64($0.offset) }, lengths: extents.map { UInt32($0.length) }, at: at,
            total: total, file: path)
    }

    func bytes(_ i: Int) throws -> UnsafeRawPointer { UnsafeRawPointer(reader.buffer + at[i]) }
}

/// An io_uring ring (CKernels ck_uring) and its read buffer, used by one search at a time.
final class UringReader {
    let ring: OpaquePointer
    private(set) var buffer: UnsafeMutableRawPointer
    private(set) var capacity: Int
    /// io_uring_enter failed with reads in flight: the buffer may still be written by the
    /// kernel, so it is never freed or reused.
    private(set) var broken = false

    /// A ring whose read buffer starts at `capacity` bytes (it grows to the largest batch).
    init?(capacity: Int = 1 << 20) {
        var err: Int32 = 0
        guard let r = ck_uring_open(64, &err) else { return nil }
        ring = r
        self.capacity = max(capacity, 4096)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 4096)
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
        if let r = lock.withLock({ idle.popLast() }) { return r }
        guard let r = UringReader() else { throw EngineError.io("io_uring is unavailable (cannot open a ring)") }
        return r
    }

    func put(_ r: UringReader) {
        if r.broken { return }
        lock.withLock { idle.append(r) }
    }
}
