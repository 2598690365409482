import XCTest
import Engine

/// all-MiniLM-L6-v2 (safetensors + vocab.txt) against scripts/ref_minilm.py (numpy float64 over
/// the same weights, Hugging Face tokenizers with the model's tokenizer.json).
final class MiniLMTests: XCTestCase {
    static let model: BertModel? = try? BertModel(directory: TestModels.miniLM)
    func model() throws -> BertModel { try Self.model ?? BertModel(directory: TestModels.miniLM) }

    func testWordPieceIdsEqualHuggingFace() throws {
        let t = try model().tokenizer
        let lines = try String(contentsOf: fixtureURL("minilm_tokens.jsonl"), encoding: .utf8).split(separator: "\n")
        XCTAssertGreaterThanOrEqual(lines.count, 2000)
        var bad = 0
        for line in lines {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let text = o["text"] as! String
            let ids = o["ids"] as! [Int]
            let got = t.encode(text)
            if got != ids {
                bad += 1
                if bad <= 5 { XCTFail("\(text.debugDescription): got \(got), expected \(ids)") }
            }
        }
        XCTAssertEqual(bad, 0)
    }

    /// Sentence embeddings: cosine >= 0.9999 with the reference on 250 real sentences (the bound
    /// we require; f32 against float64 gives ~1 - 1e-12 here).
    func testSentenceEmbeddingsMatchReference() throws {
        let m = try model()
        let refs = try miniLMReference()
        XCTAssertGreaterThanOrEqual(refs.count, 200)
        var worst = 1.0
        for (text, ids, ref) in refs {
            XCTAssertEqual(try m.tokenizer.encode(text), ids, text)
            let cos = cosine(try m.embed(text)[...], ref[...])
            worst = min(worst, cos)
            XCTAssertGreaterThanOrEqual(cos, 0.9999, text)
        }
        print("MiniLM: worst cosine to the reference over \(refs.count) sentences = \(worst)")
    }

    /// The batch path on the same fixture: 32 sentences per forward (over 128 tokens, so the
    /// products are OpenBLAS sgemm adding into bias- or residual-filled rows), on one thread and
    /// on two (groups of whole sentences, one per thread). Each vector keeps the reference bound
    /// (cosine >= 0.9999) and equals its one-by-one embedding within 1e-5 per component (unit
    /// vectors; the summation order of sgemm differs from the row kernels').
    func testBatchedEmbeddingsMatchReference() throws {
        let refs = try miniLMReference()
        let texts = refs.map(\.text)
        let dim = refs[0].embedding.count
        let single = try model()
        for threads in [1, 2] {
            let m = try BertModel(directory: TestModels.miniLM, kernels: Kernels.selected(threads: threads))
            let tokens = try texts.prefix(32).map { try m.tokenizer.encode($0).count }.reduce(0, +)
            XCTAssertGreaterThanOrEqual(tokens, 128, "the first batch must take the sgemm path")
            let all = try m.embed(texts, batch: 32)
            XCTAssertEqual(all.count, refs.count * dim)
            var worst = 1.0
            for i in refs.indices {
                let e = Array(all[(i * dim)..<((i + 1) * dim)])
                worst = min(worst, cosine(e[...], refs[i].embedding[...]))
                if i % 25 == 0 {
                    let one = try single.embed(texts[i])
                    for (a, b) in zip(e, one) {
                        XCTAssertEqual(a, b, accuracy: 1e-5, "\(threads) threads: \(texts[i])")
                    }
                }
            }
            XCTAssertGreaterThanOrEqual(worst, 0.9999, "\(threads) threads")
            print("MiniLM batch 32, \(threads) threads: worst cosine to the reference = \(worst)")
        }
    }

    /// A 2-thread batch holds OpenBLAS at one thread while it runs; a `configureThreads` call
    /// made meanwhile is what the pool has afterwards (not the count the batch found on entry).
    func testThreadCountSetDuringABatchIsKept() throws {
        let texts = try miniLMReference().prefix(64).map(\.text)
        let m = try BertModel(directory: TestModels.miniLM, kernels: Kernels.selected(threads: 2))
        configureThreads(2)
        defer { configureThreads() }
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            for _ in 0..<20 { _ = try? m.embed(texts, batch: 64) }
            done.signal()
        }
        Thread.sleep(forTimeInterval: 0.2) // well inside the batches (each takes ~0.1-0.3 s)
        configureThreads(1)
        done.wait()
        XCTAssertEqual(SystemInfo().blasThreads, 1)
    }

    /// The tokenizer read from tokenizer.json equals the one from vocab.txt on the fixture.
    func testTokenizerJSONEqualsVocabTxt() throws {
        let a = try model().tokenizer
        let b = try WordPieceTokenizer(tokenizerJSON: TestModels.miniLM + "/tokenizer.json")
        XCTAssertEqual(a.tokens, b.tokens)
        for line in try String(contentsOf: fixtureURL("minilm_tokens.jsonl"), encoding: .utf8).split(separator: "\n")
            .prefix(300)
        {
            let text = (try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any])["text"] as! String
            XCTAssertEqual(a.encode(text), b.encode(text))
        }
        XCTAssertThrowsError(try WordPieceTokenizer(tokenizerJSON: TestModels.miniLM + "/config.json"))
    }

    func testBadInput() throws {
        let m = try model()
        assertThrowsEngineError(isInvalidArgument) { _ = try m.tokenEmbeddings(ids: [101, 30522, 102]) }
        assertThrowsEngineError(isInvalidArgument) { _ = try m.tokenEmbeddings(ids: []) }
        assertThrowsEngineError(isInvalidArgument) {
            _ = try m.tokenEmbeddings(ids: Array(repeating: 1000, count: 513))
        }
        // Missing tokenizer and truncated weights are refused with the file named.
        let dir = NSTemporaryDirectory() + "engine-minilm-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: TestModels.miniLM + "/config.json", toPath: dir + "/config.json")
        XCTAssertThrowsError(try BertModel(directory: dir)) { e in XCTAssertTrue("\(e)".contains("vocab.txt"), "\(e)") }
        try FileManager.default.copyItem(atPath: TestModels.miniLM + "/vocab.txt", toPath: dir + "/vocab.txt")
        let st = try Data(contentsOf: URL(fileURLWithPath: TestModels.miniLM + "/model.safetensors"))
        try st.prefix(st.count / 2).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        XCTAssertThrowsError(try BertModel(directory: dir)) { e in
            guard case EngineError.invalidFile(let msg) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(msg.contains("truncated"), msg)
        }
        var corrupt = st.prefix(4096)
        corrupt[20] = 0x00
        try corrupt.write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        XCTAssertThrowsError(try BertModel(directory: dir))
    }
}

final class EmbedCLITests: XCTestCase {
    func testEmbedCLIAndVectorFiles() throws {
        let dir = NSTemporaryDirectory() + "engine-embed-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let lines = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/in.txt", atomically: true, encoding: .utf8)
        for ext in ["fvecs", "npy"] {
            let (st, out) = try runEngine([
                "embed", "--model", TestModels.miniLM, "--input", dir + "/in.txt", "--output", dir + "/e.\(ext)",
            ])
            XCTAssertEqual(st, 0, out)
            let (v, d) = try VectorFile.read(path: dir + "/e.\(ext)")
            XCTAssertEqual(d, 384)
            XCTAssertEqual(v.count, 3 * 384)
            let m = try BertModel(directory: TestModels.miniLM)
            let batch = try m.embed(lines, batch: 2)
            for i in 0..<3 {
                let e = try m.embed(lines[i])
                // The CLI batches sentences; batched linears sum in another order (sgemm vs row
                // kernels): equal up to f32 rounding of unit vectors.
                for (a, b) in zip(Array(v[(i * 384)..<((i + 1) * 384)]), e) { XCTAssertEqual(a, b, accuracy: 1e-5) }
                for (a, b) in zip(Array(batch[(i * 384)..<((i + 1) * 384)]), e) { XCTAssertEqual(a, b, accuracy: 1e-5) }
            }
        }
        let (st, out) = try runEngine([
            "embed", "--model", TestModels.miniLM, "--input", dir + "/in.txt", "--output", dir + "/e.bin",
        ])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains(".fvecs or .npy"), out)
        try Data([1, 0, 0, 0, 0]).write(to: URL(fileURLWithPath: dir + "/bad.fvecs"))
        XCTAssertThrowsError(try VectorFile.read(path: dir + "/bad.fvecs"))
    }
}
