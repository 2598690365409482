import Foundation

/// NumPy .npy files (format 1.0), little-endian float32 / int32 / int64 / uint8 arrays.
public enum NPY {
    /// Writes a C-order float32 array of `shape` atomically.
    public static func write(_ values: [Float], shape: [Int], to path: String) throws {
        try values.withUnsafeBytes { try write(raw: $0, descr: "<f4", count: values.count, shape: shape, to: path) }
    }

    /// Writes a C-order int64 array of `shape` atomically.
    public static func write(_ values: [Int64], shape: [Int], to path: String) throws {
        let le = values.map(\.littleEndian)
        try le.withUnsafeBytes { try write(raw: $0, descr: "<i8", count: values.count, shape: shape, to: path) }
    }

    static func write(
        raw: UnsafeRawBufferPointer, descr: String, count: Int, shape: [Int], to path: String
    ) throws {
        try require(shape.reduce(1, *) == count, "shape \(shape) does not match \(count) values")
        let w = try AtomicFileWriter(path: path)
        try w.write(header(descr: descr, shape: shape))
        try w.write(raw)
        try w.commit()
    }

    /// The magic, version and header dict of a format 1.0 file, padded to 64 bytes.
    static func header(descr: String, shape: [Int]) -> [UInt8] {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(dims)), }"
        let total = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        let hl = UInt16(header.utf8.count)
        bytes += [UInt8(hl & 0xff), UInt8(hl >> 8)] + Array(header.utf8)
        return bytes
    }

    /// Reads a C-order little-endian float32 array; returns values and shape.
    public static func readFloat32(path: String) throws -> (values: [Float], shape: [Int]) {
        let (shape, start) = try float32Layout(path: path)
        let f = try MappedFile(path: path)
        let n = shape.reduce(1, *)
        let data = try f.bytes(start, n * 4)
        // copied once into fresh pages (no zero fill first); the data may be unaligned
        let out = [Float](unsafeUninitializedCapacity: n) { buf, count in
            if let base = buf.baseAddress { adviseHugePages(base, 4 * n) }
            UnsafeMutableRawBufferPointer(buf).copyMemory(from: data)
            count = n
        }
        return (out, shape)
    }

    /// Shape and data offset of a C-order little-endian float32 .npy file (header checked).
    public static func float32Layout(path: String) throws -> (shape: [Int], dataOffset: Int) {
        try layout(path: path, descr: "<f4", itemSize: 4)
    }

    /// Reads a C-order little-endian int64 array; returns values and shape.
    public static func readInt64(path: String) throws -> (values: [Int64], shape: [Int]) {
        let (shape, start) = try layout(path: path, descr: "<i8", itemSize: 8)
        let f = try MappedFile(path: path)
        let n = shape.reduce(1, *)
        let data = try f.bytes(start, n * 8)
        var out = [Int64](repeating: 0, count: n)
        out.withUnsafeMutableBytes { $0.copyMemory(from: data) }
        return (out.map { Int64(littleEndian: $0) }, shape)
    }

    /// Shape and data offset of a C-order .npy file of `descr` elements (header and size checked).
    static func layout(path: String, descr: String, itemSize: Int) throws -> (shape: [Int], dataOffset: Int) {
        guard let h = FileHandle(forReadingAtPath: path) else { throw EngineError.io("cannot open \(path)") }
        defer { try? h.close() }
        let head = [UInt8](h.readData(ofLength: 12))
        guard head.count >= 10, head[0] == 0x93, Array(head[1..<6]) == Array("NUMPY".utf8) else {
            throw EngineError.invalidFile("\(path): not a .npy file")
        }
        let hlen: Int
        let start: Int
        if head[6] == 1 {
            hlen = Int(head[8]) | Int(head[9]) << 8
            start = 10
        } else {
            guard head.count == 12 else { throw EngineError.invalidFile("\(path): truncated .npy header") }
            hlen = Int(head[8]) | Int(head[9]) << 8 | Int(head[10]) << 16 | Int(head[11]) << 24
            start = 12
        }
        try h.seek(toOffset: UInt64(start))
        let hb = h.readData(ofLength: hlen)
        guard hb.count == hlen else { throw EngineError.invalidFile("\(path): truncated .npy header") }
        let header = String(decoding: hb, as: UTF8.self)
        let fields = try parseHeader(header, path: path)
        guard fields["descr"] == "'\(descr)'" else {
            throw EngineError.unsupported(
                "\(path): expected a \(descr) .npy array; descr is \(fields["descr"] ?? "missing")")
        }
        guard fields["fortran_order"] == "False" else {
            throw EngineError.unsupported("\(path): Fortran-order arrays are not supported")
        }
        guard let tuple = fields["shape"], tuple.hasPrefix("("), tuple.hasSuffix(")") else {
            throw EngineError.invalidFile("\(path): no shape in header")
        }
        let shape = try tuple.dropFirst().dropLast().split(separator: ",").map { s -> Int in
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)), v >= 0 else {
                throw EngineError.invalidFile("\(path): bad shape \(tuple)")
            }
            return v
        }
        var n = 1
        for d in shape { n = try CheckedSize.product(n, d, what: "\(path) shape \(shape)") }
        let size = try CheckedSize.product(n, itemSize, what: "\(path) shape \(shape)")
        let fileSize = Int((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1)
        guard fileSize >= 0, size == fileSize - (start + hlen) else {
            throw EngineError.invalidFile(
                "\(path): shape \(shape) needs \(size) data bytes, the file has \(fileSize - start - hlen) (truncated?)"
            )
        }
        return (shape, start + hlen)
    }

    /// The top-level entries of a .npy header dict (`{'descr': '<f4', 'fortran_order': False,
    /// 'shape': (2, 3), }`): key to the value's source text. Quoted strings and parenthesised tuples
    /// are taken whole, so a key name inside another value is never mistaken for the key.
    static func parseHeader(_ h: String, path: String) throws -> [String: String] {
        let c = Array(h.trimmingCharacters(in: .whitespacesAndNewlines))
        guard c.first == "{", c.last == "}" else { throw EngineError.invalidFile("\(path): header is not a dict") }
        var out: [String: String] = [:]
        var i = 1
        func skipSpace() { while i < c.count - 1 && (c[i] == " " || c[i] == ",") { i += 1 } }
        func quoted() throws -> String {
            let q = c[i]
            var j = i + 1
            while j < c.count && c[j] != q { j += 1 }
            guard j < c.count else { throw EngineError.invalidFile("\(path): unterminated string in header") }
            defer { i = j + 1 }
            return String(c[i...j])
        }
        while true {
            skipSpace()
            if i >= c.count - 1 { break }
            guard c[i] == "'" || c[i] == "\"" else { throw EngineError.invalidFile("\(path): malformed header") }
            let key = String(try quoted().dropFirst().dropLast())
            while i < c.count && c[i] == " " { i += 1 }
            guard i < c.count, c[i] == ":" else { throw EngineError.invalidFile("\(path): malformed header") }
            i += 1
            while i < c.count && c[i] == " " { i += 1 }
            guard i < c.count - 1 else { throw EngineError.invalidFile("\(path): malformed header") }
            let value: String
            if c[i] == "'" || c[i] == "\"" {
                value = try quoted()
            } else if c[i] == "(" {
                guard let close = c[i...].firstIndex(of: ")") else {
                    throw EngineError.invalidFile("\(path): unterminated tuple in header")
                }
                value = String(c[i...close])
                i = close + 1
            } else {
                var j = i
                while j < c.count - 1 && c[j] != "," { j += 1 }
                value = String(c[i..<j]).trimmingCharacters(in: .whitespaces)
                i = j
            }
            guard out[key] == nil else { throw EngineError.invalidFile("\(path): duplicate header key \(key)") }
            out[key] = value
        }
        return out
    }
}

/// A .npy file written row by row when its shape is known up front (atomic: nothing appears at
/// `path` unless every row was written and `commit` was called).
public final class NPYStreamWriter {
    let writer: AtomicFileWriter
    let expected: Int
    let start: Int

    /// A float32 (`<f4`) or int64 (`<i8`) array of `shape`.
    public init(path: String, descr: String, shape: [Int]) throws {
        try require(descr == "<f4" || descr == "<i8", "unsupported .npy element type \(descr)")
        var n = 1
        for d in shape { n = try CheckedSize.product(n, d, what: "\(path) shape \(shape)") }
        expected = try CheckedSize.product(n, descr == "<f4" ? 4 : 8, what: "\(path) shape \(shape)")
        writer = try AtomicFileWriter(path: path)
        let h = NPY.header(descr: descr, shape: shape)
        start = h.count
        try writer.write(h)
    }

    /// Appends raw little-endian element bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws { try writer.write(bytes) }

    /// Moves the file into place; throws unless exactly the shape's bytes were written.
    public func commit() throws {
        try require(
            writer.bytesWritten - start == expected,
            "\(writer.path): \(writer.bytesWritten - start) data bytes written, the shape needs \(expected)")
        try writer.commit()
    }
}
