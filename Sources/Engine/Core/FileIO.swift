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

/// Asks for transparent huge pages in the whole 2 MiB pages inside `bytes` at `p`, before they
/// are first written: a fresh buffer filled in 4 KiB pages takes a page fault per 4 KiB (16 MiB
/// of queries: 5.9 ms of CPU on the Xeon, 4,096 faults), in 2 MiB pages one per 2 MiB (1.1 ms).
/// For buffers the caller fills whole (file contents read in), so no memory is wasted; where
/// transparent huge pages are off this does nothing. Advice only: errors are ignored.
func adviseHugePages(_ p: UnsafeMutableRawPointer, _ bytes: Int) {
    let huge = 2 << 20
    let start = (UInt(bitPattern: p) + UInt(huge - 1)) & ~UInt(huge - 1)
    let end = (UInt(bitPattern: p) + UInt(bytes)) & ~UInt(huge - 1)
    guard end > start, let s = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(s, Int(end - start), MADV_HUGEPAGE)
}
