import ArgumentParser
import Engine
import Foundation

extension KVCacheType: ExpressibleByArgument {}

/// `--kv-cache` and `--kv-window`, shared by generate and perplexity.
struct KVCacheOptions: ParsableArguments {
    @Option(
        name: .customLong("kv-cache"),
        help: """
            KV cache type: f32 (reference), f16, q8_0, q4_0 (per token, GGUF blocks), q4 or q2 (KIVI), \
            mikv (2-bit KIVI plus Q8_0 copies of the most attended positions) or h2o (the most attended \
            positions in f16 at mikv's bytes, the rest evicted).
            """)
    var type: KVCacheType = .f32
    @Option(
        name: .customLong("kv-window"), parsing: .unconditional,
        help: "q4/q2/mikv/h2o: most recent tokens kept in f16 (at least this many, fewer than this plus 32).")
    var window = KVCacheConfig.defaultWindow
    @Option(
        name: .customLong("kv-important"), parsing: .unconditional,
        help: """
            mikv: fraction of the positions outside the window that also keep a Q8_0 copy (the most \
            attended); h2o keeps as many f16 positions as fit in the same bytes (default 0.1).
            """)
    var important = KVCacheConfig.defaultImportant
    @Option(
        name: .customLong("kv-scores"),
        help: "Quantized caches: attention scores with exact (f32) or int8 queries and integer dots.")
    var scores: ActivationsOption = .exact
    @Option(
        name: .customLong("kv-budget-mib"),
        help: """
            f32/f16/q8_0/q4_0: RAM for the cache in MiB; older blocks of 64 tokens go to a file in \
            --kv-offload and each step attends to the sink, the recent window and --kv-blocks stored blocks.
            """)
    var budgetMiB: Double?
    @Option(name: .customLong("kv-offload"), help: "Directory of the KV block file (with --kv-budget-mib).")
    var offloadDirectory: String?
    @Option(
        name: .customLong("kv-blocks"), parsing: .unconditional,
        help: "Stored blocks of 64 tokens attended per step and KV head (with --kv-budget-mib; default 8).")
    var blocks: Int?

    var config: KVCacheConfig {
        var offload: KVOffload?
        if let budgetMiB, let offloadDirectory {
            offload = KVOffload(
                budgetBytes: Int(budgetMiB * 1_048_576), directory: offloadDirectory,
                blocks: blocks ?? KVOffload.defaultBlocks)
        }
        return KVCacheConfig(
            type: type, window: window, scores: scores.numerics, offload: offload, important: important)
    }

    func validate() throws {
        try checkRange(window, 0...Limits.context, "--kv-window")
        guard important.isFinite, important >= 0, important <= 1 else {
            throw ValidationError("--kv-important must be a fraction in 0...1, got \(important)")
        }
        if let budgetMiB {
            guard budgetMiB.isFinite, budgetMiB > 0, budgetMiB <= 1_048_576 else {
                throw ValidationError("--kv-budget-mib must be a positive number of MiB, got \(budgetMiB)")
            }
            guard offloadDirectory != nil else { throw ValidationError("--kv-budget-mib needs --kv-offload DIR") }
            guard type.rowType != nil else {
                throw ValidationError(
                    "--kv-budget-mib works with the per-token cache types (f32, f16, q8_0, q4_0), not \(type)")
            }
        } else if offloadDirectory != nil || blocks != nil {
            throw ValidationError("--kv-offload and --kv-blocks need --kv-budget-mib")
        }
        if let blocks { try checkRange(blocks, 1...KVOffload.maxBlocks, "--kv-blocks") }
    }
}

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a text under a Llama-family GGUF model, chunked as llama.cpp's perplexity tool does.",
        discussion: """
            The text is cut into chunks of --context tokens; each chunk runs through a fresh KV cache of \
            the chosen type, token by token by default, and the tokens of its second half are scored. \
            The last line reads: perplexity P over K tokens (kv-cache T, B bytes/token).
            """)
    @Option(help: "GGUF model file (default: SmolLM2-135M-Instruct from scripts/fetch_models.sh).") var model: String?
    @Option(help: "UTF-8 text file.") var input: String
    @Option(parsing: .unconditional, help: "Tokens per chunk.") var context = 512
    @Option(parsing: .unconditional, help: "Process at most this many chunks (default: all).") var chunks: Int?
    @Option(
        parsing: .unconditional,
        help: """
            Tokens per forward step (1 = token by token; larger steps attend over the same cache \
            contents a token-by-token pass sees, faster, equal up to float rounding).
            """)
    var step = 1
    @OptionGroup var kv: KVCacheOptions
    @Option(help: "Weights: f32 (dequantized at load, the reference) or native (as stored).") var weights:
        WeightFormat = .native
    @Option(help: "Activations for native weights: int8 (fast, as llama.cpp) or exact (f32).") var activations:
        ActivationsOption = .int8
    @Option(help: "Key file: --model is an encrypted GGUF; the plain tokenizer comes from --tokenizer-model.") var key:
        String?
    @Option(
        name: .customLong("tokenizer-model"), help: "Plain GGUF holding the tokenizer (with --key; default: SmolLM2).")
    var tokenizerModel: String?
    @Option(help: "Client half of a split-encrypted model: --model is its server half (token by token).")
    var client: String?
    @Option(help: "Also write the result as JSON (perplexity, tokens, per-chunk NLL, argmax ids) to this file.")
    var json: String?
    @Flag(help: "Replace an existing --json file.") var force = false
    @Option(parsing: .unconditional, help: "Threads (default: ENGINE_THREADS or all cores).") var threads: Int?

    func validate() throws {
        try checkEnvironment()
        try checkRange(context, 4...Limits.context, "--context")
        try checkRange(step, 1...Limits.context, "--step")
        if let chunks { try checkRange(chunks, 1...Int(Int32.max), "--chunks") }
        try checkThreads(threads)
        guard key == nil || client == nil else { throw ValidationError("--key and --client are two different modes") }
        if let json { _ = try checkOutput(json, force: force, inputs: [model, input, key, client], option: "--json") }
    }

    func run() throws {
        let n = threads ?? Threads.defaultCount
        configureThreads(n)
        let kernels = try Kernels.selected(threads: n)
        let path = model ?? DefaultModels.smolLM2
        let server = try LlamaModel(path: path, format: weights, activations: activations.numerics, kernels: kernels)
        let c = server.config
        guard context <= c.contextLength else {
            throw ValidationError("--context \(context) exceeds the model's context of \(c.contextLength) tokens")
        }
        let cacheConfig = kv.config
        try cacheConfig.validate(context: context, headDim: c.headDim)
        guard let data = FileManager.default.contents(atPath: input) else {
            throw EngineError.io("cannot read \(input)")
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw EngineError.invalidArgument("\(input) is not valid UTF-8")
        }
        let tokenizer: BPETokenizer
        var stepTokens = step
        var run: LogitsStep
        if let client {
            let session = try SplitEncryptedSession(client: GGUFFile(path: client), server: server, kernels: kernels)
            tokenizer = session.tokenizer
            stepTokens = 1 // the client's head sees the last position of a step
            run = { ids, cache in try session.step(ids, cache: cache) }
        } else if let key {
            let plain = try GGUFFile(path: tokenizerModel ?? DefaultModels.smolLM2)
            let session = try EncryptedSession(
                tokenizer: BPETokenizer(gguf: plain), server: server, key: EncryptionKey.read(path: key))
            tokenizer = session.tokenizer
            let vocab = c.vocab
            run = { ids, cache in
                let l = try server.forward(session.encryptIDs(ids), cache: cache, allLogits: true)
                return (0..<ids.count).flatMap { session.decryptLogits(Array(l[($0 * vocab)..<(($0 + 1) * vocab)])) }
            }
        } else {
            tokenizer = try BPETokenizer(gguf: GGUFFile(path: path))
            run = { ids, cache in try server.forward(ids, cache: cache, allLogits: true) }
        }
        let ids = try tokenizer.encode(text)
        let bos = tokenizer.addsBOS ? tokenizer.bosID : nil
        let bytes = cacheConfig.bytesPerToken(kvHeads: c.kvHeads, headDim: c.headDim) * c.layers
        let clock = Stopwatch()
        var offloaded: OffloadKVCache?
        var peak = 0
        var readBytes = 0
        note(
            "\(ids.count) tokens, \(ids.count / context) chunks of \(context); kv-cache \(cacheConfig.type)"
                + (cacheConfig.type.isKIVI ? " (window \(cacheConfig.window))" : "") + ", \(n) threads")
        let r = try evaluatePerplexity(
            tokens: ids, context: context, vocab: c.vocab, bos: bos, stepTokens: stepTokens, maxChunks: chunks,
            makeCache: {
                let cache = try server.makeCache(capacity: context, config: cacheConfig)
                if let o = offloaded { readBytes += o.bytesRead }
                offloaded = cache as? OffloadKVCache
                return cache
            }, step: run
        ) { done, total, ppl in
            if let o = offloaded {
                peak = max(peak, o.peakMemoryBytes)
                note(
                    "[\(done)/\(total)] perplexity so far \(fixed(ppl, 4)), \(fixed(clock.seconds, 1)) s; "
                        + "cache RAM peak \(fixed(Double(peak) / 1_048_576, 2)) MiB (window \(o.windowTokens) tokens), "
                        + "read \(fixed(Double(readBytes + o.bytesRead) / 1_048_576, 0)) MiB from \(o.path)")
            } else {
                note("[\(done)/\(total)] perplexity so far \(fixed(ppl, 4)), \(fixed(clock.seconds, 1)) s")
            }
        }
        if let json {
            struct Report: Encodable {
                let model: String
                let input: String
                let context: Int
                let kvCache: String
                let kvWindow: Int?
                let bytesPerToken: Int
                let weights: String
                let activations: String
                let seconds: Double
                let result: PerplexityResult
            }
            let report = Report(
                model: path, input: input, context: context, kvCache: cacheConfig.type.rawValue,
                kvWindow: cacheConfig.type.isKIVI ? cacheConfig.window : nil, bytesPerToken: bytes,
                weights: weights.rawValue, activations: activations.rawValue, seconds: clock.seconds, result: r)
            let enc = JSONEncoder()
            enc.keyEncodingStrategy = .convertToSnakeCase
            enc.outputFormatting = [.sortedKeys]
            let w = try AtomicFileWriter(path: json, replace: force)
            try w.write(Array(try enc.encode(report)) + [10])
            try w.commit()
        }
        print(
            "perplexity \(fixed(r.perplexity, 4)) over \(r.tokens) tokens (kv-cache \(cacheConfig.type), "
                + "\(bytes) bytes/token)")
    }
}

struct BenchKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract:
            """
            SmolLM2 decode tokens/s per KV cache type at long contexts (medians): the cache is filled \
            with a real text's tokens, then greedy decode steps are timed; prints JSON lines for \
            scripts/bench_kv.py.
            """)
    @Option(help: "UTF-8 text whose tokens fill the context (scripts/kv_corpus.py).") var input: String
    @Option(help: "Cache types (comma-separated).") var types = "f32,f16,q8_0,q4_0,q4,q2"
    @Option(help: "Contexts (comma-separated): positions in the cache while decoding.") var contexts = "512,2048,8192"
    @Option(help: "Threads to measure (comma-separated).") var threads = "1,2"
    @Option(name: .customLong("decode-tokens"), parsing: .unconditional, help: "Tokens per timed run.")
    var decodeTokens = 16
    @Option(parsing: .unconditional, help: "Timed runs per setting (median reported).") var reps = 3
    @Option(help: "Activations for the quantized weights: int8 or exact.") var activations: ActivationsOption = .int8
    @Option(
        name: .customLong("kv-window"), parsing: .unconditional, help: "q4/q2: recent tokens kept in f16.")
    var window = KVCacheConfig.defaultWindow
    @Option(name: .customLong("kv-scores"), help: "Quantized caches: attention scores with exact or int8 queries.")
    var scores: ActivationsOption = .exact
    @Option(
        name: .customLong("kv-important"), parsing: .unconditional,
        help: "mikv/h2o: fraction of the positions outside the window with a Q8_0 copy (h2o: same bytes).")
    var important = KVCacheConfig.defaultImportant
    @Option(
        name: .customLong("kv-budget-fraction"), parsing: .unconditional,
        help: "Per-token types: offload with a RAM budget of this fraction of the full cache at each context.")
    var budgetFraction: Double?
    @Option(name: .customLong("kv-offload"), help: "Directory of the KV block file (with --kv-budget-fraction).")
    var offloadDirectory: String?
    @Option(name: .customLong("kv-blocks"), parsing: .unconditional, help: "Stored blocks attended per step.")
    var blocks = KVOffload.defaultBlocks

    func validate() throws {
        try checkEnvironment()
        if let budgetFraction {
            guard budgetFraction.isFinite, budgetFraction > 0, budgetFraction <= 1 else {
                throw ValidationError("--kv-budget-fraction must be in (0, 1], got \(budgetFraction)")
            }
            guard offloadDirectory != nil else { throw ValidationError("--kv-budget-fraction needs --kv-offload DIR") }
        }
        try checkRange(blocks, 1...KVOffload.maxBlocks, "--kv-blocks")
        _ = try checkedList(threads, 1...Limits.threads, "--threads")
        _ = try checkedList(contexts, 64...Limits.context, "--contexts")
        for t in types.split(separator: ",") { _ = try KVCacheType.named(String(t)) }
        try checkRange(decodeTokens, 1...1024, "--decode-tokens")
        try checkRange(reps, 1...100, "--reps")
        try checkRange(window, 0...Limits.context, "--kv-window")
        guard important.isFinite, important >= 0, important <= 1 else {
            throw ValidationError("--kv-important must be a fraction in 0...1, got \(important)")
        }
    }

    func run() throws {
        warnIfDebug("bench kv")
        let counts = threads.split(separator: ",").compactMap { Int($0) }
        let ctxs = contexts.split(separator: ",").compactMap { Int($0) }
        let kinds = try types.split(separator: ",").map { try KVCacheType.named(String($0)) }
        let models = try counts.map {
            try LlamaModel(
                path: DefaultModels.smolLM2, activations: activations.numerics, kernels: Kernels.selected(threads: $0))
        }
        let filler = try LlamaModel(
            path: DefaultModels.smolLM2, activations: activations.numerics,
            kernels: Kernels.selected(threads: Threads.defaultCount))
        let c = filler.config
        guard let data = FileManager.default.contents(atPath: input), let text = String(validating: data, as: UTF8.self)
        else { throw EngineError.io("cannot read \(input) as UTF-8 text") }
        let ids = try BPETokenizer(gguf: GGUFFile(path: DefaultModels.smolLM2)).encode(text)
        let timed = (decodeTokens * reps + 1) * counts.count
        for ctx in ctxs {
            guard ctx - timed >= 16, ctx <= c.contextLength, ids.count >= ctx else {
                throw ValidationError(
                    "context \(ctx) needs more than \(timed) decode steps, at most \(c.contextLength) positions and "
                        + "a text of \(ctx) tokens (has \(ids.count))")
            }
            for kind in kinds {
                // f32 / f16 keys have no int8 score path: they are scored exactly in either mode
                let mode = kind == .f32 || kind == .f16 || kind.isMixed ? Numerics.exact : scores.numerics
                var kv = KVCacheConfig(type: kind, window: min(window, ctx), scores: mode, important: important)
                let bytes = kv.bytesPerToken(kvHeads: c.kvHeads, headDim: c.headDim) * c.layers
                if let budgetFraction, let offloadDirectory {
                    guard kind.rowType != nil else {
                        throw ValidationError("--kv-budget-fraction works with f32, f16, q8_0 and q4_0, not \(kind)")
                    }
                    kv.offload = KVOffload(
                        budgetBytes: Int(budgetFraction * Double(bytes * ctx)), directory: offloadDirectory,
                        blocks: blocks)
                }
                let cache = try filler.makeCache(capacity: ctx, config: kv)
                configureThreads(Threads.defaultCount)
                var pos = 0
                let fill = ctx - timed
                let clock = Stopwatch()
                while pos < fill {
                    let n = min(512, fill - pos)
                    _ = try filler.forward(Array(ids[pos..<(pos + n)]), cache: cache)
                    pos += n
                }
                note("bench kv: \(kind) filled \(fill) positions in \(fixed(clock.seconds, 1)) s")
                for (i, t) in counts.enumerated() {
                    configureThreads(t)
                    var rates: [Double] = []
                    var logits = try models[i].forward([ids[pos]], cache: cache)
                    for _ in 0..<reps {
                        var clock = Stopwatch()
                        for _ in 0..<decodeTokens {
                            let next = logits.indices.max { logits[$0] < logits[$1] }!
                            logits = try models[i].forward([next], cache: cache)
                        }
                        rates.append(Double(decodeTokens) / clock.lap())
                    }
                    pos = cache.length
                    let offload =
                        kv.offload.map {
                            #""kv_budget_mib": \#(Double($0.budgetBytes) / 1048576), "kv_blocks": \#($0.blocks), "#
                        } ?? ""
                    print(
                        #"{"engine": "engine", "kv_cache": "\#(kind)", "kv_scores": "\#(kv.scores)", "# + offload
                            + #""threads": \#(t), "context": \#(ctx), "#
                            + #""decode_tps": \#(median(rates)), "bytes_per_token": \#(bytes), "#
                            + #""cache_mib": \#(Double(cache.memoryBytes) / 1048576)}"#)
                }
            }
        }
    }
}
