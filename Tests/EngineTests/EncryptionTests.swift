import XCTest
import Engine

/// The encrypted SmolLM2 (residual rotation + vocabulary permutation, norms folded), run by the
/// unmodified engine on permuted ids, decrypts to the plain reference logits.
final class EncryptionTests: XCTestCase {
    func testEncryptedSmolLM2DecryptsToReference() throws {
        let k = try Kernels.selected()
        let f = try GGUFFile(path: TestModels.smolLM2)
        let key = try EncryptionKey(secret: [UInt8](repeating: 42, count: 32), shape: ModelShape(LlamaConfig(gguf: f)),
                                    modelID: EncryptionKey.modelID(gguf: f))
        let path = NSTemporaryDirectory() + "engine-enc-\(getpid()).gguf"
        defer { unlink(path) }
        try ModelEncryptor.encryptLlama(gguf: f, key: key, kernels: k).write(to: path)
        let enc = try LlamaModel(path: path, format: .f32, kernels: k)
        let plain = try LlamaModel(gguf: f, format: .f32, kernels: k)
        let P = key.vocabularyPermutation
        let (sampled, prompts) = try SmolLM2Tests.loadFixture()
        let V = enc.config.vocab
        var worst: Float = 0
        for pr in prompts {
            let cache = try enc.makeCache(capacity: 64), pc = try plain.makeCache(capacity: 64)
            let l = try enc.forward(pr.ids.map { P[$0] }, cache: cache, allLogits: true)
            let lp = try plain.forward(pr.ids, cache: pc, allLogits: true)
            for t in 0..<pr.ids.count {
                let range = pr.maxLogit[t] - pr.minLogit[t]
                var diff: Float = 0
                for (j, id) in sampled.enumerated() { diff = max(diff, abs(l[t * V + P[id]] - pr.sampled[t][j])) }
                worst = max(worst, diff / range)
                XCTAssertLessThanOrEqual(diff, 1e-3 * range, "position \(t)") // the bound
                // The server's logits are a permutation of the plain ones; its hidden states differ.
                let am = (0..<V).max { l[t * V + $0] < l[t * V + $1] }!
                XCTAssertEqual(am, P[pr.argmax[t]])
                XCTAssertEqual(l[t * V + P[7]], lp[t * V + 7], accuracy: 1e-3 * range)
            }
        }
        print("Encrypted SmolLM2 (f32): max |decrypted logit - reference| / range = \(worst)")
        // Another key: the same ids give unusable logits.
        let other = try EncryptionKey(secret: [UInt8](repeating: 43, count: 32), shape: key.shape, modelID: key.modelID)
        let pr = prompts[0]
        let cache = try enc.makeCache(capacity: 64)
        let l = try enc.forward(pr.ids.map { other.vocabularyPermutation[$0] }, cache: cache)
        let am = (0..<V).max { l[$0] < l[$1] }!
        XCTAssertNotEqual(am, P[pr.argmax[pr.ids.count - 1]], "a wrong key does not decrypt")
        // Client session: greedy text through the encrypted server equals plain f32 generation.
        let tok = try BPETokenizer(gguf: f)
        let session = try EncryptedSession(tokenizer: tok, server: enc, key: key)
        let plainGen = TextGenerator(model: plain, tokenizer: tok)
        let prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        var serverIDs: [Int] = []
        let a = try session.generate(prompt: prompt, parameters: GenerationParameters(maxTokens: 16)) { _, _, sid in serverIDs.append(sid) }
        XCTAssertEqual(a, try plainGen.generate(prompt: prompt, parameters: GenerationParameters(maxTokens: 16)))
        XCTAssertNotEqual(serverIDs, Array(a.prefix(serverIDs.count)), "the server never sees plain ids")
        XCTAssertThrowsError(try EncryptedSession(tokenizer: tok, server: enc,
            key: EncryptionKey(secret: key.secret, shape: ModelShape(vocab: 10, dim: 8, layers: 1, heads: 1, kvHeads: 1, headDim: 8, hidden: 8), modelID: key.modelID)))
        // The encrypted file carries no tokenizer (it would reveal P).
        XCTAssertNil(try GGUFFile(path: path).metadata["tokenizer.ggml.tokens"])
    }
}
