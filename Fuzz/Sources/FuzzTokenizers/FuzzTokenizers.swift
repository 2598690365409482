import Engine
import Foundation
import FuzzSupport

/// Both tokenizers: the input's first byte splits it into a vocabulary (one token per line) and a
/// text. BPE gets the 256 byte tokens plus the fuzzed ones and merges of adjacent fuzzed tokens.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 1 else { return 0 }
    let cut = min(size - 1, Int(data[0]) * 4)
    let vocab = String(decoding: UnsafeBufferPointer(start: data + 1, count: cut), as: UTF8.self)
        .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let text = String(decoding: UnsafeBufferPointer(start: data + 1 + cut, count: size - 1 - cut), as: UTF8.self)
    refuseQuietly {
        let w = try WordPieceTokenizer(vocabulary: ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + vocab)
        _ = w.encode(text)
    }
    refuseQuietly {
        let bytes = (0..<256).map { b -> String in
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            let shift = (0..<b).filter {
                !((33...126).contains($0) || (161...172).contains($0) || (174...255).contains($0))
            }
            return String(Character(Unicode.Scalar(UInt32(printable ? b : 256 + shift.count))!))
        }
        let merges = zip(vocab, vocab.dropFirst()).map { "\($0) \($1)" }
        let t = try BPETokenizer(
            tokens: bytes + vocab, merges: merges, specialIDs: [256], bos: nil, eos: nil, isolateNumbers: true)
        _ = try t.decode(try t.encode(text))
    }
    return 0
}
