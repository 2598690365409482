import CKernels

/// A metadata value of a GGUF file.
public indirect enum GGUFValue: Sendable, Equatable {
    case uint(UInt64)
    case int(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])

    /// The value as an integer, if it is one of the integer types.
    public var int: Int? {
        switch self {
        case .uint(let v): return Int(exactly: v)
        case .int(let v): return Int(exactly: v)
        default: return nil
        }
    }
    /// The value as a double, if it is a float or an integer.
    public var double: Double? {
        switch self {
        case .float(let v): return v
        case .uint(let v): return Double(v)
        case .int(let v): return Double(v)
        default: return nil
        }
    }
    /// The value as a string, if it is one.
    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }
    /// The elements, if the value is an array.
    public var array: [GGUFValue]? {
        if case .array(let a) = self { return a }
        return nil
    }
    /// The value as a boolean, if it is one.
    public var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }
}

/// ggml tensor element types this engine reads (others are refused by name).
public enum GGMLType: UInt32, Sendable {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q8_0 = 8

    /// Engine's row type of the same layout.
    public var rowType: RowType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q8_0: return .q8_0
        }
    }

    /// Names of all ggml types, for error messages.
    static let names: [UInt32: String] = [
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
        10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
        18: "IQ3_XXS",
        19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64",
        28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0",
    ]
}

/// One tensor of a GGUF file: ggml dimension order (ne[0] is the row length).
public struct GGUFTensor: Sendable {
    /// Tensor name.
    public let name: String
    /// Dimensions, fastest first (ne[0] is the row length).
    public let dims: [Int]
    /// Storage type.
    public let type: GGMLType
    /// Byte offset from the start of the file.
    public let offset: Int
    /// Bytes of data.
    public let byteCount: Int
    /// Values in the tensor.
    public var elementCount: Int { dims.reduce(1, *) }
    /// Row length (ne[0]) and number of rows (product of the other dims).
    public var rowLength: Int { dims.first ?? 1 }
    /// Rows (the product of every dimension but the first).
    public var rowCount: Int { dims.dropFirst().reduce(1, *) }
}

/// A GGUF v2/v3 file: metadata and tensor directory, with tensor data memory-mapped.
/// Every offset and size is checked against the file; truncation and corruption are thrown
/// as `EngineError.invalidFile` with the position, unknown tensor types as `unsupported`.
public final class GGUFFile: @unchecked Sendable {
    /// The memory-mapped file.
    public let file: MappedFile
    /// GGUF format version (2 or 3).
    public let version: Int
    /// Metadata key-value pairs.
    public private(set) var metadata: [String: GGUFValue] = [:]
    /// Tensor directory by name.
    public private(set) var tensors: [String: GGUFTensor] = [:]
    /// Tensor names in file order.
    public private(set) var tensorOrder: [String] = []
    /// Alignment of tensor data (`general.alignment`, default 32).
    public let alignment: Int

    /// Maps and parses the file at `path`.
    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    /// Parses a mapped file: header, metadata and tensor directory, every size checked against the file.
    public init(file: MappedFile) throws {
        self.file = file
        var r = Reader(file: file)
        let magic = try r.u32()
        guard magic == 0x4655_4747 else {
            throw EngineError.invalidFile("\(file.path): not a GGUF file (magic \(String(magic, radix: 16)))")
        }
        let v = try r.u32()
        guard v == 2 || v == 3 else {
            throw EngineError.unsupported("\(file.path): GGUF version \(v) (supported: 2, 3)")
        }
        version = Int(v)
        let nTensors = try r.u64()
        let nKV = try r.u64()
        guard nTensors <= UInt64(Limits.tensors), nKV < 1 << 24 else {
            throw EngineError.invalidFile(
                "\(file.path): implausible counts (\(nTensors) tensors, \(nKV) keys): corrupt header")
        }
        for _ in 0..<nKV {
            let key = try r.string()
            let type = try r.u32()
            guard metadata[key] == nil else {
                throw EngineError.invalidFile("\(file.path): duplicate metadata key \(key)")
            }
            metadata[key] = try r.value(type: type, key: key, depth: 0)
        }
        alignment = metadata["general.alignment"]?.int ?? 32
        guard alignment > 0 && alignment <= Limits.alignment && alignment & (alignment - 1) == 0 else {
            throw EngineError.invalidFile(
                "\(file.path): general.alignment \(alignment) is not a power of two up to \(Limits.alignment)")
        }
        var infos: [(String, [Int], UInt32, Int)] = []
        for _ in 0..<nTensors {
            let name = try r.string()
            let nd = try r.u32()
            guard nd >= 1 && nd <= 4 else {
                throw EngineError.invalidFile("\(file.path): tensor \(name) has \(nd) dimensions")
            }
            var dims: [Int] = []
            for _ in 0..<nd {
                let d = try r.u64()
                guard d > 0 && d < 1 << 40 else {
                    throw EngineError.invalidFile("\(file.path): tensor \(name) has dimension \(d)")
                }
                dims.append(Int(d))
            }
            let t = try r.u32()
            let off = try r.u64()
            guard off <= UInt64(file.count) else {
                throw EngineError.invalidFile(
                    "\(file.path): tensor \(name) offset \(off) is beyond the file's end (truncated?)")
            }
            infos.append((name, dims, t, Int(off)))
        }
        let dataStart = (r.pos + alignment - 1) / alignment * alignment
        for (name, dims, t, off) in infos {
            guard let type = GGMLType(rawValue: t) else {
                throw EngineError.unsupported(
                    """
                    \(file.path): tensor \(name) has type \(GGMLType.names[t] ?? "#\(t)"); supported: F32, F16, \
                    Q8_0, Q4_0, Q4_1
                    """
                )
            }
            let what = "\(file.path): tensor \(name)"
            var n = 1
            for d in dims { n = try CheckedSize.product(n, d, what: what) }
            guard type.rowType.isQuantized == false || dims[0] % 32 == 0 else {
                throw EngineError.invalidFile(
                    "\(file.path): tensor \(name) of type \(type) has row length \(dims[0]), not a multiple of 32")
            }
            let bytes = try CheckedSize.product(ck_qmatmul_row_bytes(type.rowType.c, dims[0]), n / dims[0], what: what)
            let start = try CheckedSize.sum(dataStart, off, what: what)
            guard off % alignment == 0 else {
                throw EngineError.invalidFile(
                    "\(file.path): tensor \(name) offset \(off) is not aligned to \(alignment)")
            }
            guard bytes <= file.count && start <= file.count - bytes else {
                throw EngineError.invalidFile(
                    """
                    \(file.path): tensor \(name) needs bytes \(start)..<\(start + bytes) but the file has \
                    \(file.count) (truncated?)
                    """
                )
            }
            guard tensors[name] == nil else { throw EngineError.invalidFile("\(file.path): duplicate tensor \(name)") }
            tensors[name] = GGUFTensor(name: name, dims: dims, type: type, offset: start, byteCount: bytes)
            tensorOrder.append(name)
        }
        // tensor data must not overlap (a crafted directory could alias one tensor's bytes to another's)
        let spans = tensors.values.sorted { $0.offset < $1.offset }
        for (a, b) in zip(spans, spans.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw EngineError.invalidFile("\(file.path): tensors \(a.name) and \(b.name) overlap")
        }
    }

    /// The tensor named `name`, or an error that names the file and the tensor.
    public func tensor(_ name: String) throws -> GGUFTensor {
        guard let t = tensors[name] else { throw EngineError.invalidFile("\(file.path): missing tensor \(name)") }
        return t
    }

    /// Raw bytes of a tensor (valid while this object lives).
    public func data(_ t: GGUFTensor) throws -> UnsafeRawBufferPointer { try file.bytes(t.offset, t.byteCount) }

    /// A tensor as a matrix of rows (ne[0] values per row), keeping its storage type. The bytes are
    /// used in place from the file's mapping (no copy); the matrix keeps the mapping alive.
    public func matrix(_ name: String) throws -> QuantizedMatrix {
        let t = try tensor(name)
        let bytes = try data(t)
        // kernels load whole SIMD vectors of floats: a file with a smaller alignment is copied
        guard let base = bytes.baseAddress, Int(bitPattern: base) % 32 == 0 else {
            return try QuantizedMatrix(type: t.type.rowType, rows: t.rowCount, cols: t.rowLength, bytes: Array(bytes))
        }
        return try QuantizedMatrix(
            type: t.type.rowType, rows: t.rowCount, cols: t.rowLength, mapped: bytes, owner: file)
    }

    /// A tensor dequantized to f32 (row-major, ne[0] fastest).
    public func floats(_ name: String, kernels: Kernels) throws -> [Float] {
        try matrix(name).dequantized(kernels: kernels)
    }

    /// Metadata accessors that throw with the key's name.
    public func int(_ key: String) throws -> Int {
        guard let v = metadata[key]?.int else {
            throw EngineError.invalidFile("\(file.path): missing or non-integer metadata \(key)")
        }
        return v
    }
    /// A float metadata value; throws with the key's name if it is missing.
    public func double(_ key: String) throws -> Double {
        guard let v = metadata[key]?.double else {
            throw EngineError.invalidFile("\(file.path): missing or non-numeric metadata \(key)")
        }
        return v
    }
    /// A string metadata value; throws with the key's name if it is missing.
    public func string(_ key: String) throws -> String {
        guard let v = metadata[key]?.string else {
            throw EngineError.invalidFile("\(file.path): missing or non-string metadata \(key)")
        }
        return v
    }

    struct Reader {
        let file: MappedFile
        var pos = 0
        mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
            guard n >= 0, pos <= file.count, n <= file.count - pos else {
                throw EngineError.invalidFile(
                    "\(file.path): unexpected end of file at byte \(pos) (needed \(n) more; truncated?)")
            }
            defer { pos += n }
            return try file.bytes(pos, n)
        }
        mutating func u8() throws -> UInt8 { try take(1)[0] }
        mutating func u32() throws -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
        mutating func u64() throws -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }
        mutating func string() throws -> String {
            let n = try u64()
            guard n <= UInt64(Limits.headerBytes) else {
                throw EngineError.invalidFile("\(file.path): string length \(n) at byte \(pos - 8): corrupt")
            }
            let b = try take(Int(n))
            return String(decoding: b, as: UTF8.self)
        }
        /// Smallest encoding of one value of `type` (bounds array lengths by the bytes left).
        static func minBytes(_ type: UInt32) -> Int {
            switch type {
            case 0, 1, 7: return 1
            case 2, 3: return 2
            case 4, 5, 6: return 4
            case 9: return 12
            default: return 8
            }
        }

        mutating func value(type: UInt32, key: String, depth: Int) throws -> GGUFValue {
            switch type {
            case 0: return .uint(UInt64(try u8()))
            case 1: return .int(Int64(Int8(bitPattern: try u8())))
            case 2: return .uint(UInt64(UInt16(littleEndian: try take(2).loadUnaligned(as: UInt16.self))))
            case 3: return .int(Int64(Int16(littleEndian: try take(2).loadUnaligned(as: Int16.self))))
            case 4: return .uint(UInt64(try u32()))
            case 5: return .int(Int64(Int32(bitPattern: try u32())))
            case 6: return .float(Double(Float(bitPattern: try u32())))
            case 7:
                let b = try u8()
                guard b <= 1 else { throw EngineError.invalidFile("\(file.path): bool value \(b) for \(key)") }
                return .bool(b == 1)
            case 8: return .string(try string())
            case 9:
                let et = try u32()
                let n = try u64()
                guard n <= UInt64(Limits.metadataArray), Int(n) <= (file.count - pos) / Self.minBytes(et) else {
                    throw EngineError.invalidFile(
                        "\(file.path): array of \(n) elements for \(key) does not fit the file: corrupt")
                }
                guard et != 9 || depth + 1 < Limits.metadataDepth else {
                    throw EngineError.invalidFile(
                        "\(file.path): metadata \(key) nests arrays deeper than \(Limits.metadataDepth): corrupt")
                }
                var a: [GGUFValue] = []
                a.reserveCapacity(Int(n))
                for _ in 0..<n { a.append(try value(type: et, key: key, depth: depth + 1)) }
                return .array(a)
            case 10: return .uint(try u64())
            case 11: return .int(Int64(bitPattern: try u64()))
            case 12: return .float(Double(bitPattern: try u64()))
            default: throw EngineError.invalidFile("\(file.path): unknown metadata value type \(type) for \(key)")
            }
        }
    }
}
