import Engine
import FuzzSupport

/// .npy, .fvecs, .bvecs, .ivecs and IDX readers (whole-file and streaming); the first byte picks the format.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let names = ["v.npy", "v.fvecs", "v.bvecs", "v.ivecs", "v-idx3-ubyte"]
    let name = names[Int(data[0]) % names.count]
    let path = scratchFile(data + 1, size - 1, name: name)
    refuseQuietly { _ = try VectorFile.read(path: path) }
    refuseQuietly { _ = try VectorFile.readIvecs(path: path) }
    refuseQuietly {
        let s = try VectorFileSource(path: path)
        if s.count > 0 && s.count * s.dim <= 1 << 20 {
            var buf = [Float](repeating: 0, count: s.count * s.dim)
            try buf.withUnsafeMutableBufferPointer { try s.read(rows: 0..<s.count, into: $0.baseAddress!) }
        }
    }
    return 0
}
