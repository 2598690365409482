import Engine
import FuzzSupport

/// Key files.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let path = scratchFile(data, size, name: "k.key")
    refuseQuietly {
        let k = try EncryptionKey.read(path: path)
        _ = k.vocabularyPermutation
        _ = try k.residualRotation()
    }
    return 0
}
