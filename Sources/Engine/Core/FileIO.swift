#if canImport(Glibc)
    import Glibc
#endif

/// Reads exactly n bytes of fd at `offset` into dst (pread, retried on EINTR and short reads).
/// A read error is `EngineError.io`, the file ending first `EngineError.invalidFile` (truncated);
/// `path` names the file in both.
func preadFully(_ fd: Int32, _ dst: UnsafeMutableRawPointer, _ n: Int, at offset: Int, path: String) throws {
    var done = 0
    while done < n {
        let r = pread(fd, dst + done, n - done, off_t(offset + done))
        if r < 0 {
            if errno == EINTR { continue }
            throw EngineError.io("\(path): read failed: \(String(cString: strerror(errno)))")
        }
        if r == 0 { throw EngineError.invalidFile("\(path): unexpected end of file (truncated)") }
        done += r
    }
}
