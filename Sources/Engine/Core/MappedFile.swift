#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A read-only memory-mapped file. The mapping lives as long as the object.
public final class MappedFile: @unchecked Sendable {
    /// The file's path.
    public let path: String
    /// Bytes in the file.
    public let count: Int
    let base: UnsafeRawPointer?

    /// Maps the file read-only.
    public init(path: String) throws(EngineError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_NONBLOCK) // a FIFO must not block the open
        if fd < 0 { throw EngineError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) != 0 { throw EngineError.io("cannot stat \(path): \(String(cString: strerror(errno)))") }
        if (st.st_mode & S_IFMT) != S_IFREG { throw EngineError.io("cannot map \(path): not a regular file") }
        count = Int(st.st_size)
        if count == 0 {
            base = nil
            return
        }
        let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
        if p == MAP_FAILED { throw EngineError.io("cannot map \(path): \(String(cString: strerror(errno)))") }
        base = UnsafeRawPointer(p)
    }

    deinit { if let base { munmap(UnsafeMutableRawPointer(mutating: base), count) } }

    /// The bytes [offset, offset + length); throws if the range is outside the file.
    public func bytes(_ offset: Int, _ length: Int) throws(EngineError) -> UnsafeRawBufferPointer {
        guard offset >= 0, length >= 0, offset <= count, length <= count - offset else {
            throw EngineError.invalidFile(
                """
                \(path): range \(offset)..<\(offset + length) is beyond the end of the file (\(count) bytes; \
                truncated?)
                """
            )
        }
        return UnsafeRawBufferPointer(start: base.map { $0 + offset }, count: length)
    }
}
