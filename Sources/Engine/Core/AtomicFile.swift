#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes a file atomically: data goes to a temporary file in the same directory (created with
/// O_EXCL and its final mode), is fsync'ed, then renamed over the destination (and the directory
/// fsync'ed). A crash leaves either the old file or the new one, never a partial file under the
/// final name. With `replace: false` the commit links the file into place instead, which fails
/// (atomically) if anything exists there: nothing is ever overwritten.
public final class AtomicFileWriter {
    /// The final path (the data goes to a temporary sibling until `commit`).
    public let path: String
    let tempPath: String
    var fd: Int32
    /// Bytes written so far.
    public private(set) var bytesWritten = 0
    private var finished = false

    let replace: Bool

    /// Creates the temporary file next to `path` with permissions `mode` (0600 for secrets).
    /// `replace`: whether `commit` may replace an existing file at `path`.
    public init(path: String, mode: mode_t = 0o644, replace: Bool = true) throws {
        self.path = path
        self.replace = replace
        tempPath = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        if fd < 0 { throw EngineError.io("cannot create \(tempPath): \(String(cString: strerror(errno)))") }
        // the process umask may have narrowed the mode; a secret must not be wider than asked
        guard fchmod(fd, mode) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            unlink(tempPath)
            throw EngineError.io("cannot set the mode of \(tempPath): \(e)")
        }
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
        let closed = close(fd)
        finished = true
        guard closed == 0 else {
            unlink(tempPath)
            throw EngineError.io("close of \(tempPath) failed: \(String(cString: strerror(errno)))")
        }
        if replace {
            if rename(tempPath, path) != 0 {
                let e = String(cString: strerror(errno))
                unlink(tempPath)
                throw EngineError.io("cannot write \(path): \(e)")
            }
        } else {
            if link(tempPath, path) != 0 {
                let e = errno
                unlink(tempPath)
                if e == EEXIST {
                    throw EngineError.invalidArgument(
                        "\(path) exists: refusing to replace it (pass --force to replace)")
                }
                throw EngineError.io("cannot write \(path): \(String(cString: strerror(e)))")
            }
            unlink(tempPath)
        }
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let dfd = open(dir.isEmpty ? "/" : dir, O_RDONLY)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}
