import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A file read and written at offsets: the build's spill (unlinked by `remove()` or deinit),
/// postings.bin (`reserve` allocates its size up front, so a full disk fails here; `sync()`
/// flushes and closes it, keeping the file), and the KV cache's block file (`unlinkName()` right
/// after creation: no name while in use, nothing left behind if the process dies).
final class ScratchFile {
    let path: String
    var fd: Int32
    var keep = false
    init(path: String, reserve: Int = 0, mode: mode_t = 0o644) throws {
        self.path = path
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw EngineError.io("cannot create \(path): \(String(cString: strerror(errno)))") }
        if reserve > 0 {
            let e = posix_fallocate(fd, 0, off_t(reserve))
            guard e == 0 else {
                try? remove()
                throw EngineError.io("cannot reserve \(reserve) bytes for \(path): \(String(cString: strerror(e)))")
            }
        }
    }
    deinit { try? remove() }
    func write(_ p: UnsafeRawPointer, _ n: Int, at offset: Int) throws {
        var done = 0
        while done < n {
            let r = pwrite(fd, p + done, n - done, off_t(offset + done))
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { throw EngineError.io("write to \(path) failed: \(String(cString: strerror(errno)))") }
            done += r
        }
    }
    func read(_ p: UnsafeMutableRawPointer, _ n: Int, at offset: Int) throws {
        try preadFully(fd, p, n, at: offset, path: path)
    }
    func sync() throws {
        guard fsync(fd) == 0 else {
            throw EngineError.io("fsync of \(path) failed: \(String(cString: strerror(errno)))")
        }
        close(fd)
        fd = -1
        keep = true
    }
    /// Removes the file's name; the open descriptor keeps it readable and writable until deinit.
    func unlinkName() {
        if !keep {
            unlink(path)
            keep = true
        }
    }
    func remove() throws {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if !keep {
            unlink(path)
            keep = true
        }
    }
}
