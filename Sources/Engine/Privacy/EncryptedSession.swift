/// The client side of equivariant encryption for a decoder: tokenizes with the plain tokenizer,
/// sends permuted ids to the server model (an encrypted GGUF run by the ordinary engine),
/// un-permutes the returned logits, samples, and detokenizes. Only permuted ids and permuted
/// logits cross between `client` and `server` here (the HTTP split comes later).
public final class EncryptedSession: @unchecked Sendable {
    public let tokenizer: BPETokenizer
    public let server: LlamaModel
    let p: [Int]
    let inverse: [Int]

    public init(tokenizer: BPETokenizer, server: LlamaModel, key: EncryptionKey) throws {
        try require(key.shape == ModelShape(server.config), "the key's model shape differs from the server model's (wrong key)")
        self.tokenizer = tokenizer; self.server = server
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
    public func generate(prompt: String, parameters: GenerationParameters = .init(),
                         onToken: (Int, String, Int) -> Void = { _, _, _ in }) throws -> [Int] {
        try decodeLoop(model: server, tokenizer: tokenizer, promptIDs: tokenizer.encode(prompt), parameters: parameters,
                       stops: parameters.stopTokens ?? defaultStopTokens(tokenizer),
                       toModel: { self.p[$0] }, fromModel: decryptLogits) { id, text in onToken(id, text, self.p[id]) }
    }
}
