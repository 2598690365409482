import Foundation

/// Sampling settings for text generation. Defaults: greedy (temperature 0).
public struct GenerationParameters: Sendable {
    /// Maximum tokens to generate.
    public var maxTokens: Int = 128
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    public var temperature: Float = 0
    /// Keep only the k most likely tokens (0 = no limit).
    public var topK: Int = 0
    /// Keep the smallest set of tokens whose probability reaches p (1 = no limit).
    public var topP: Float = 1
    /// Seed of the sampler (same seed, same text).
    public var seed: UInt64 = 0
    /// Generation stops after any of these ids (default: the model's end-of-sequence token and
    /// <|im_end|> when present).
    public var stopTokens: Set<Int>? = nil
    /// The KV cache's type and options (default: dense f32).
    public var kvCache: KVCacheConfig = .f32

    /// Sampling settings; see each property.
    public init(
        maxTokens: Int = 128, temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0,
        stopTokens: Set<Int>? = nil
    ) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
        self.stopTokens = stopTokens
    }

    func validate() throws {
        try require(maxTokens >= 0, "maxTokens must be >= 0, got \(maxTokens)")
        try require(temperature >= 0 && temperature.isFinite, "temperature must be finite and >= 0, got \(temperature)")
        try require(topK >= 0, "topK must be >= 0, got \(topK)")
        try require(topP > 0 && topP <= 1, "topP must be in (0, 1], got \(topP)")
    }
}

/// Picks the next token from logits (greedy, or seeded temperature / top-k / top-p sampling).
public struct Sampler: Sendable {
    /// The settings this sampler applies.
    public let parameters: GenerationParameters
    var rng: SeededRandom

    /// A sampler; throws on out-of-range settings.
    public init(_ p: GenerationParameters) throws {
        try p.validate()
        parameters = p
        rng = SeededRandom(seed: p.seed)
    }

    /// The next token id for `logits` (greedy, or a seeded draw after temperature, top-k and top-p).
    public mutating func next(_ logits: [Float]) -> Int {
        let p = parameters
        if p.temperature == 0 {
            var best = 0
            for i in 1..<logits.count where logits[i] > logits[best] { best = i }
            return best
        }
        var idx = Array(logits.indices).sorted { logits[$0] > logits[$1] }
        if p.topK > 0 && p.topK < idx.count { idx.removeLast(idx.count - p.topK) }
        let m = logits[idx[0]]
        var probs = idx.map { Double(Foundation.exp((logits[$0] - m) / p.temperature)) }
        let z = probs.reduce(0, +)
        probs = probs.map { $0 / z }
        if p.topP < 1 {
            var acc = 0.0
            var keep = probs.count
            for (i, q) in probs.enumerated() {
                acc += q
                if acc >= Double(p.topP) {
                    keep = i + 1
                    break
                }
            }
            idx.removeLast(idx.count - keep)
            probs.removeLast(probs.count - keep)
            let z2 = probs.reduce(0, +)
            probs = probs.map { $0 / z2 }
        }
        var u = Double(rng.next() >> 11) * 0x1p-53
        for (i, q) in probs.enumerated() {
            u -= q
            if u < 0 { return idx[i] }
        }
        return idx[idx.count - 1]
    }
}

/// A decoder with its tokenizer: prompt in, streamed text out.
public final class TextGenerator: @unchecked Sendable {
    /// The decoder.
    public let model: LlamaModel
    /// Its tokenizer.
    public let tokenizer: BPETokenizer
    /// The model's chat template source (GGUF `tokenizer.chat_template`), if any.
    public let chatTemplate: String?

    /// A generator over a loaded model and tokenizer.
    public init(model: LlamaModel, tokenizer: BPETokenizer, chatTemplate: String? = nil) {
        self.model = model
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
    }

    /// Loads model and tokenizer from one GGUF file.
    public convenience init(
        path: String, format: WeightFormat = .native, activations: Numerics = .int8, kernels: Kernels
    ) throws {
        let f = try GGUFFile(path: path)
        if f.metadata["engine.key_check"] != nil {
            throw EngineError.invalidArgument(
                "\(path) is an encrypted model: generate through its key's client (engine generate --key)")
        }
        try self.init(
            model: LlamaModel(gguf: f, format: format, activations: activations, kernels: kernels),
            tokenizer: BPETokenizer(gguf: f), chatTemplate: f.metadata["tokenizer.chat_template"]?.string)
    }

    /// The prompt as the model's chat template formats one user turn followed by the assistant's
    /// turn (see `ChatTemplate`).
    public func chatPrompt(user: String, system: String? = nil) throws -> String {
        try ChatTemplate(source: chatTemplate).prompt(user: user, system: system)
    }

    /// Default stop tokens: end-of-sequence and <|im_end|>.
    public var defaultStops: Set<Int> { defaultStopTokens(tokenizer) }

    /// Generates from `prompt`; `onToken` receives each new token id and the text it completes
    /// (UTF-8 sequences split across tokens are held back until complete). Returns all new ids.
    @discardableResult
    public func generate(
        prompt: String, parameters: GenerationParameters = .init(),
        onToken: (Int, String) -> Void = { _, _ in }
    ) throws -> [Int] {
        let ids = try tokenizer.encode(prompt)
        try require(!ids.isEmpty, "the prompt is empty")
        return try generate(promptIDs: ids, parameters: parameters, onToken: onToken)
    }

    /// Generates from prompt ids; `onToken` receives each new id and the text it completes.
    @discardableResult
    public func generate(
        promptIDs: [Int], parameters: GenerationParameters = .init(),
        onToken: (Int, String) -> Void = { _, _ in }
    ) throws -> [Int] {
        try decodeLoop(
            model: model, tokenizer: tokenizer, promptIDs: promptIDs, parameters: parameters,
            stops: parameters.stopTokens ?? defaultStops, step: { try self.model.forward($0, cache: $1) },
            onToken: onToken)
    }
}

/// Default stop tokens of a tokenizer: end-of-sequence and <|im_end|>.
func defaultStopTokens(_ tokenizer: BPETokenizer) -> Set<Int> {
    var s = Set<Int>()
    if let e = tokenizer.eosID { s.insert(e) }
    if let e = tokenizer.id(of: "<|im_end|>") { s.insert(e) }
    return s
}

/// The generation loop shared by plain and encrypted generation: `step(ids, cache)` runs plain
/// ids at the cache's next positions and returns the last position's logits in plain vocabulary
/// order (a plain forward pass, or an encrypted server call wrapped by its client).
func decodeLoop(
    model: LlamaModel, tokenizer: BPETokenizer, promptIDs: [Int], parameters: GenerationParameters,
    stops: Set<Int>, step: ([Int], any KVCache) throws -> [Float],
    onToken: (Int, String) -> Void
) throws -> [Int] {
    var sampler = try Sampler(parameters)
    try require(!promptIDs.isEmpty, "the prompt is empty")
    try require(
        promptIDs.count <= model.config.contextLength,
        "the prompt has \(promptIDs.count) tokens but the context holds \(model.config.contextLength)")
    let cap = min(model.config.contextLength, promptIDs.count + min(parameters.maxTokens, model.config.contextLength))
    try parameters.kvCache.validate(context: model.config.contextLength, headDim: model.config.headDim)
    let cache = try model.makeCache(capacity: max(cap, 1), config: parameters.kvCache)
    var logits = try step(promptIDs, cache)
    var out: [Int] = []
    var pending: [UInt8] = []
    while out.count < parameters.maxTokens && cache.length < cache.capacity {
        let next = sampler.next(logits)
        out.append(next)
        if stops.contains(next) { break }
        pending += tokenizer.bytes(of: next)
        if let s = String(validating: pending, as: UTF8.self) {
            onToken(next, s)
            pending = []
        }
        if cache.length >= cache.capacity { break }
        logits = try step([next], cache)
    }
    if !pending.isEmpty { onToken(out.last ?? 0, String(decoding: pending, as: UTF8.self)) }
    return out
}
