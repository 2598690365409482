import Foundation
/// The client side of equivariant encryption for a decoder: tokenizes with the plain tokenizer,
/// sends permuted ids to the server model (an encrypted GGUF run by the ordinary engine),
/// un-permutes the returned logits, samples, and detokenizes. Only permuted ids and permuted
/// logits cross between `client` and `server` here (the HTTP split comes later).
public final class EncryptedSession: @unchecked Sendable {
    /// The plain tokenizer (client side).
    public let tokenizer: BPETokenizer
    /// The encrypted model the server runs.
    public let server: LlamaModel
    let p: [Int]
    let inverse: [Int]

    /// A session; throws if the key was made for another model shape.
    public init(tokenizer: BPETokenizer, server: LlamaModel, key: EncryptionKey) throws {
        try require(
            key.shape == ModelShape(server.config), "the key's model shape differs from the server model's (wrong key)")
        try key.verify(modelCheck: server.keyCheck, model: "the server model")
        self.tokenizer = tokenizer
        self.server = server
        p = key.vocabularyPermutation
        var inv = [Int](repeating: 0, count: p.count)
        for (t, e) in p.enumerated() { inv[e] = t }
        inverse = inv
    }

    /// What the server sees for a plain id sequence.
    public func encryptIDs(_ ids: [Int]) -> [Int] { ids.map { p[$0] } }

    /// Plain logits from server logits (logits[t] = server[P[t]]).
    public func decryptLogits(_ s: [Float]) -> [Float] { p.map { s[$0] } }

    /// Generates from a plain prompt; `onToken(plainID, text, serverID)` streams each new token.
    @discardableResult
    public func generate(
        prompt: String, parameters: GenerationParameters = .init(),
        onToken: (Int, String, Int) -> Void = { _, _, _ in }
    ) throws -> [Int] {
        try decodeLoop(
            model: server, tokenizer: tokenizer, promptIDs: tokenizer.encode(prompt), parameters: parameters,
            stops: parameters.stopTokens ?? defaultStopTokens(tokenizer),
            step: { self.decryptLogits(try self.server.forward($0.map { self.p[$0] }, cache: $1)) }
        ) { id, text in onToken(id, text, self.p[id]) }
    }
}

/// The client's half of a split-encrypted decoder (`ModelEncryptor.clientHalf`): the rotated
/// embedding table E Q, the output head, and the tokenizer. It turns plain ids into the rotated
/// input vectors a split server takes, and a rotated final state from the server into plain
/// logits. Used in-process by `SplitEncryptedSession` and over a WebSocket by EngineClient's
/// split client.
public final class SplitClientHalf: @unchecked Sendable {
    /// The plain tokenizer.
    public let tokenizer: BPETokenizer
    /// The model's shape (equal to the server half's).
    public let config: LlamaConfig
    /// The key check value of the key the model was encrypted with.
    public let keyCheck: String
    let embedding: QuantizedMatrix, head: QuantizedMatrix
    let kernels: Kernels

    /// Reads a client half; throws if `f` is not one.
    public init(client f: GGUFFile, kernels: Kernels) throws {
        guard case .bool(true)? = f.metadata["engine.split_client"] else {
            throw EngineError.invalidArgument("\(f.file.path) is not the client half of a split-encrypted model")
        }
        guard let check = f.metadata["engine.key_check"]?.string else {
            throw EngineError.invalidArgument("\(f.file.path) has no key check value (not encrypted)")
        }
        let c = try LlamaConfig(gguf: f)
        tokenizer = try BPETokenizer(gguf: f)
        embedding = try f.matrix("token_embd.weight")
        head = try f.matrix("output.weight")
        try require(
            embedding.rows == c.vocab && embedding.cols == c.dim && head.rows == c.vocab && head.cols == c.dim,
            "client tensors do not match the configuration")
        config = c
        keyCheck = check
        self.kernels = kernels
    }

    /// The rotated input vectors (ids.count x dim) of plain ids.
    public func inputs(_ ids: [Int]) throws -> [Float] {
        let d = config.dim
        for t in ids where t < 0 || t >= config.vocab {
            throw EngineError.invalidArgument("token id \(t) is out of range 0..<\(config.vocab)")
        }
        var x = [Float](repeating: 0, count: ids.count * d)
        try x.withUnsafeMutableBufferPointer { xp in
            for (i, t) in ids.enumerated() {
                try kernels.row(embedding, t, into: UnsafeMutableBufferPointer(rebasing: xp[(i * d)..<((i + 1) * d)]))
            }
        }
        return x
    }

    /// Plain logits from the server's rotated final state (the last position's dim values).
    public func logits(finalState h: [Float]) throws -> [Float] {
        let d = config.dim
        try require(h.count == d, "a final state has \(d) values, got \(h.count)")
        try h.withUnsafeBufferPointer { try requireFinite($0, "final state") }
        var normed = [Float](repeating: 0, count: d)
        // The output norm's weight was folded into the head at encryption: only the RMS scaling here.
        try kernels.rmsNorm(h, [Float](repeating: 1, count: d), eps: config.normEps, into: &normed, dim: d)
        var logits = [Float](repeating: 0, count: config.vocab)
        try normed.withUnsafeBufferPointer { np in
            try logits.withUnsafeMutableBufferPointer { lp in
                try kernels.linear(head, x: np, tokens: 1, into: lp, numerics: .exact)
            }
        }
        return logits
    }

    /// The stop tokens generation ends on by default (end of text, end of turn).
    public var defaultStops: Set<Int> { defaultStopTokens(tokenizer) }
}

/// The client of a split-encrypted decoder: it holds the rotated embedding table and output head
/// (`ModelEncryptor.clientHalf`) and the tokenizer; the server (`engine.split` GGUF) receives
/// only rotated input vectors x Q and returns rotated final hidden states. Neither token ids nor
/// vocabulary-sized tensors reach the server, which removes the frequency and embedding-matching
/// attacks (docs/threat-model.md) at the cost of the head's matrix-vector product on the client.
public final class SplitEncryptedSession: @unchecked Sendable {
    /// The client half.
    public let half: SplitClientHalf
    /// The plain tokenizer (from the client half).
    public var tokenizer: BPETokenizer { half.tokenizer }
    /// The split server model (no vocabulary tensors).
    public let server: LlamaModel
    /// Traffic and client work so far, updated by concurrent `step` calls under `lock`.
    private var counters = (sent: 0, received: 0, seconds: 0.0)
    private let lock = NSLock()
    /// Bytes sent to the server so far (f32 vectors).
    public var bytesSent: Int { lock.withLock { counters.sent } }
    /// Bytes received from the server so far (f32 vectors).
    public var bytesReceived: Int { lock.withLock { counters.received } }
    /// Seconds spent in the client's own work (lookups, final norm, head).
    public var clientSeconds: Double { lock.withLock { counters.seconds } }

    private func count(sent: Int = 0, received: Int = 0, seconds: Double = 0) {
        lock.withLock {
            counters.sent += sent
            counters.received += received
            counters.seconds += seconds
        }
    }

    /// A session over a client half and its server model; throws if they do not belong together.
    public init(client f: GGUFFile, server: LlamaModel, kernels: Kernels) throws {
        let h = try SplitClientHalf(client: f, kernels: kernels)
        try require(
            h.config == server.config, "the client half and the server model have different shapes (another model)")
        guard h.keyCheck == server.keyCheck else {
            throw EngineError.invalidArgument(
                "the client half and the server model were encrypted with different keys (or one is not encrypted)")
        }
        half = h
        self.server = server
    }

    /// Plain logits for plain ids run at the cache's next positions (last position only).
    public func step(_ ids: [Int], cache: any KVCache) throws -> [Float] {
        let d = server.config.dim
        var t0 = DispatchTime.now().uptimeNanoseconds
        let x = try half.inputs(ids)
        count(sent: x.count * 4, seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        let h = try server.forwardHidden(x, cache: cache)
        count(received: d * 4) // only the last position's state is needed
        t0 = DispatchTime.now().uptimeNanoseconds
        let logits = try half.logits(finalState: Array(h[(h.count - d)...]))
        count(seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        return logits
    }

    /// Generates from a plain prompt; only rotated vectors reach the server.
    @discardableResult
    public func generate(
        prompt: String, parameters: GenerationParameters = .init(),
        onToken: (Int, String) -> Void = { _, _ in }
    ) throws -> [Int] {
        try decodeLoop(
            model: server, tokenizer: tokenizer, promptIDs: tokenizer.encode(prompt), parameters: parameters,
            stops: parameters.stopTokens ?? defaultStopTokens(tokenizer), step: { try self.step($0, cache: $1) },
            onToken: onToken)
    }
}
