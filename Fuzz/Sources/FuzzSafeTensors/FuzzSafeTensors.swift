import Engine
import Foundation
import FuzzSupport

/// safetensors reader and BERT loading: the input's first 4 bytes (little-endian) split it into
/// config.json and model.safetensors.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 4 else { return 0 }
    let cut = min(size - 4, Int(UInt32(data[0]) | UInt32(data[1]) << 8) % 4096)
    let dir = scratchDirectory + "/bert"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: dir + "/config.json", contents: Data(bytes: data + 4, count: cut))
    FileManager.default.createFile(
        atPath: dir + "/model.safetensors", contents: Data(bytes: data + 4 + cut, count: size - 4 - cut))
    FileManager.default.createFile(atPath: dir + "/vocab.txt", contents: Data("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n".utf8))
    refuseQuietly {
        let st = try SafeTensorsFile(path: dir + "/model.safetensors")
        for name in st.tensors.keys { refuseQuietly { _ = try st.floats(name) } }
    }
    refuseQuietly { _ = try BertModel(directory: dir, kernels: Kernels.default).embed(["a"]) }
    return 0
}
