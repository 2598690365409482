#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes a file atomically: data goes to a temporary file in the same directory, is fsync'ed,
/// then renamed over the destination (and the directory fsync'ed). A crash leaves either the
/// old file or the new one, never a partial file under the final name.
public final class AtomicFileWriter {
    /// The final path (the data goes to a temporary sibling until `commit`).
    public let path: String
    let tempPath: String
    var fd: Int32
    /// Bytes written so far.
    public private(set) var bytesWritten = 0
    private var finished = false

    /// Creates the temporary file next to `path`.
    public init(path: String) throws {
        self.path = path
        tempPath = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        if fd < 0 { throw EngineError.io("cannot create \(tempPath): \(String(cString: strerror(errno)))") }
    }

    deinit {
        if !finished {
            close(fd)
            unlink(tempPath)
        }
    }

    /// Appends bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw EngineError.io("write to \(tempPath) failed: \(String(cString: strerror(errno)))")
            }
            off += n
        }
        bytesWritten += bytes.count
    }

    /// Appends bytes.
    public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    /// Flushes, renames into place and syncs the directory.
    public func commit() throws {
        if fsync(fd) != 0 { throw EngineError.io("fsync of \(tempPath) failed: \(String(cString: strerror(errno)))") }
        close(fd)
        finished = true
        if rename(tempPath, path) != 0 {
            let e = String(cString: strerror(errno))
            unlink(tempPath)
            throw EngineError.io("rename \(tempPath) -> \(path) failed: \(e)")
        }
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let dfd = open(dir.isEmpty ? "/" : dir, O_RDONLY)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}
