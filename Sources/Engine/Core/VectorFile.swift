import Foundation

/// Vector files: .fvecs / .bvecs / .ivecs (per vector: int32 dimension, then float32 / uint8 /
/// int32 values), .npy (2-D float32), and IDX image files (MNIST / Fashion-MNIST, optionally
/// .gz, decompressed with the system's gzip).
public enum VectorFile {
    /// Writes n x dim vectors; the format follows the extension (.fvecs or .npy). Atomic.
    public static func write(_ values: [Float], dim: Int, to path: String) throws {
        try require(
            dim > 0 && values.count % dim == 0, "\(values.count) values are not whole vectors of dimension \(dim)")
        let n = values.count / dim
        if path.hasSuffix(".npy") {
            try NPY.write(values, shape: [n, dim], to: path)
            return
        }
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

    /// Reads vectors as f32: .fvecs, .bvecs, .npy (float32, 2-D), or IDX (`*-idx3-ubyte[.gz]`).
    public static func read(path: String) throws -> (values: [Float], dim: Int) {
        if path.hasSuffix(".bvecs") {
            let (v, d) = try readVecs(path: path, elementBytes: 1)
            return (v.map { Float($0) }, d)
        }
        if path.contains("idx3-ubyte") { return try readIDX(path: path) }
        if path.hasSuffix(".npy") {
            let (v, shape) = try NPY.readFloat32(path: path)
            guard shape.count == 2 else {
                throw EngineError.invalidFile("\(path): expected a 2-D array, shape \(shape)")
            }
            return (v, shape[1])
        }
        guard path.hasSuffix(".fvecs") else {
            throw EngineError.invalidArgument(
                "\(path): unknown vector file type (expected .fvecs, .bvecs, .npy or an IDX *-idx3-ubyte[.gz] file)")
        }
        let f = try MappedFile(path: path)
        guard f.count >= 4 else { throw EngineError.invalidFile("\(path): empty or truncated .fvecs") }
        let dim = Int(Int32(littleEndian: try f.bytes(0, 4).loadUnaligned(as: Int32.self)))
        guard dim > 0 && dim <= Limits.dimension else {
            throw EngineError.invalidFile("\(path): bad dimension \(dim) (at most \(Limits.dimension))")
        }
        let rec = 4 + 4 * dim
        guard f.count % rec == 0 else {
            throw EngineError.invalidFile(
                "\(path): size \(f.count) is not a whole number of \(dim)-d records (truncated?)")
        }
        var out: [Float] = []
        out.reserveCapacity(f.count / rec * dim)
        for i in 0..<(f.count / rec) {
            let b = try f.bytes(i * rec, rec)
            guard Int(Int32(littleEndian: b.loadUnaligned(as: Int32.self))) == dim else {
                throw EngineError.invalidFile("\(path): record \(i) has a different dimension")
            }
            for j in 0..<dim {
                out.append(
                    Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 + 4 * j, as: UInt32.self)))
                )
            }
        }
        return (out, dim)
    }

    /// Reads .ivecs (e.g. ground-truth neighbour ids): rows of int32.
    public static func readIvecs(path: String) throws -> (values: [Int32], dim: Int) {
        guard path.hasSuffix(".ivecs") else { throw EngineError.invalidArgument("\(path): expected an .ivecs file") }
        let (v, d) = try readVecs(path: path, elementBytes: 4)
        return (v.map { Int32(bitPattern: $0) }, d)
    }

    /// Writes rows of int32 as .ivecs, atomically.
    public static func writeIvecs(_ values: [Int32], dim: Int, to path: String) throws {
        try require(dim > 0 && values.count % dim == 0, "\(values.count) values are not whole rows of \(dim)")
        guard path.hasSuffix(".ivecs") else {
            throw EngineError.invalidArgument("\(path): neighbour ids are written as .ivecs")
        }
        let w = try AtomicFileWriter(path: path)
        var d = Int32(dim).littleEndian
        for i in 0..<(values.count / dim) {
            try withUnsafeBytes(of: &d) { try w.write($0) }
            try values[(i * dim)..<((i + 1) * dim)].map { $0.littleEndian }.withUnsafeBytes { try w.write($0) }
        }
        try w.commit()
    }

    /// Writes neighbour ids, `k` per query (nil pads a short row), atomically: `.npy` as int64
    /// (-1 pads), `.ivecs` as int32 (-1 pads; ids above Int32.max are refused, never truncated).
    public static func writeNeighborIDs(_ ids: [UInt64?], k: Int, to path: String) throws {
        try require(k > 0 && ids.count % k == 0, "\(ids.count) ids are not whole rows of \(k)")
        if path.hasSuffix(".npy") {
            for case let id? in ids where id > UInt64(Int64.max) {
                throw EngineError.invalidArgument("id \(id) does not fit in an int64 .npy")
            }
            try NPY.write(ids.map { $0.map { Int64($0) } ?? -1 }, shape: [ids.count / k, k], to: path)
        } else if path.hasSuffix(".ivecs") {
            let narrow = try ids.map { id -> Int32 in
                guard let id else { return -1 }
                guard id <= UInt64(Int32.max) else {
                    throw EngineError.invalidArgument(
                        "id \(id) does not fit in .ivecs (int32): write a .npy output for 64-bit ids")
                }
                return Int32(id)
            }
            try writeIvecs(narrow, dim: k, to: path)
        } else {
            throw EngineError.invalidArgument("\(path): neighbour ids are written as .ivecs (int32) or .npy (int64)")
        }
    }

    /// Raw elements (as UInt32, zero-extended for 1-byte files) of a *vecs file.
    static func readVecs(path: String, elementBytes eb: Int) throws -> (values: [UInt32], dim: Int) {
        let f = try MappedFile(path: path)
        guard f.count >= 4 else { throw EngineError.invalidFile("\(path): empty or truncated vector file") }
        let dim = Int(Int32(littleEndian: try f.bytes(0, 4).loadUnaligned(as: Int32.self)))
        guard dim > 0 && dim <= Limits.dimension else {
            throw EngineError.invalidFile("\(path): bad dimension \(dim) (at most \(Limits.dimension))")
        }
        let rec = 4 + eb * dim
        guard f.count % rec == 0 else {
            throw EngineError.invalidFile(
                "\(path): size \(f.count) is not a whole number of \(dim)-d records (truncated?)")
        }
        let n = f.count / rec
        var out = [UInt32](repeating: 0, count: n * dim)
        let all = try f.bytes(0, f.count)
        for i in 0..<n {
            guard Int(Int32(littleEndian: all.loadUnaligned(fromByteOffset: i * rec, as: Int32.self))) == dim else {
                throw EngineError.invalidFile("\(path): record \(i) has a different dimension")
            }
            let base = i * rec + 4
            if eb == 1 {
                for j in 0..<dim { out[i * dim + j] = UInt32(all[base + j]) }
            } else {
                for j in 0..<dim {
                    out[i * dim + j] = UInt32(
                        littleEndian: all.loadUnaligned(fromByteOffset: base + 4 * j, as: UInt32.self))
                }
            }
        }
        return (out, dim)
    }

    /// IDX3 unsigned-byte images (magic 0x00000803, big-endian counts): n x (rows * cols) values
    /// 0...255 as f32. A .gz file is decompressed with `gzip -dc`, read only as far as the header
    /// says (so a small file cannot expand into an unbounded allocation).
    public static func readIDX(path: String) throws -> (values: [Float], dim: Int) {
        var process: Process?
        let input: FileHandle
        if path.hasSuffix(".gz") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/gzip")
            p.arguments = ["-dc", path]
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = FileHandle.nullDevice
            do { try p.run() } catch { throw EngineError.io("cannot run gzip to read \(path): \(error)") }
            process = p
            input = pipe.fileHandleForReading
        } else {
            guard let h = FileHandle(forReadingAtPath: path) else { throw EngineError.io("cannot read \(path)") }
            input = h
        }
        defer {
            if let process, process.isRunning { process.terminate() }
            process?.waitUntilExit()
        }
        func read(_ n: Int) throws -> [UInt8] {
            var out: [UInt8] = []
            while out.count < n { // grows with what arrives, never by what a header claims
                guard let d = try input.read(upToCount: min(n - out.count, 1 << 20)), !d.isEmpty else { break }
                out += d
            }
            return out
        }
        let head = try read(16)
        func be32(_ o: Int) -> Int {
            Int(head[o]) << 24 | Int(head[o + 1]) << 16 | Int(head[o + 2]) << 8 | Int(head[o + 3])
        }
        guard head.count == 16, be32(0) == 0x803 else {
            throw EngineError.invalidFile("\(path): not an IDX3 unsigned-byte file")
        }
        let n = be32(4)
        let (rows, cols) = (be32(8), be32(12))
        guard n > 0, rows > 0, cols > 0, rows <= Limits.dimension, cols <= Limits.dimension,
            rows * cols <= Limits.dimension
        else {
            throw EngineError.invalidFile(
                "\(path): header claims \(n) images of \(rows) x \(cols) pixels (at most \(Limits.dimension) pixels)")
        }
        let dim = rows * cols
        let total = try CheckedSize.product(n, dim, what: "\(path) header")
        // the data cannot exceed what the file can hold: its size, or deflate's ~1032:1 for .gz
        let fileSize = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        guard total <= (process == nil ? fileSize - 16 : 1032 * fileSize) else {
            throw EngineError.invalidFile(
                "\(path): header claims \(n) images of \(dim) pixels, more than a \(fileSize)-byte file can hold")
        }
        let pixels = try read(total)
        guard pixels.count == total, try read(1).isEmpty else {
            throw EngineError.invalidFile(
                "\(path): the data does not hold exactly \(n) images of \(dim) pixels (truncated or trailing bytes)")
        }
        if let process {
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw EngineError.invalidFile("\(path): gzip failed (corrupt or truncated)")
            }
        }
        return (pixels.map { Float($0) }, dim)
    }
}
