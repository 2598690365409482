import Engine
import FuzzSupport

/// GGUF reader, Llama config, byte-level BPE tokenizer from metadata, and a model load.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let path = scratchFile(data, size, name: "in.gguf")
    refuseQuietly {
        let f = try GGUFFile(path: path)
        refuseQuietly { _ = try LlamaConfig(gguf: f) }
        refuseQuietly { _ = try BPETokenizer(gguf: f).encode("Hello <|im_start|> world 123") }
        refuseQuietly { _ = try LlamaModel(gguf: f, kernels: Kernels.default) }
        refuseQuietly { _ = try f.matrix("token_embd.weight") }
    }
    return 0
}
