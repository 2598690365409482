/// Writes GGUF v3 files (metadata, then tensor directory, then aligned tensor data), atomically.
public struct GGUFWriter {
    /// Metadata to write, in order.
    public var metadata: [(String, GGUFValue)] = []
    /// Tensors to write, in order (ggml type codes, raw bytes).
    public var tensors: [(name: String, dims: [Int], type: UInt32, bytes: [UInt8])] = []
    /// Data alignment; must be a power of two (GGUF default 32).
    public var alignment = 32

    /// An empty file.
    public init() {}

    /// Adds a tensor of a supported type; `dims` in ggml order (row length first).
    public mutating func add(_ name: String, matrix m: QuantizedMatrix, dims: [Int]? = nil) throws {
        let type: UInt32
        switch m.type {
        case .f32: type = 0
        case .f16: type = 1
        case .q4_0: type = 2
        case .q4_1: type = 3
        case .q8_0: type = 8
        case .q2_1: throw EngineError.unsupported("Q2_1 is Engine's KV format and has no GGUF type")
        }
        let d = dims ?? [m.cols, m.rows]
        try require(d.reduce(1, *) == m.rows * m.cols, "dims \(d) do not match a \(m.rows)x\(m.cols) matrix")
        tensors.append((name, d, type, m.bytes))
    }

    /// Adds raw tensor bytes with an explicit ggml type id (for tests of unsupported types).
    public mutating func addRaw(_ name: String, dims: [Int], type: UInt32, bytes: [UInt8]) {
        tensors.append((name, dims, type, bytes))
    }

    /// Writes a GGUF v3 file atomically.
    public func write(to path: String) throws {
        try require(
            alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two, got \(alignment)")
        var head: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
        func str(_ s: String) {
            let b = Array(s.utf8)
            u64(UInt64(b.count))
            head.append(contentsOf: b)
        }
        func typeID(_ v: GGUFValue) -> UInt32 {
            switch v {
            case .uint: return 10
            case .int: return 11
            case .float: return 12
            case .bool: return 7
            case .string: return 8
            case .array: return 9
            }
        }
        func value(_ v: GGUFValue) {
            switch v {
            case .uint(let x): u64(x)
            case .int(let x): u64(UInt64(bitPattern: x))
            case .float(let x): u64(x.bitPattern)
            case .bool(let b): head.append(b ? 1 : 0)
            case .string(let s): str(s)
            case .array(let a):
                u32(a.first.map(typeID) ?? 10)
                u64(UInt64(a.count))
                for e in a { value(e) }
            }
        }
        u32(0x4655_4747)
        u32(3)
        u64(UInt64(tensors.count))
        // general.alignment is written from `alignment` (as uint32, as the spec defines it).
        let meta = metadata.filter { $0.0 != "general.alignment" }
        u64(UInt64(meta.count + (alignment != 32 ? 1 : 0)))
        for (k, v) in meta {
            str(k)
            u32(typeID(v))
            value(v)
        }
        if alignment != 32 {
            str("general.alignment")
            u32(4)
            u32(UInt32(alignment))
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset += (t.bytes.count + alignment - 1) / alignment * alignment
        }
        for (i, t) in tensors.enumerated() {
            str(t.name)
            u32(UInt32(t.dims.count))
            for d in t.dims { u64(UInt64(d)) }
            u32(t.type)
            u64(UInt64(offsets[i]))
        }
        let pad = (head.count + alignment - 1) / alignment * alignment - head.count
        head.append(contentsOf: [UInt8](repeating: 0, count: pad))
        let w = try AtomicFileWriter(path: path)
        try w.write(head)
        for t in tensors {
            try w.write(t.bytes)
            let p = (t.bytes.count + alignment - 1) / alignment * alignment - t.bytes.count
            if p > 0 { try w.write([UInt8](repeating: 0, count: p)) }
        }
        try w.commit()
    }
}
