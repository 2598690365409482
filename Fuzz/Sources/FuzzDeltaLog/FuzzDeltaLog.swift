import Engine
import Foundation
import FuzzSupport

/// The delta log replayed over a small fixed index (built once per process), read-only and repaired.
nonisolated(unsafe) var base: String?

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let dir = scratchDirectory + "/delta-index"
    if base == nil {
        var rng = SeededRandom(seed: 3)
        var o = HybridIndexOptions()
        o.headFraction = 0.05
        _ = try? HybridIndex.build(vectors: rng.uniform(200 * 4), dim: 4, directory: dir, options: o)
        base = dir
    }
    FileManager.default.createFile(atPath: dir + "/delta.log", contents: Data(bytes: data, count: size))
    refuseQuietly { _ = try HybridIndex(directory: dir).search([0, 0, 0, 0], k: 5) }
    refuseQuietly { _ = try HybridIndex(directory: dir, writable: true, repair: true) }
    return 0
}
