import ArgumentParser
import Engine
import EngineClient
import Foundation

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate text with a Llama-family GGUF model, streaming to stdout.")
    @Option(help: "GGUF model file (default: SmolLM2-135M-Instruct from scripts/fetch_models.sh).") var model: String?
    @Option(help: "Prompt text.") var prompt: String
    @Option(name: .customLong("max-tokens"), parsing: .unconditional, help: "Tokens to generate.") var maxTokens = 64
    @Option(parsing: .unconditional, help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(name: .customLong("top-k"), parsing: .unconditional, help: "Top-k filter (0 = off).") var topK = 0
    @Option(name: .customLong("top-p"), parsing: .unconditional, help: "Top-p (nucleus) filter (1 = off).") var topP:
        Float = 1
    @Option(parsing: .unconditional, help: "Sampler seed.") var seed: UInt64 = 0
    @Flag(help: "Wrap the prompt in the model's chat template (one user turn).") var chat = false
    @Option(help: "Weights: f32 (dequantized at load, the reference) or native (as stored).") var weights:
        WeightFormat = .native
    @Option(help: "Activations for native weights: int8 (fast, as llama.cpp) or exact (f32).") var activations:
        ActivationsOption = .int8
    @Option(help: "Write logits of every prompt position to this .npy file (positions x vocab, float32).") var logits:
        String?
    @Option(parsing: .unconditional, help: "Threads (default: ENGINE_THREADS or all cores).") var threads: Int?
    @Option(help: "Key file: --model is an encrypted GGUF; the plain tokenizer comes from --tokenizer-model.") var key:
        String?
    @Option(
        name: .customLong("tokenizer-model"), help: "Plain GGUF holding the tokenizer (with --key; default: SmolLM2).")
    var tokenizerModel: String?
    @Option(help: "Client half of a split-encrypted model (engine encrypt-model --split): --model is its server half.")
    var client: String?
    @Flag(help: "Replace an existing output (otherwise an existing file is never replaced).") var force = false
    @Option(
        help:
            """
            Generate on an engine serve at this URL (e.g. http://127.0.0.1:8080) instead of in this \
            process; with --key the server holds the encrypted model and sees only permuted ids (a \
            comma-separated list of replicas: when a stream breaks, it starts over on the next, and the \
            text is not repeated); with --client (a split model's client half) only rotated vectors \
            cross, over a WebSocket.
            """)
    var server: String?
    @Option(name: .customLong("api-key-file"), help: "With --server: file holding the server's bearer token.")
    var apiKeyFile: String?
    @OptionGroup var kv: KVCacheOptions

    var parameters: GenerationParameters {
        var p = GenerationParameters(maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP, seed: seed)
        p.kvCache = kv.config
        return p
    }

    func validate() throws {
        try checkEnvironment()
        try checkRange(maxTokens, 1...Limits.context, "--max-tokens")
        try checkRange(temperature, 0...100, "--temperature")
        try checkRange(topK, 0...Limits.vocabulary, "--top-k")
        try checkRange(topP, 0...1, "--top-p")
        guard topP > 0 else { throw ValidationError("--top-p must be in (0, 1], got 0") }
        try checkThreads(threads)
        if let logits {
            try checkOutput(logits, force: force, inputs: [model, key, client, tokenizerModel], option: "--logits")
        }
        if let server {
            let urls = server.split(separator: ",")
            for u in urls where !(u.hasPrefix("http://") || u.hasPrefix("https://")) {
                throw ValidationError("--server takes http:// or https:// URLs, got \(String(u).debugDescription)")
            }
            guard urls.count == 1 || key != nil else {
                throw ValidationError("several --server URLs (replicas to fail over to) need --key")
            }
            guard model == nil && logits == nil else {
                throw ValidationError("--server runs on the server's model: --model and --logits do not apply")
            }
            guard client == nil || key == nil else {
                throw ValidationError("--client (split encryption) and --key (encrypted ids) are two different modes")
            }
            guard kv.type == .f32 else {
                throw ValidationError("--kv-cache applies to a model in this process (a server keeps its own cache)")
            }
        }
    }

    func run() async throws {
        if let server {
            try await runRemote(server)
            return
        }
        let n = threads ?? Threads.defaultCount
        configureThreads(n)
        let kernels = try Kernels.selected(threads: n)
        let path = model ?? DefaultModels.smolLM2
        let server = {
            try LlamaModel(path: path, format: weights, activations: activations.numerics, kernels: kernels)
        }
        if let client {
            try runSplit(client: GGUFFile(path: client), server: server(), kernels: kernels)
        } else if let key {
            try runEncrypted(key: EncryptionKey.read(path: key), server: server())
        } else {
            try runPlain(path: path, kernels: kernels, threads: n)
        }
    }

    /// Generation on a server: plain text, or with --key only permuted ids cross the network.
    func runRemote(_ urls: String) async throws {
        let apiKey = try readAPIKey(apiKeyFile)
        let replicas = urls.split(separator: ",").map { EngineClient(baseURL: String($0), apiKey: apiKey) }
        let url = replicas[0].baseURL
        let client = replicas[0]
        let clock = Stopwatch()
        var count = 0
        if let half = self.client {
            let file = try GGUFFile(path: half)
            let n = threads ?? Threads.defaultCount
            let remote = try await EncryptedSplitClient(
                client: EngineClient(baseURL: url, apiKey: apiKey),
                half: SplitClientHalf(client: file, kernels: Kernels.selected(threads: n)))
            let text = try text(template: ChatTemplate(gguf: file))
            count = try await remote.generate(prompt: text, parameters: parameters) { _, s in emit(s) }.count
        } else if let key {
            let plain = try GGUFFile(path: tokenizerModel ?? DefaultModels.smolLM2)
            let remote = try await EncryptedGenerationClient(
                client: client, tokenizer: BPETokenizer(gguf: plain), key: EncryptionKey.read(path: key))
            let text = try text(template: ChatTemplate(gguf: plain))
            count = try await remote.generate(
                prompt: text, parameters: parameters, fallbacks: Array(replicas.dropFirst())
            ) { _, s in emit(s) }.count
        } else {
            for try await piece in client.completion(prompt: prompt, parameters: parameters, chat: chat) {
                emit(piece)
                count += 1
            }
        }
        print("")
        let mode = self.client != nil ? "split-encrypted" : key == nil ? "plain" : "encrypted"
        let unit = key == nil && self.client == nil ? "pieces" : "tokens"
        note("[\(mode) generation on \(url): \(count) \(unit) in \(fixed(clock.seconds, 2)) s]")
    }

    /// The prompt as sent: wrapped in the chat template of the file that holds the tokenizer.
    func text(template: ChatTemplate) throws -> String {
        chat ? try template.prompt(user: prompt) : prompt
    }

    func runPlain(path: String, kernels: Kernels, threads n: Int) throws {
        let gen = try TextGenerator(path: path, format: weights, activations: activations.numerics, kernels: kernels)
        let text = try text(template: ChatTemplate(source: gen.chatTemplate))
        if let logits {
            let ids = try gen.tokenizer.encode(text)
            let l = try gen.model.forward(
                ids, cache: gen.model.makeCache(capacity: max(ids.count, 1), config: kv.config), allLogits: true)
            try writeLogits(l, rows: ids.count, vocab: gen.model.config.vocab, to: logits)
        }
        let clock = Stopwatch()
        let out = try gen.generate(prompt: text, parameters: parameters) { _, s in emit(s) }
        print("")
        let rate = Double(out.count) / clock.seconds
        note(
            "[\(out.count) tokens in \(fixed(clock.seconds, 2)) s, \(fixed(rate, 1)) tokens/s including prefill; "
                + "weights \(weights.rawValue), \(n) threads]")
    }

    func runEncrypted(key: EncryptionKey, server: LlamaModel) throws {
        let plain = try GGUFFile(path: tokenizerModel ?? DefaultModels.smolLM2)
        let session = try EncryptedSession(tokenizer: BPETokenizer(gguf: plain), server: server, key: key)
        let text = try text(template: ChatTemplate(gguf: plain))
        let ids = session.encryptIDs(try session.tokenizer.encode(text))
        note("server sees ids: \(ids.prefix(16).map(String.init).joined(separator: " ")) ...")
        if let logits {
            // the server's logits for every position, un-permuted by the client
            let vocab = server.config.vocab
            let l = try server.forward(
                ids, cache: server.makeCache(capacity: max(ids.count, 1), config: kv.config), allLogits: true)
            let plainRows = (0..<ids.count).flatMap {
                session.decryptLogits(Array(l[($0 * vocab)..<(($0 + 1) * vocab)]))
            }
            try writeLogits(plainRows, rows: ids.count, vocab: vocab, to: logits)
        }
        try session.generate(prompt: text, parameters: parameters) { _, s, _ in emit(s) }
        print("")
    }

    func runSplit(client: GGUFFile, server: LlamaModel, kernels: Kernels) throws {
        let session = try SplitEncryptedSession(client: client, server: server, kernels: kernels)
        let text = try text(template: ChatTemplate(gguf: client))
        if let logits {
            // one server step per prompt position: the client's head gives that position's logits
            let ids = try session.tokenizer.encode(text)
            let cache = try server.makeCache(capacity: max(ids.count, 1), config: kv.config)
            let rows = try ids.flatMap { try session.step([$0], cache: cache) }
            try writeLogits(rows, rows: ids.count, vocab: server.config.vocab, to: logits)
        }
        let out = try session.generate(prompt: text, parameters: parameters) { _, s in emit(s) }
        print("")
        note(
            "[split: \(out.count) tokens; the server received \(session.bytesSent) bytes of rotated vectors and no "
                + "token ids; client work \(fixed(session.clientSeconds, 3)) s]")
    }

    func writeLogits(_ values: [Float], rows: Int, vocab: Int, to path: String) throws {
        try NPY.write(values, shape: [rows, vocab], to: path)
        note("wrote logits \(rows) x \(vocab) to \(path)")
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print token ids of each input line (space-separated, one line per input line).")
    @Option(help: "GGUF model file (byte-level BPE) or BERT model directory (WordPiece); default: SmolLM2.")
    var model: String?
    @Option(help: "Text file, one input per line.") var input: String
    @Flag(name: .customLong("lossy-utf8"), help: "Replace invalid UTF-8 with U+FFFD instead of refusing the input.")
    var lossyUTF8 = false

    func validate() throws {
        try checkEnvironment()
    }

    func run() throws {
        let path = model ?? DefaultModels.smolLM2
        let encode: (String) throws -> [Int]
        if isDirectory(path) {
            encode = try WordPieceTokenizer(directory: path).encode
        } else {
            encode = try BPETokenizer(gguf: GGUFFile(path: path)).encode
        }
        for (n, line) in try readLines(input, lossy: lossyUTF8).enumerated() {
            do { print(try encode(line).map(String.init).joined(separator: " ")) } catch {
                throw EngineError.invalidArgument("\(input) line \(n + 1): \(error)")
            }
        }
    }
}
