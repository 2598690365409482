import Engine
import Foundation
import XCTest

/// Command-line behaviour that the library tests cannot see: exit codes, which tokenizer and
/// template a command picks, what it writes. Each test runs the built `engine` executable.
final class CLITests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "engine-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testInfoFailsOnUnknownISA() throws {
        let (status, out) = try runEngine(["info"], env: ["CK_ISA": "avx1024"])
        XCTAssertNotEqual(status, 0, "an unknown CK_ISA must not exit 0")
        XCTAssertTrue(out.contains("not one of scalar, avx2, avx512"), out)
        let (ok, _) = try runEngine(["info"], env: ["CK_ISA": "scalar"])
        XCTAssertEqual(ok, 0)
    }

    /// `tokenize --model DIR` uses the directory's WordPiece vocabulary; ids compared with the
    /// Hugging Face tokenizer's (fixture from scripts/gen_tokenizer_fixture.py).
    func testTokenizeBertDirectory() throws {
        let lines = try String(contentsOf: fixtureURL("minilm_tokens.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(40)
        var texts: [String] = []
        var expected: [[Int]] = []
        for line in lines {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let t = o["text"] as! String
            if t.contains("\n") || t.contains("\r") { continue } // one input per line
            texts.append(t)
            expected.append(o["ids"] as! [Int])
        }
        try texts.joined(separator: "\n").appending("\n").write(
            toFile: dir + "/in.txt", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = engineExecutable()
        p.arguments = ["tokenize", "--model", TestModels.miniLM, "--input", dir + "/in.txt"]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let got = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .dropLast().map { $0.split(separator: " ").compactMap { Int($0) } }
        XCTAssertEqual(got.count, expected.count)
        for (g, e) in zip(got, expected) { XCTAssertEqual(g, e) }
    }

    /// `embed --threads N` runs the model's kernels with N threads (it used to reach only OpenBLAS).
    func testEmbedThreadsReachKernels() throws {
        try "a sentence\nanother one\n".write(toFile: dir + "/in.txt", atomically: true, encoding: .utf8)
        for n in [1, 2] {
            let (st, out) = try runEngine([
                "embed", "--model", TestModels.miniLM, "--input", dir + "/in.txt", "--output", dir + "/e\(n).npy",
                "--threads", "\(n)",
            ])
            XCTAssertEqual(st, 0, out)
            XCTAssertTrue(out.contains("\(n) threads)"), out)
        }
    }

    /// `generate --key K --logits F` writes the decrypted logits: equal to the plain f32 model's
    /// up to float rounding (the encrypted model is f32, so the tolerance is that of
    /// EncryptionTests: 1e-4 of the logit range).
    /// engine generate --kv-cache prints what the library generates with the same cache type;
    /// engine perplexity prints its figure line and JSON, and refuses bad cache options.
    func testKVCacheOptions() throws {
        let prompt = "The history of the printing press begins"
        var (st, out) = try runEngine([
            "generate", "--prompt", prompt, "--max-tokens", "12", "--kv-cache", "q4", "--kv-window", "0",
        ])
        XCTAssertEqual(st, 0, out)
        var p = GenerationParameters(maxTokens: 12)
        p.kvCache = KVCacheConfig(type: .q4, window: 0)
        let gen = try TextGenerator(path: TestModels.smolLM2, kernels: Kernels.selected())
        let ids = try gen.generate(prompt: prompt, parameters: p)
        XCTAssertTrue(out.contains(try gen.tokenizer.decode(ids)), out)
        let text = dir + "/t.txt"
        try String(repeating: "It is a truth universally acknowledged that a reader wants a clear answer. ", count: 20)
            .write(toFile: text, atomically: true, encoding: .utf8)
        (st, out) = try runEngine([
            "perplexity", "--input", text, "--context", "64", "--chunks", "2", "--kv-cache", "q8_0", "--json",
            dir + "/p.json",
        ])
        XCTAssertEqual(st, 0, out)
        XCTAssertTrue(out.contains("over 62 tokens (kv-cache q8_0, 12240 bytes/token)"), out)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/p.json")))
        XCTAssertEqual((json as? [String: Any])?["kv_cache"] as? String, "q8_0")
        // mikv at 0.25: 30 layers x 3 heads x (48 + 0.25 x (2 x 68 + 8)) bytes = 7,560 (two Q8_0 rows of 64
        // values and 8 bytes per slot)
        (st, out) = try runEngine([
            "perplexity", "--input", text, "--context", "64", "--chunks", "1", "--kv-cache", "mikv", "--kv-window",
            "8", "--kv-important", "0.25",
        ])
        XCTAssertEqual(st, 0, out)
        XCTAssertTrue(out.contains("over 31 tokens (kv-cache mikv, 7560 bytes/token)"), out)
        (st, out) = try runEngine([
            "generate", "--prompt", prompt, "--max-tokens", "4", "--kv-cache", "h2o", "--kv-window", "0",
        ])
        XCTAssertEqual(st, 0, out)
        for bad in [
            ["--kv-cache", "mikv", "--kv-important", "1.5"], ["--kv-cache", "h2o", "--kv-important", "nan"],
            ["--kv-cache", "mikv", "--kv-scores", "int8"],
            ["--kv-cache", "q3"], ["--kv-cache", "q4", "--kv-window", "65"], ["--context", "100000"],
            ["--json", dir + "/p.json"], ["--kv-scores", "int8"], ["--kv-budget-mib", "5"],
            ["--kv-offload", dir], ["--kv-cache", "q4", "--kv-budget-mib", "5", "--kv-offload", dir],
            ["--kv-cache", "f16", "--kv-budget-mib", "0.5", "--kv-offload", dir],
            ["--kv-cache", "f16", "--kv-budget-mib", "7", "--kv-offload", dir + "/missing"],
            ["--kv-cache", "f16", "--kv-budget-mib", "7", "--kv-offload", dir, "--kv-blocks", "0"],
            ["--kv-cache", "f16", "--kv-budget-mib", "nan", "--kv-offload", dir],
        ] {
            (st, out) = try runEngine(["perplexity", "--input", text, "--context", "64"] + bad)
            XCTAssertNotEqual(st, 0, "\(bad): \(out)")
            XCTAssertTrue(out.contains("Error"), out)
        }
    }

    /// Disk offload from the CLI: perplexity over 512 tokens of GPL-3 in 7 MiB (a window of ~170
    /// tokens, so blocks are stored and read back), and generate equals the library with the same
    /// offloaded cache; the block file is gone afterwards.
    func testKVOffloadOptions() throws {
        let off = dir + "/kv"
        try FileManager.default.createDirectory(atPath: off, withIntermediateDirectories: true)
        var (st, out) = try runEngine([
            "perplexity", "--input", "/usr/share/common-licenses/GPL-3", "--context", "512", "--chunks", "1",
            "--step", "32", "--kv-cache", "f16", "--kv-budget-mib", "7", "--kv-offload", off,
        ])
        XCTAssertEqual(st, 0, out)
        XCTAssertTrue(out.contains("over 255 tokens (kv-cache f16, 23040 bytes/token)"), out)
        XCTAssertTrue(out.contains("cache RAM peak"), out)
        XCTAssertFalse(out.contains(" read 0 MiB"), out)
        let prompt = "The history of the printing press begins"
        (st, out) = try runEngine([
            "generate", "--prompt", prompt, "--max-tokens", "12", "--kv-cache", "q8_0", "--kv-budget-mib", "7",
            "--kv-offload", off, "--kv-blocks", "2",
        ])
        XCTAssertEqual(st, 0, out)
        var p = GenerationParameters(maxTokens: 12)
        p.kvCache = KVCacheConfig(
            type: .q8_0, offload: KVOffload(budgetBytes: 7 << 20, directory: off, blocks: 2))
        let gen = try TextGenerator(path: TestModels.smolLM2, kernels: Kernels.selected())
        XCTAssertTrue(out.contains(try gen.tokenizer.decode(gen.generate(prompt: prompt, parameters: p))), out)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: off), [])
    }

    func testEncryptedGenerateWritesDecryptedLogits() throws {
        let key = dir + "/k.key"
        let enc = dir + "/enc.gguf"
        var (st, out) = try runEngine(["keygen", "--output", key])
        XCTAssertEqual(st, 0, out)
        (st, out) = try runEngine(["encrypt-model", "--key", key, "--output", enc])
        XCTAssertEqual(st, 0, out)
        let prompt = "The capital of France is"
        (st, out) = try runEngine([
            "generate", "--model", enc, "--key", key, "--weights", "f32", "--prompt", prompt, "--max-tokens", "1",
            "--logits", dir + "/enc.npy",
        ])
        XCTAssertEqual(st, 0, out)
        (st, out) = try runEngine([
            "generate", "--weights", "f32", "--prompt", prompt, "--max-tokens", "1", "--logits", dir + "/plain.npy",
        ])
        XCTAssertEqual(st, 0, out)
        let (a, sa) = try NPY.readFloat32(path: dir + "/enc.npy")
        let (b, sb) = try NPY.readFloat32(path: dir + "/plain.npy")
        XCTAssertEqual(sa, sb)
        let range = Double(b.max()! - b.min()!)
        let worst = zip(a, b).map { abs(Double($0) - Double($1)) }.max()!
        XCTAssertLessThan(worst / range, 1e-4)
    }

    /// Chat prompts on the encrypted path come from the tokenizer model's own template: a model
    /// whose template is not ChatML is refused instead of being sent a ChatML prompt.
    func testEncryptedChatUsesModelTemplate() throws {
        let f = try GGUFFile(path: TestModels.smolLM2)
        var w = GGUFWriter()
        w.metadata = f.metadata.filter { $0.key != "general.alignment" }.sorted { $0.key < $1.key }
            .map { $0.key == "tokenizer.chat_template" ? ($0.key, .string("{{ messages }}")) : ($0.key, $0.value) }
        for name in f.tensorOrder {
            let t = try f.tensor(name)
            w.addRaw(name, dims: t.dims, type: t.type.rawValue, bytes: Array(try f.data(t)))
        }
        try w.write(to: dir + "/other-template.gguf")
        let key = dir + "/k.key"
        let enc = dir + "/enc.gguf"
        _ = try runEngine(["keygen", "--output", key])
        _ = try runEngine(["encrypt-model", "--key", key, "--output", enc])
        let (st, out) = try runEngine([
            "generate", "--model", enc, "--key", key, "--tokenizer-model", dir + "/other-template.gguf", "--chat",
            "--prompt", "Hi", "--max-tokens", "1",
        ])
        XCTAssertNotEqual(st, 0, out)
        XCTAssertTrue(out.contains("not ChatML"), out)
    }

    /// Neighbour ids that do not fit in int32 are refused for .ivecs (never truncated) and kept in .npy.
    func testNeighborIDsAreNotTruncated() throws {
        let big: UInt64 = 1 << 40
        assertThrowsEngineError(isInvalidArgument) {
            try VectorFile.writeNeighborIDs([big, nil], k: 2, to: self.dir + "/ids.ivecs")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/ids.ivecs"))
        try VectorFile.writeNeighborIDs([big, nil, 3, 4], k: 2, to: dir + "/ids.npy")
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/ids.npy"))
        let header = String(decoding: data.prefix(128), as: UTF8.self)
        XCTAssertTrue(header.contains("'descr': '<i8'") && header.contains("'shape': (2, 2)"), header)
        let values = data.suffix(32).withUnsafeBytes { r in
            (0..<4).map { r.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self) }
        }
        XCTAssertEqual(values, [Int64(big), -1, 3, 4])
        try VectorFile.writeNeighborIDs([7, nil], k: 2, to: dir + "/small.ivecs")
        let (v, k) = try VectorFile.readIvecs(path: dir + "/small.ivecs")
        XCTAssertEqual(k, 2)
        XCTAssertEqual(v, [7, -1])
    }

    /// OpenBLAS is opened by the first BLAS call, not at process start: a search (no BLAS call)
    /// never loads it, `info` (which reports it) does. The dynamic loader's own log
    /// (LD_DEBUG=files, glibc) lists every library a process opens, dlopen included.
    func testOpenBLASLoadsOnlyWhenUsed() throws {
        var rng = SeededRandom(seed: 5)
        let (n, dim) = (600, 8)
        try HybridIndex.build(vectors: rng.uniform(n * dim), dim: dim, directory: dir + "/idx")
        try VectorFile.write(rng.uniform(3 * dim), dim: dim, to: dir + "/q.npy")
        let (st, search) = try runEngine(
            ["index", "search", "--index", dir + "/idx", "--queries", dir + "/q.npy", "--output", dir + "/o.ivecs"],
            env: ["LD_DEBUG": "files"])
        XCTAssertEqual(st, 0, search)
        XCTAssertTrue(search.contains("libswiftCore"), "the loader's log is there: \(search.prefix(300))")
        XCTAssertFalse(search.contains("libopenblas"), "index search loaded OpenBLAS")
        XCTAssertFalse(search.contains("liblapacke"), "index search loaded LAPACKE")
        let (ok, info) = try runEngine(["info"], env: ["LD_DEBUG": "files"])
        XCTAssertEqual(ok, 0, info)
        XCTAssertTrue(info.contains("libopenblas"), "info reports OpenBLAS, so it loads it")
        XCTAssertTrue(info.contains("BLAS kernels:"), info)
    }
}
