/// NumPy .npy files (format 1.0), little-endian float32 / int32 / int64 / uint8 arrays.
public enum NPY {
    /// Writes a C-order float32 array of `shape` atomically.
    public static func write(_ values: [Float], shape: [Int], to path: String) throws {
        try require(shape.reduce(1, *) == values.count, "shape \(shape) does not match \(values.count) values")
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(dims)), }"
        let total = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        let hl = UInt16(header.utf8.count)
        bytes += [UInt8(hl & 0xff), UInt8(hl >> 8)] + Array(header.utf8)
        let w = try AtomicFileWriter(path: path)
        try w.write(bytes)
        try values.withUnsafeBytes { try w.write($0) }
        try w.commit()
    }

    /// Reads a C-order little-endian float32 array; returns values and shape.
    public static func readFloat32(path: String) throws -> (values: [Float], shape: [Int]) {
        let f = try MappedFile(path: path)
        let head = try f.bytes(0, min(f.count, 10))
        guard head.count == 10, head[0] == 0x93, Array(head[1..<6]) == Array("NUMPY".utf8) else {
            throw EngineError.invalidFile("\(path): not a .npy file")
        }
        let major = head[6]
        let hlen: Int, start: Int
        if major == 1 { hlen = Int(head[8]) | Int(head[9]) << 8; start = 10 }
        else {
            let h4 = try f.bytes(8, 4)
            hlen = Int(h4[0]) | Int(h4[1]) << 8 | Int(h4[2]) << 16 | Int(h4[3]) << 24; start = 12
        }
        let header = String(decoding: try f.bytes(start, hlen), as: UTF8.self)
        guard header.contains("'descr': '<f4'") else { throw EngineError.unsupported("\(path): only little-endian float32 (<f4) .npy is supported; header \(header)") }
        guard header.contains("'fortran_order': False") else { throw EngineError.unsupported("\(path): Fortran-order arrays are not supported") }
        guard let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
            throw EngineError.invalidFile("\(path): no shape in header")
        }
        let shape = try header[open.upperBound..<close].split(separator: ",").map { s -> Int in
            guard let v = Int(s.trimmingCharacters(in: .whitespaces)), v >= 0 else { throw EngineError.invalidFile("\(path): bad shape \(header)") }
            return v
        }
        let n = shape.reduce(1, *)
        let data = try f.bytes(start + hlen, n * 4)
        return (Array(data.bindMemory(to: Float.self)), shape)
    }
}

import Foundation
