import XCTest
import Engine

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
            let text = obj["text"] as! String, ids = obj["ids"] as! [Int]
            let got = t.encode(text)
            if got != ids {
                mismatches += 1
                if mismatches <= 5 { XCTFail("\(text.debugDescription): got \(got), expected \(ids)") }
            }
            // Exact round trip (control tokens decode verbatim).
            XCTAssertEqual(try t.decode(got), text)
        }
        XCTAssertEqual(mismatches, 0, "strings whose ids differ from Hugging Face")
    }

    func testDecodeRejectsOutOfRange() throws {
        let t = try tok()
        assertThrowsEngineError(isInvalidArgument) { _ = try t.decode([49152]) }
        assertThrowsEngineError(isInvalidArgument) { _ = try t.decode([-1]) }
    }
}
