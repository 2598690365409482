import XCTest
import Engine

final class GGUFTests: XCTestCase {
    func tempPath(_ name: String) -> String { NSTemporaryDirectory() + "engine-gguf-\(getpid())-\(name)" }

    func testRoundTripAndMetadata() throws {
        var rng = SeededRandom(seed: 50)
        let k = try kernels(.scalar)
        let m = try QuantizedMatrix(quantizing: rng.uniform(3 * 64), rows: 3, cols: 64, type: .q4_1, kernels: k)
        var w = GGUFWriter()
        w.alignment = 64
        w.metadata = [
            ("general.architecture", .string("llama")), ("test.count", .uint(7)), ("test.neg", .int(-3)),
            ("test.pi", .float(3.25)), ("test.flag", .bool(true)), ("test.list", .array([.string("a"), .string("b")])),
        ]
        try w.add("t.weight", matrix: m)
        let path = tempPath("rt.gguf")
        defer { unlink(path) }
        try w.write(to: path)
        let f = try GGUFFile(path: path)
        XCTAssertEqual(f.version, 3)
        XCTAssertEqual(f.alignment, 64)
        XCTAssertEqual(f.metadata["test.count"], .uint(7))
        XCTAssertEqual(f.metadata["test.neg"], .int(-3))
        XCTAssertEqual(f.metadata["test.pi"]?.double, 3.25)
        XCTAssertEqual(f.metadata["test.flag"], .bool(true))
        XCTAssertEqual(f.metadata["test.list"], .array([.string("a"), .string("b")]))
        let back = try f.matrix("t.weight")
        XCTAssertEqual(back.type, .q4_1)
        XCTAssertEqual(back.bytes, m.bytes)
    }

    func testRealFileDirectory() throws {
        let f = try GGUFFile(path: TestModels.smolLM2)
        XCTAssertEqual(f.tensors.count, 272)
        XCTAssertEqual(try f.string("general.architecture"), "llama")
        XCTAssertEqual(f.metadata["tokenizer.ggml.tokens"]?.array?.count, 49152)
        XCTAssertEqual(try f.tensor("token_embd.weight").type, .q8_0)
        XCTAssertEqual(try f.tensor("blk.0.ffn_down.weight").dims, [1536, 576])
    }

    func testTruncatedFileIsRefused() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: TestModels.smolLM2))
        for cut in [3, 20, 1000, 2_000_000, data.count - 1] {
            let path = tempPath("cut\(cut).gguf")
            defer { unlink(path) }
            try data.prefix(cut).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try GGUFFile(path: path), "cut at \(cut)") { e in
                guard case EngineError.invalidFile(let msg) = e else { return XCTFail("\(e)") }
                XCTAssertTrue(msg.contains("truncated") || msg.contains("end of file"), msg)
            }
        }
    }

    func testCorruptHeaderIsRefused() throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: TestModels.smolLM2)).prefix(4096)
        data[0] = 0x47 ^ 0xff
        let path = tempPath("magic.gguf")
        defer { unlink(path) }
        try data.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try GGUFFile(path: path)) { e in
            guard case EngineError.invalidFile(let msg) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(msg.contains("not a GGUF file"), msg)
        }
        // An absurd tensor count (corrupt header) is refused before any allocation.
        var d2 = try Data(contentsOf: URL(fileURLWithPath: TestModels.smolLM2)).prefix(4096)
        d2[15] = 0x7f
        try d2.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try GGUFFile(path: path))
    }

    func testUnsupportedTensorTypeIsNamed() throws {
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string("llama"))]
        w.addRaw("blk.0.attn_q.weight", dims: [256, 1], type: 12, bytes: [UInt8](repeating: 0, count: 144)) // Q4_K
        let path = tempPath("q4k.gguf")
        defer { unlink(path) }
        try w.write(to: path)
        XCTAssertThrowsError(try GGUFFile(path: path)) { e in
            guard case EngineError.unsupported(let msg) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(msg.contains("Q4_K") && msg.contains("blk.0.attn_q.weight"), msg)
        }
    }

    func testUnknownArchitectureAndMissingTensor() throws {
        var rng = SeededRandom(seed: 51)
        let m = try QuantizedMatrix(f32: rng.uniform(64), rows: 1, cols: 64)
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string("mamba"))]
        try w.add("x", matrix: m)
        let path = tempPath("arch.gguf")
        defer { unlink(path) }
        try w.write(to: path)
        XCTAssertThrowsError(try LlamaModel(path: path, kernels: Kernels.selected())) { e in
            guard case EngineError.unsupported(let msg) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(msg.contains("mamba"), msg)
        }
        let f = try GGUFFile(path: path)
        assertThrowsEngineErrorAny { _ = try f.tensor("missing.weight") }
        // A file without tokenizer metadata: the missing tokenizer is named.
        XCTAssertThrowsError(try BPETokenizer(gguf: f)) { e in XCTAssertTrue("\(e)".contains("tokenizer"), "\(e)") }
        XCTAssertThrowsError(try GGUFFile(path: "/nonexistent/model.gguf")) { e in
            guard case EngineError.io = e else { return XCTFail("\(e)") }
        }
    }
}

func assertThrowsEngineErrorAny(file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("expected an error", file: file, line: line)
    } catch is EngineError {} catch { XCTFail("\(error)", file: file, line: line) }
}
