import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Rows of f32 vectors read in blocks, so that an index build need not hold its input in
/// memory. `VectorFileSource` streams .fvecs/.bvecs/.npy files with pread; `ArrayVectorSource`
/// wraps values already in memory (no copy).
public protocol VectorSource: Sendable {
    var count: Int { get }
    var dim: Int { get }
    /// Copies rows `rows` as f32, row-major, to `dst` (rows.count * dim floats).
    func read(rows: Range<Int>, into dst: UnsafeMutablePointer<Float>) throws
}

/// Vectors held in a Swift array (n x dim, row-major).
public struct ArrayVectorSource: VectorSource {
    /// Row-major values.
    public let values: [Float]
    /// Values per row.
    public let dim: Int
    /// Rows.
    public var count: Int { values.count / dim }

    /// Rows of `dim` values; throws if the values are not whole rows.
    public init(values: [Float], dim: Int) throws {
        try require(dim > 0 && values.count % dim == 0, "\(values.count) values are not whole \(dim)-d vectors")
        self.values = values
        self.dim = dim
    }

    /// Copies rows into dst.
    public func read(rows: Range<Int>, into dst: UnsafeMutablePointer<Float>) throws {
        try require(rows.lowerBound >= 0 && rows.upperBound <= count, "rows \(rows) outside 0..<\(count)")
        values.withUnsafeBufferPointer {
            dst.update(from: $0.baseAddress! + rows.lowerBound * dim, count: rows.count * dim)
        }
    }
}

/// A vector file read in blocks with pread: .fvecs (int32 dimension + float32 values per record),
/// .bvecs (int32 dimension + uint8 values) or .npy (2-D little-endian float32, C order). Sizes are
/// checked on open and every record's dimension prefix on read, so a truncated or mixed file is
/// refused with the offending record named.
public final class VectorFileSource: VectorSource, @unchecked Sendable {
    enum Kind { case fvecs, bvecs, npy }
    /// The file read.
    public let path: String
    /// Rows in the file.
    public let count: Int
    /// Values per row.
    public let dim: Int
    let kind: Kind
    let fd: Int32
    let dataOffset: Int
    let recordBytes: Int

    /// Opens a .fvecs, .bvecs or .npy file and checks its layout against its size.
    public init(path: String) throws {
        self.path = path
        if path.hasSuffix(".fvecs") {
            kind = .fvecs
        } else if path.hasSuffix(".bvecs") {
            kind = .bvecs
        } else if path.hasSuffix(".npy") {
            kind = .npy
        } else {
            throw EngineError.unsupported(
                "\(path): streaming reads .fvecs, .bvecs or .npy (use VectorFile.read for IDX)")
        }
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) // a FIFO must not block the open
        guard fd >= 0 else { throw EngineError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw EngineError.io("cannot read \(path): not a regular file")
        }
        let size = Int(st.st_size)
        do {
            switch kind {
            case .npy:
                let (shape, start) = try NPY.float32Layout(path: path)
                guard shape.count == 2, shape[1] > 0, shape[1] <= Limits.dimension else {
                    throw EngineError.invalidFile(
                        "\(path): expected a 2-D array of 1...\(Limits.dimension) columns, shape \(shape)")
                }
                count = shape[0]
                dim = shape[1]
                dataOffset = start
                recordBytes = 4 * dim
                guard size >= start + count * recordBytes else {
                    throw EngineError.invalidFile(
                        """
                        \(path): \(size) bytes, the header's \(count) x \(dim) floats need \
                        \(start + count * recordBytes) (truncated)
                        """
                    )
                }
            case .fvecs, .bvecs:
                guard size >= 4 else { throw EngineError.invalidFile("\(path): empty or truncated vector file") }
                var d: Int32 = 0
                guard pread(fd, &d, 4, 0) == 4 else { throw EngineError.io("cannot read \(path)") }
                dim = Int(Int32(littleEndian: d))
                guard dim > 0 && dim <= Limits.dimension else {
                    throw EngineError.invalidFile("\(path): bad dimension \(dim) (at most \(Limits.dimension))")
                }
                recordBytes = 4 + (kind == .fvecs ? 4 : 1) * dim
                dataOffset = 0
                guard size % recordBytes == 0 else {
                    throw EngineError.invalidFile(
                        "\(path): size \(size) is not a whole number of \(dim)-d records (truncated?)")
                }
                count = size / recordBytes
            }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// Reads rows into dst with pread (each record's dimension prefix checked).
    public func read(rows: Range<Int>, into dst: UnsafeMutablePointer<Float>) throws {
        try require(rows.lowerBound >= 0 && rows.upperBound <= count, "rows \(rows) outside 0..<\(count)")
        if rows.isEmpty { return }
        let bytes = rows.count * recordBytes
        let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16)
        defer { buf.deallocate() }
        try preadFully(fd, buf, bytes, at: dataOffset + rows.lowerBound * recordBytes, path: path)
        for (t, i) in rows.enumerated() {
            let rec = buf + t * recordBytes
            var body = rec
            if kind != .npy {
                guard Int(Int32(littleEndian: rec.loadUnaligned(as: Int32.self))) == dim else {
                    throw EngineError.invalidFile("\(path): record \(i) has a different dimension")
                }
                body += 4
            }
            let out = dst + t * dim
            if kind == .bvecs {
                for j in 0..<dim { out[j] = Float(body.load(fromByteOffset: j, as: UInt8.self)) }
            } else {
                for j in 0..<dim {
                    out[j] = Float(
                        bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4 * j, as: UInt32.self)))
                }
            }
        }
    }
}

extension VectorFile {
    /// A block reader for `path`: streamed for .fvecs/.bvecs/.npy, read into memory otherwise (IDX).
    public static func source(path: String) throws -> VectorSource {
        if path.hasSuffix(".fvecs") || path.hasSuffix(".bvecs") || path.hasSuffix(".npy") {
            return try VectorFileSource(path: path)
        }
        let (v, d) = try read(path: path)
        return try ArrayVectorSource(values: v, dim: d)
    }
}
