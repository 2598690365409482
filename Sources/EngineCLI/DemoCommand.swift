import ArgumentParser
import Engine
import Foundation

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "The main job: system check, encrypted inference on the real models (SmolLM2 generation, MiniLM "
            + "embeddings), then a memory/disk hybrid index over Fashion-MNIST.")

    func validate() throws {
        try checkEnvironment()
    }

    func run() throws {
        configureThreads()
        print(SystemInfo())
        print("")
        var check = SelfCheckCommand()
        check.seed = 42
        try check.run()
        print("")
        let path = DefaultModels.smolLM2
        guard FileManager.default.fileExists(atPath: path) else {
            print("(SmolLM2 not found at \(path): run scripts/fetch_models.sh for the encrypted-inference demo)")
            return
        }
        try encryptedGeneration(path)
        if FileManager.default.fileExists(atPath: DefaultModels.miniLM + "/model.safetensors") {
            try encryptedEmbedding()
        }
        try hybridIndex()
    }

    /// SmolLM2 through the encrypted path: the ids the server receives next to the text the client reads.
    func encryptedGeneration(_ path: String) throws {
        let k = try Kernels.selected()
        let tmp = NSTemporaryDirectory() + "engine-demo-\(getpid())"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        print("== Equivariant encryption: SmolLM2-135M-Instruct ==")
        var clock = Stopwatch()
        let f = try GGUFFile(path: path)
        let key = try EncryptionKey(shape: ModelShape(LlamaConfig(gguf: f)), modelID: EncryptionKey.modelID(gguf: f))
        try key.write(to: tmp + "/smollm2.key")
        print("client: new 256-bit key from the system CSPRNG (\(clock.text)), kept client-side")
        clock = Stopwatch()
        try ModelEncryptor.encryptLlama(gguf: f, key: key, kernels: k).write(to: tmp + "/smollm2-enc.gguf")
        print(
            "client: encrypted the model (vocabulary permutation, residual rotation, per-head and MLP transforms; "
                + "f32 GGUF) in \(clock.text)")
        let server = try LlamaModel(path: tmp + "/smollm2-enc.gguf", format: .f32, kernels: k)
        let tok = try BPETokenizer(gguf: f)
        let session = try EncryptedSession(
            tokenizer: tok, server: server, key: try EncryptionKey.read(path: tmp + "/smollm2.key"))
        let question = "What is the capital of France?"
        let prompt = try ChatTemplate(gguf: f).prompt(user: question)
        let ids = try tok.encode(prompt)
        print("client prompt: \(question.debugDescription) (chat template, \(ids.count) tokens)")
        print("server receives ids: \(session.encryptIDs(ids).map(String.init).joined(separator: " "))")
        print("  (plain ids would be: \(ids.map(String.init).joined(separator: " ")))")
        print("\nserver id -> client reads")
        var text = ""
        clock = Stopwatch()
        let out = try session.generate(prompt: prompt, parameters: GenerationParameters(maxTokens: 32)) {
            _, piece, sid in
            print(String(format: "%9d -> %@", sid, piece.debugDescription))
            text += piece
        }
        let secs = clock.seconds
        print("\nclient answer: \(text)")
        let plain = try TextGenerator(model: LlamaModel(gguf: f, format: .f32, kernels: k), tokenizer: tok)
            .generate(prompt: prompt, parameters: GenerationParameters(maxTokens: 32))
        print(
            "\(out.count) tokens in \(fixed(secs, 1)) s through the encrypted server; identical to the plain "
                + "model's greedy output: \(out == plain ? "yes" : "NO")")
        print("")
    }

    /// MiniLM through the encrypted path: decrypted sentence vectors keep the plain cosines.
    func encryptedEmbedding() throws {
        let k = try Kernels.selected()
        let tmp = NSTemporaryDirectory() + "engine-demo-minilm-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        print("== Equivariant encryption: all-MiniLM-L6-v2 (rotation fixing the ones direction) ==")
        let plain = try BertModel(directory: DefaultModels.miniLM, kernels: k)
        let key = try EncryptionKey(
            shape: ModelShape(plain.config), modelID: EncryptionKey.modelID(bert: DefaultModels.miniLM))
        let clock = Stopwatch()
        try ModelEncryptor.encryptBert(
            directory: DefaultModels.miniLM, key: key, mode: .rotation, output: tmp, kernels: k)
        print("client: encrypted the encoder in \(clock.text)")
        let session = try EncryptedEncoderSession(
            tokenizer: plain.tokenizer, server: BertModel(directory: tmp, kernels: k), key: key)
        let texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
        let e = try session.embed(texts)
        let p = try plain.embed(texts)
        let d = plain.config.hiddenSize
        func cos(_ a: [Float], _ i: Int, _ b: [Float], _ j: Int) -> Double {
            Double((0..<d).reduce(0) { $0 + a[i * d + $1] * b[j * d + $1] })
        }
        for j in [1, 2] {
            print(
                "cosine(sentence 1, sentence \(j + 1)): decrypted \(fixed(cos(e, 0, e, j), 6)), "
                    + "plain \(fixed(cos(p, 0, p, j), 6))")
        }
        let worst = (0..<texts.count).map { cos(e, $0, p, $0) }.min()!
        print("decrypted vs plain vectors: worst cosine \(fixed(worst, 9))")
        print("")
    }

    /// Fashion-MNIST (60k x 784) in a hybrid index: built once into the model cache, then 1,000
    /// test images answered from disk and checked against brute force.
    func hybridIndex() throws {
        let fm = "/usr/share/datasets/fashion-mnist"
        guard FileManager.default.fileExists(atPath: fm + "/train-images-idx3-ubyte.gz") else {
            print(
                "(Fashion-MNIST not found: apt-get install dataset-fashion-mnist, or run scripts/bootstrap.sh, "
                    + "for the vector-search demo)")
            return
        }
        print("== Memory/disk hybrid vector index: Fashion-MNIST (60,000 x 784) ==")
        let k = try Kernels.selected(threads: 1)
        let dir = DefaultModels.dir + "/indexes/fashion-mnist-l2-f16"
        let (base, d) = try VectorFile.read(path: fm + "/train-images-idx3-ubyte.gz")
        let idx: HybridIndex
        if let existing = try? HybridIndex(directory: dir, kernels: k), existing.count == base.count / d {
            idx = existing
            print("index: opened \(dir) (built on an earlier run)")
        } else {
            let clock = Stopwatch()
            var o = HybridIndexOptions()
            o.payload = .f16 // half the disk bytes of f32 lists, and faster at equal recall (docs/benchmarks.md)
            idx = try HybridIndex.build(vectors: base, dim: d, directory: dir, options: o, kernels: Kernels.selected())
            print("index: built \(dir) in \(clock.text)")
        }
        let (qAll, _) = try VectorFile.read(path: fm + "/t10k-images-idx3-ubyte.gz")
        let m = 1000
        let q = Array(qAll[0..<(m * d)])
        let gt = try BruteForce.search(base: base, queries: q, dim: d, k: 10, metric: .l2)
        print(IndexStats.describe(idx))
        var table = MarkdownTable(["nprobe", "recall@10", "mean ms", "p99 ms", "lists read/query", "KiB read/query"])
        for np in [8, 16, 32] {
            var lat: [Double] = []
            var hits = 0
            var lists = 0
            var bytes = 0
            for i in 0..<m {
                let clock = Stopwatch()
                let r = try idx.search(
                    Array(q[(i * d)..<((i + 1) * d)]), k: 10, parameters: HybridSearchParameters(nprobe: np))
                lat.append(clock.milliseconds)
                let truth = Set(gt[(i * 10)..<((i + 1) * 10)].map { UInt64($0) })
                hits += r.neighbors.filter { truth.contains($0.id) }.count
                lists += r.cost.listsRead
                bytes += r.cost.bytesRead
            }
            lat.sort()
            table.add([
                "\(np)", fixed(Double(hits) / Double(10 * m), 3), fixed(lat.reduce(0, +) / Double(m), 3),
                fixed(lat[m * 99 / 100], 3), "\(lists / m)", "\(bytes / m / 1024)",
            ])
        }
        print(table)
        print(
            "(posting lists are memory-mapped from \(dir)/postings.bin and announced with madvise(WILLNEED); the "
                + "first row pays cold-cache reads and each list's one-time checksum check, later rows and runs hit "
                + "the page cache)")
    }
}
