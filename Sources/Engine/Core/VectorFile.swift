/// Vector files: .fvecs (per vector: int32 dimension, then float32 values) and .npy.
public enum VectorFile {
    /// Writes n x dim vectors; the format follows the extension (.fvecs or .npy). Atomic.
    public static func write(_ values: [Float], dim: Int, to path: String) throws {
        try require(dim > 0 && values.count % dim == 0, "\(values.count) values are not whole vectors of dimension \(dim)")
        let n = values.count / dim
        if path.hasSuffix(".npy") { try NPY.write(values, shape: [n, dim], to: path); return }
        guard path.hasSuffix(".fvecs") else {
            throw EngineError.invalidArgument("unknown vector file extension in \(path): use .fvecs or .npy")
        }
        let w = try AtomicFileWriter(path: path)
        var d = Int32(dim).littleEndian
        for i in 0..<n {
            try withUnsafeBytes(of: &d) { try w.write($0) }
            try values[(i * dim)..<((i + 1) * dim)].withUnsafeBytes { try w.write($0) }
        }
        try w.commit()
    }

    /// Reads .fvecs or .npy (float32, 2-D) vectors; returns values and dimension.
    public static func read(path: String) throws -> (values: [Float], dim: Int) {
        if path.hasSuffix(".npy") {
            let (v, shape) = try NPY.readFloat32(path: path)
            guard shape.count == 2 else { throw EngineError.invalidFile("\(path): expected a 2-D array, shape \(shape)") }
            return (v, shape[1])
        }
        let f = try MappedFile(path: path)
        guard f.count >= 4 else { throw EngineError.invalidFile("\(path): empty or truncated .fvecs") }
        let dim = Int(Int32(littleEndian: try f.bytes(0, 4).loadUnaligned(as: Int32.self)))
        guard dim > 0 && dim < 1 << 20 else { throw EngineError.invalidFile("\(path): bad dimension \(dim)") }
        let rec = 4 + 4 * dim
        guard f.count % rec == 0 else { throw EngineError.invalidFile("\(path): size \(f.count) is not a whole number of \(dim)-d records (truncated?)") }
        var out: [Float] = []
        out.reserveCapacity(f.count / rec * dim)
        for i in 0..<(f.count / rec) {
            let b = try f.bytes(i * rec, rec)
            guard Int(Int32(littleEndian: b.loadUnaligned(as: Int32.self))) == dim else {
                throw EngineError.invalidFile("\(path): record \(i) has a different dimension")
            }
            for j in 0..<dim { out.append(Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 + 4 * j, as: UInt32.self)))) }
        }
        return (out, dim)
    }
}
