import XCTest
import Engine
import EngineTools

/// Byte-level BPE against Hugging Face `tokenizers` on 2,036 strings (WordNet glosses and edge
/// cases): fixture by scripts/gen_tokenizer_fixture.py.
final class TokenizerTests: XCTestCase {
    static let tokenizer: BPETokenizer? = try? BPETokenizer(gguf: GGUFFile(path: TestModels.smolLM2))

    func tok() throws -> BPETokenizer { try Self.tokenizer ?? BPETokenizer(gguf: GGUFFile(path: TestModels.smolLM2)) }

    func testIdsEqualHuggingFace() throws {
        let t = try tok()
        let lines = try String(contentsOf: fixtureURL("smollm2_tokens.jsonl"), encoding: .utf8).split(separator: "\n")
        XCTAssertGreaterThanOrEqual(lines.count, 2000)
        var mismatches = 0
        for line in lines {
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let text = obj["text"] as! String
            let ids = obj["ids"] as! [Int]
            let got = try t.encode(text)
            if got != ids {
                mismatches += 1
                if mismatches <= 5 { XCTFail("\(text.debugDescription): got \(got), expected \(ids)") }
            }
            // Exact round trip (control tokens decode verbatim).
            XCTAssertEqual(try t.decode(got), text)
        }
        XCTAssertEqual(mismatches, 0, "strings whose ids differ from Hugging Face")
    }

    /// A tokenizer.json written from the GGUF vocabulary (in Hugging Face's format, with SmolLM2's
    /// pre-tokenizer) loads into a tokenizer that agrees with the GGUF one.
    func testTokenizerJSON() throws {
        let t = try tok()
        let f = try GGUFFile(path: TestModels.smolLM2)
        let merges = f.metadata["tokenizer.ggml.merges"]!.array!.map { $0.string! }
        var vocab: [String: Int] = [:]
        for (i, s) in t.tokens.enumerated() { vocab[s] = i }
        let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].compactMap { s in
            t.id(of: s).map { ["id": $0, "content": s, "special": true] as [String: Any] }
        }
        let json: [String: Any] = [
            "model": ["type": "BPE", "vocab": vocab, "merges": merges],
            "added_tokens": specials,
            "pre_tokenizer": [
                "type": "Sequence",
                "pretokenizers": [
                    ["type": "Digits", "individual_digits": true],
                    ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true],
                ],
            ],
        ]
        let path = NSTemporaryDirectory() + "engine-tok-\(getpid()).json"
        defer { unlink(path) }
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        let u = try BPETokenizer(tokenizerJSON: path)
        XCTAssertTrue(u.isolateNumbers)
        for line in try String(contentsOf: fixtureURL("smollm2_tokens.jsonl"), encoding: .utf8).split(separator: "\n")
            .prefix(400)
        {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            XCTAssertEqual(try u.encode(o["text"] as! String), o["ids"] as! [Int])
        }
        // a WordPiece tokenizer.json is not BPE
        XCTAssertThrowsError(try BPETokenizer(tokenizerJSON: TestModels.miniLM + "/tokenizer.json"))
    }

    func testDecodeRejectsOutOfRange() throws {
        let t = try tok()
        assertThrowsEngineError(isInvalidArgument) { _ = try t.decode([49152]) }
        assertThrowsEngineError(isInvalidArgument) { _ = try t.decode([-1]) }
    }
}
