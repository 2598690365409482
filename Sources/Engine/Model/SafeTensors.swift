import Foundation

/// A safetensors file: an 8-byte little-endian header length, a JSON header
/// {name: {dtype, shape, data_offsets: [begin, end]}} and the tensor data, memory-mapped.
/// Offsets are checked against the file; truncation and corruption throw `invalidFile`.
public final class SafeTensorsFile: @unchecked Sendable {
    /// One tensor's entry in the header.
    public struct Tensor: Sendable {
        /// Tensor name.
        public let name: String
        /// Element type (F32, F16, BF16, ...).
        public let dtype: String
        /// Shape, slowest first.
        public let shape: [Int]
        /// Offset of the data from the start of the file.
        public let offset: Int
        /// Bytes of data.
        public let byteCount: Int
    }
    /// The memory-mapped file.
    public let file: MappedFile
    /// Tensor directory by name.
    public private(set) var tensors: [String: Tensor] = [:]
    /// The header's `__metadata__` strings.
    public private(set) var metadata: [String: String] = [:]

    /// Maps and parses the file at `path`; every entry checked against the file's size.
    public init(path: String) throws {
        file = try MappedFile(path: path)
        guard file.count >= 8 else {
            throw EngineError.invalidFile("\(path): \(file.count) bytes: not a safetensors file")
        }
        let raw = UInt64(littleEndian: try file.bytes(0, 8).loadUnaligned(as: UInt64.self))
        let n = raw <= UInt64(Limits.headerBytes) ? Int(raw) : -1
        guard n > 1, n <= file.count - 8 else {
            throw EngineError.invalidFile(
                "\(path): header length \(n) does not fit the file (\(file.count) bytes; truncated or not safetensors)")
        }
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: Data(try file.bytes(8, n))) } catch {
            throw EngineError.invalidFile("\(path): header is not valid JSON (\(error.localizedDescription))")
        }
        guard let obj = json as? [String: Any] else {
            throw EngineError.invalidFile("\(path): header is not a JSON object")
        }
        let dataStart = 8 + n
        for (name, v) in obj {
            if name == "__metadata__" {
                metadata = (v as? [String: String]) ?? [:]
                continue
            }
            guard let d = v as? [String: Any], let dtype = d["dtype"] as? String, let shape = d["shape"] as? [Int],
                let offs = d["data_offsets"] as? [Int], offs.count == 2
            else {
                throw EngineError.invalidFile("\(path): malformed entry for tensor \(name)")
            }
            let size: Int
            switch dtype {
            case "F32", "I32", "U32": size = 4
            case "F16", "BF16", "I16", "U16": size = 2
            case "F64", "I64", "U64": size = 8
            case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": size = 1
            default: throw EngineError.unsupported("\(path): tensor \(name) has dtype \(dtype)")
            }
            let what = "\(path): tensor \(name)"
            guard shape.count <= 8, shape.allSatisfy({ $0 >= 0 }), offs[0] >= 0, offs[1] >= offs[0] else {
                throw EngineError.invalidFile("\(what) has shape \(shape) and offsets \(offs): corrupt")
            }
            var count = 1
            for d in shape { count = try CheckedSize.product(count, d, what: what) }
            let bytes = try CheckedSize.product(count, size, what: what)
            guard offs[1] - offs[0] == bytes else {
                throw EngineError.invalidFile("\(path): tensor \(name) offsets \(offs) do not match \(dtype) \(shape)")
            }
            guard offs[1] <= file.count - dataStart else {
                throw EngineError.invalidFile(
                    """
                    \(path): tensor \(name) ends at data byte \(offs[1]) but the file has \(file.count - dataStart) \
                    (truncated?)
                    """
                )
            }
            tensors[name] = Tensor(
                name: name, dtype: dtype, shape: shape, offset: dataStart + offs[0], byteCount: bytes)
        }
        // tensor data must not overlap (a crafted header could alias one tensor's bytes to another's)
        let spans = tensors.values.filter { $0.byteCount > 0 }.sorted { $0.offset < $1.offset }
        for (a, b) in zip(spans, spans.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw EngineError.invalidFile("\(path): tensors \(a.name) and \(b.name) overlap")
        }
    }

    /// A tensor converted to f32 (F32, F16 and BF16 are accepted), with its expected shape checked.
    public func floats(_ name: String, shape expected: [Int]? = nil) throws -> [Float] {
        guard let t = tensors[name] else { throw EngineError.invalidFile("\(file.path): missing tensor \(name)") }
        if let expected, expected != t.shape {
            throw EngineError.invalidFile("\(file.path): tensor \(name) has shape \(t.shape), expected \(expected)")
        }
        let b = try file.bytes(t.offset, t.byteCount)
        let n = t.shape.reduce(1, *)
        switch t.dtype {
        case "F32":
            return (0..<n).map {
                Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
            }
        case "F16":
            return (0..<n).map {
                Float(
                    Float16(bitPattern: UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))))
            }
        case "BF16":
            return (0..<n).map {
                Float(
                    bitPattern: UInt32(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)))
                        << 16)
            }
        default:
            throw EngineError.unsupported(
                "\(file.path): tensor \(name) has dtype \(t.dtype); floating-point weights need F32, F16 or BF16")
        }
    }
}

/// Writes a safetensors file (F32 tensors), atomically: 8-byte little-endian header length, a
/// JSON header padded with spaces to a multiple of 8, then the tensor bytes in header order.
public struct SafeTensorsWriter {
    /// The `__metadata__` strings to write.
    public var metadata: [String: String] = [:]
    /// Tensors to write, in order.
    public private(set) var tensors: [(name: String, shape: [Int], values: [Float])] = []

    /// An empty file.
    public init() {}

    /// Adds an f32 tensor; throws if `values` does not fill `shape`.
    public mutating func add(_ name: String, shape: [Int], _ values: [Float]) throws {
        try require(
            shape.reduce(1, *) == values.count, "tensor \(name): shape \(shape) does not hold \(values.count) values")
        try require(!tensors.contains { $0.name == name } && name != "__metadata__", "duplicate tensor name \(name)")
        tensors.append((name, shape, values))
    }

    /// Writes the file atomically.
    public func write(to path: String) throws {
        var header: [String: Any] = [:]
        var off = 0
        for t in tensors {
            header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [off, off + 4 * t.values.count]]
            off += 4 * t.values.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        let w = try AtomicFileWriter(path: path)
        try withUnsafeBytes(of: UInt64(json.count).littleEndian) { try w.write($0) }
        try w.write(json)
        for t in tensors {
            try t.values.map { $0.bitPattern.littleEndian }.withUnsafeBytes { try w.write($0) }
        }
        try w.commit()
    }
}
