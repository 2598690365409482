import Engine
import Foundation
import FuzzSupport

/// Index header (heads.bin) and posting lists: the input's first 4 bytes split it into heads.bin
/// and postings.bin; an opened index is searched once.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 4 else { return 0 }
    let cut = min(size - 4, Int(UInt32(data[0]) | UInt32(data[1]) << 8 | UInt32(data[2]) << 16))
    let dir = scratchDirectory + "/idx"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: dir + "/heads.bin", contents: Data(bytes: data + 4, count: cut))
    FileManager.default.createFile(
        atPath: dir + "/postings.bin", contents: Data(bytes: data + 4 + cut, count: size - 4 - cut))
    try? FileManager.default.removeItem(atPath: dir + "/delta.log")
    for io in [IndexIO.mapped, .pread] {
        refuseQuietly {
            let idx = try HybridIndex(directory: dir, io: io)
            _ = try idx.search([Float](repeating: 0.5, count: idx.dim), k: 10, parameters: .init(nprobe: 8))
        }
    }
    return 0
}
