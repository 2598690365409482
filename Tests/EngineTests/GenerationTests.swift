import XCTest
import Engine

final class GenerationTests: XCTestCase {
    static let generator: TextGenerator? = try? TextGenerator(path: TestModels.smolLM2, kernels: Kernels.selected())
    func gen() throws -> TextGenerator {
        try Self.generator ?? TextGenerator(path: TestModels.smolLM2, kernels: Kernels.selected())
    }

    func testSamplerProperties() throws {
        var rng = SeededRandom(seed: 60)
        let logits = rng.uniform(1000, -5, 5)
        let argmax = logits.indices.max { logits[$0] < logits[$1] }!
        var greedy = try Sampler(GenerationParameters())
        XCTAssertEqual(greedy.next(logits), argmax)
        var topOne = try Sampler(GenerationParameters(temperature: 1.5, topK: 1, seed: 9))
        XCTAssertEqual(topOne.next(logits), argmax, "top-k = 1 is greedy")
        // Same seed, same draws; top-p keeps only the nucleus.
        var a = try Sampler(GenerationParameters(temperature: 1, topP: 0.5, seed: 5))
        var b = a
        let da = (0..<50).map { _ in a.next(logits) }
        let db = (0..<50).map { _ in b.next(logits) }
        XCTAssertEqual(da, db)
        let sorted = logits.indices.sorted { logits[$0] > logits[$1] }
        let probs = sorted.map { Foundation.exp(Double(logits[$0] - logits[sorted[0]])) }
        let z = probs.reduce(0, +)
        var acc = 0.0
        var nucleus = Set<Int>()
        for (i, p) in probs.enumerated() {
            nucleus.insert(sorted[i])
            acc += p / z
            if acc >= 0.5 { break }
        }
        XCTAssertTrue(Set(da).isSubset(of: nucleus))
        assertThrowsEngineError(isInvalidArgument) { _ = try Sampler(GenerationParameters(temperature: -1)) }
        assertThrowsEngineError(isInvalidArgument) { _ = try Sampler(GenerationParameters(topP: 0)) }
    }

    func testStreamingGenerationAndStops() throws {
        let g = try gen()
        var streamed = ""
        let ids = try g.generate(
            prompt: try g.chatPrompt(user: "What is the capital of France?"),
            parameters: GenerationParameters(maxTokens: 40)
        ) { _, s in streamed += s }
        XCTAssertTrue(streamed.contains("Paris"), streamed)
        // Stopped at <|im_end|> (the assistant turn ends) before the limit, and the stop token is
        // not streamed.
        XCTAssertEqual(ids.last, g.tokenizer.id(of: "<|im_end|>"))
        XCTAssertLessThan(ids.count, 40)
        XCTAssertEqual(streamed, try g.tokenizer.decode(Array(ids.dropLast())))
        // Seeded sampling is reproducible.
        let p = GenerationParameters(maxTokens: 12, temperature: 0.8, topK: 40, topP: 0.95, seed: 11)
        XCTAssertEqual(
            try g.generate(prompt: "The weather today", parameters: p),
            try g.generate(prompt: "The weather today", parameters: p))
        assertThrowsEngineError(isInvalidArgument) { _ = try g.generate(prompt: "", parameters: p) }
    }

    func testNPYRoundTrip() throws {
        let path = NSTemporaryDirectory() + "engine-npy-\(getpid()).npy"
        defer { unlink(path) }
        let v: [Float] = (0..<12).map { Float($0) * 0.5 }
        try NPY.write(v, shape: [3, 4], to: path)
        let (back, shape) = try NPY.readFloat32(path: path)
        XCTAssertEqual(back, v)
        XCTAssertEqual(shape, [3, 4])
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try NPY.readFloat32(path: path))
    }

    /// `engine generate --logits` writes the prompt logits; they equal the library's.
    func testCLILogitsAndTokenize() throws {
        let dir = NSTemporaryDirectory() + "engine-cli-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (st, out) = try runEngine([
            "generate", "--model", TestModels.smolLM2, "--prompt", "The capital of France is",
            "--max-tokens", "3", "--weights", "f32", "--logits", dir + "/l.npy",
        ])
        XCTAssertEqual(st, 0, out)
        let (l, shape) = try NPY.readFloat32(path: dir + "/l.npy")
        XCTAssertEqual(shape, [5, 49152])
        XCTAssertTrue(out.contains(" Paris"), out)
        XCTAssertEqual(
            l[(4 * 49152)...].indices.max { l[$0] < l[$1] }! - 4 * 49152, try gen().tokenizer.encode(" Paris").first!)
        try "hello world\n12 apples".write(toFile: dir + "/in.txt", atomically: true, encoding: .utf8)
        let (st2, ids) = try runEngine(["tokenize", "--model", TestModels.smolLM2, "--input", dir + "/in.txt"])
        XCTAssertEqual(st2, 0)
        let t = try gen().tokenizer
        XCTAssertEqual(
            ids.split(separator: "\n").map(String.init),
            [try t.encode("hello world"), try t.encode("12 apples")].map { $0.map(String.init).joined(separator: " ") })
        let (st3, err) = try runEngine(["generate", "--model", dir + "/missing.gguf", "--prompt", "x"])
        XCTAssertNotEqual(st3, 0)
        XCTAssertTrue(err.contains("cannot open"), err)
    }
}
