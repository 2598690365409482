import XCTest
import Engine

/// The encrypted SmolLM2 (residual rotation, vocabulary permutation, per-head and MLP transforms,
/// norms folded), run by the unmodified engine on permuted ids, decrypts to the plain reference.
final class EncryptionTests: XCTestCase {
    static let secret = [UInt8](repeating: 42, count: 32)

    static func key(_ f: GGUFFile, secret: [UInt8] = secret) throws -> EncryptionKey {
        try EncryptionKey(
            secret: secret, shape: ModelShape(LlamaConfig(gguf: f)), modelID: EncryptionKey.modelID(gguf: f))
    }

    /// Encrypts SmolLM2 with the test key at `type` and loads the result (file removed after).
    static func encrypted(_ f: GGUFFile, type: RowType, format: WeightFormat, activations: Numerics = .exact) throws
        -> LlamaModel
    {
        let path = NSTemporaryDirectory() + "engine-enc-\(getpid())-\(type).gguf"
        defer { unlink(path) }
        try ModelEncryptor.encryptLlama(gguf: f, key: key(f), type: type, kernels: Kernels.selected()).write(to: path)
        return try LlamaModel(path: path, format: format, activations: activations, kernels: Kernels.selected())
    }

    /// Max over positions of max |decrypted logit - reference| / reference range, and argmax
    /// agreement, over the 5 fixture prompts (2,048 sampled vocabulary ids per position).
    func decryptedVsReference(_ enc: LlamaModel, _ P: [Int]) throws -> (worst: Float, top1: Int, positions: Int) {
        let (sampled, prompts) = try SmolLM2Tests.loadFixture()
        let V = enc.config.vocab
        var worst: Float = 0
        var top1 = 0
        var n = 0
        for pr in prompts {
            let l = try enc.forward(pr.ids.map { P[$0] }, cache: enc.makeCache(capacity: 64), allLogits: true)
            for t in 0..<pr.ids.count {
                var diff: Float = 0
                for (j, id) in sampled.enumerated() { diff = max(diff, abs(l[t * V + P[id]] - pr.sampled[t][j])) }
                worst = max(worst, diff / (pr.maxLogit[t] - pr.minLogit[t]))
                if (0..<V).max(by: { l[t * V + $0] < l[t * V + $1] })! == P[pr.argmax[t]] { top1 += 1 }
                n += 1
            }
        }
        return (worst, top1, n)
    }

    /// Greedy continuations of the 5 fixture prompts through an EncryptedSession and the plain
    /// model; returns how many are identical.
    func greedyAgreement(_ session: EncryptedSession, _ plain: LlamaModel, tokens: Int) throws -> Int {
        let (_, prompts) = try SmolLM2Tests.loadFixture()
        let plainGen = TextGenerator(model: plain, tokenizer: session.tokenizer)
        var same = 0
        for pr in prompts {
            let text = try session.tokenizer.decode(pr.ids)
            let p = GenerationParameters(maxTokens: tokens, stopTokens: [])
            let a = try session.generate(prompt: text, parameters: p)
            let b = try plainGen.generate(prompt: text, parameters: p)
            XCTAssertEqual(a.count, tokens)
            if a == b { same += 1 }
        }
        return same
    }

    func testEncryptedSmolLM2DecryptsToReference() throws {
        let f = try GGUFFile(path: TestModels.smolLM2)
        let key = try Self.key(f)
        let enc = try Self.encrypted(f, type: .f32, format: .f32)
        let plain = try LlamaModel(gguf: f, format: .f32, kernels: Kernels.selected())
        let P = key.vocabularyPermutation
        let r = try decryptedVsReference(enc, P)
        print(
            """
            Encrypted SmolLM2 (f32): max |decrypted logit - reference| / range = \(r.worst), argmax \
            \(r.top1)/\(r.positions)
            """
        )
        XCTAssertLessThanOrEqual(r.worst, 1e-3) // 1e-3 of the range; f32 rounding gives ~5e-6
        XCTAssertEqual(r.top1, r.positions)

        // Another key: the same ids give unusable logits.
        let (_, prompts) = try SmolLM2Tests.loadFixture()
        let other = try Self.key(f, secret: [UInt8](repeating: 43, count: 32))
        var hits = 0
        for pr in prompts {
            let l = try enc.forward(pr.ids.map { other.vocabularyPermutation[$0] }, cache: enc.makeCache(capacity: 64))
            let am = (0..<l.count).max { l[$0] < l[$1] }!
            if other.vocabularyPermutation[pr.argmax[pr.ids.count - 1]] == am { hits += 1 }
        }
        XCTAssertEqual(hits, 0, "a wrong key does not decrypt")

        // Client session: 64-token greedy continuations through the encrypted server equal plain f32 generation.
        let tok = try BPETokenizer(gguf: f)
        let session = try EncryptedSession(tokenizer: tok, server: enc, key: key)
        let same = try greedyAgreement(session, plain, tokens: 64)
        print("Encrypted SmolLM2 (f32): \(same)/5 identical 64-token greedy continuations")
        XCTAssertEqual(same, 5)
        var serverIDs: [Int] = []
        var plainIDs: [Int] = []
        try session.generate(prompt: "The capital of France is", parameters: GenerationParameters(maxTokens: 8)) {
            id, _, sid in
            plainIDs.append(id)
            serverIDs.append(sid)
        }
        XCTAssertNotEqual(serverIDs, plainIDs, "the server never sees plain ids")
        XCTAssertThrowsError(
            try EncryptedSession(
                tokenizer: tok, server: enc,
                key: EncryptionKey(
                    secret: key.secret,
                    shape: ModelShape(vocab: 10, dim: 8, layers: 1, heads: 1, kvHeads: 1, headDim: 8, hidden: 8),
                    modelID: key.modelID)))
    }

    /// Every residual-stream state the server computes differs from the plain one: no row equal,
    /// elementwise correlation near 0; rotating back by Q^T recovers the plain state.
    func testServerHiddenStatesDiffer() throws {
        let f = try GGUFFile(path: TestModels.smolLM2)
        let key = try Self.key(f)
        let enc = try Self.encrypted(f, type: .f32, format: .f32)
        let plain = try LlamaModel(gguf: f, format: .f32, kernels: Kernels.selected())
        let ids = try BPETokenizer(gguf: f).encode("Equivariant encryption keeps the server blind to every activation.")
        var xs: [Int: [Float]] = [:]
        var ys: [Int: [Float]] = [:]
        _ = try plain.forward(ids, cache: plain.makeCache(capacity: 64)) { l, x in xs[l] = x }
        _ = try enc.forward(ids.map { key.vocabularyPermutation[$0] }, cache: enc.makeCache(capacity: 64)) { l, x in
            ys[l] = x
        }
        let d = plain.config.dim
        let q = try key.residualRotation()
        var maxCorr = 0.0
        var worstBack = 0.0
        var minRowDiff = Double.infinity
        for l in -1..<plain.config.layers {
            let x = xs[l]!
            let y = ys[l]!
            // Pearson correlation of plain and server values over all T x d elements.
            let n = Double(x.count)
            let mx = x.reduce(0.0) { $0 + Double($1) } / n
            let my = y.reduce(0.0) { $0 + Double($1) } / n
            var sxy = 0.0
            var sxx = 0.0
            var syy = 0.0
            for i in 0..<x.count {
                let a = Double(x[i]) - mx
                let b = Double(y[i]) - my
                sxy += a * b
                sxx += a * a
                syy += b * b
            }
            maxCorr = max(maxCorr, abs(sxy / (sxx * syy).squareRoot()))
            for t in 0..<ids.count {
                let xr = x[(t * d)..<((t + 1) * d)].map(Double.init)
                let yr = y[(t * d)..<((t + 1) * d)].map(Double.init)
                let norm = xr.reduce(0) { $0 + $1 * $1 }.squareRoot()
                var diff = 0.0
                var back = 0.0
                for j in 0..<d {
                    diff = max(diff, abs(xr[j] - yr[j]))
                    var acc = 0.0 // (y Q^T)_j = sum_k y_k Q[j][k]
                    for k in 0..<d { acc += yr[k] * q[j * d + k] }
                    back = max(back, abs(acc - xr[j]))
                }
                minRowDiff = min(minRowDiff, diff / norm)
                worstBack = max(worstBack, back / norm)
            }
        }
        print(
            """
            Encrypted SmolLM2 server states: max |corr(plain, server)| = \(maxCorr) over \
            \(plain.config.layers + 1) residual states, min row max|diff|/norm = \(minRowDiff), max |x'Q^T - \
            x|/|x| = \(worstBack)
            """
        )
        // Bounds: a Haar rotation of a 576-d stream leaves correlations ~ 1/sqrt(d) ~ 0.04 plus the
        // stream's shared mean direction; 0.3 would mean a transform is missing. Every row differs
        // by at least 1% of its norm. Rotating back is exact to f32 rounding over 30 layers (1e-3).
        XCTAssertLessThan(maxCorr, 0.3)
        XCTAssertGreaterThan(minRowDiff, 0.01)
        XCTAssertLessThan(worstBack, 1e-3)
    }

    /// Re-quantized (Q8_0) encrypted weights vs the reference and vs plain Q8_0 weights: both are
    /// within a Q8_0 rounding of the reference, so the figure to compare is encrypted-Q8_0 vs
    /// plain-Q8_0 (same weight format), not bit equality.
    func testEncryptedQ8_0() throws {
        let f = try GGUFFile(path: TestModels.smolLM2)
        let key = try Self.key(f)
        let enc = try Self.encrypted(f, type: .q8_0, format: .native)
        XCTAssertEqual(enc.format, .native)
        let plainPath = NSTemporaryDirectory() + "engine-plain-q8-\(getpid()).gguf"
        defer { unlink(plainPath) }
        try ModelEncryptor.convertLlama(gguf: f, type: .q8_0, kernels: Kernels.selected()).write(to: plainPath)
        let plain = try LlamaModel(path: plainPath, format: .native, activations: .exact, kernels: Kernels.selected())
        let e = try decryptedVsReference(enc, key.vocabularyPermutation)
        let p = try decryptedVsReference(plain, Array(0..<plain.config.vocab))
        let same = try greedyAgreement(
            EncryptedSession(tokenizer: BPETokenizer(gguf: f), server: enc, key: key), plain, tokens: 64)
        print(
            """
            Encrypted SmolLM2 (Q8_0, exact activations): max diff / range \(e.worst), argmax \
            \(e.top1)/\(e.positions); plain Q8_0: \(p.worst), argmax \(p.top1)/\(p.positions); \(same)/5 \
            64-token greedy continuations identical to plain Q8_0
            """
        )
        // Q8_0 of the 4-bit model's weights moves logits by ~1% of their range (plain Q8_0 shows
        // the same size); encryption must not make it materially worse: within 2x of plain Q8_0
        // and under the 1e-3-style bound scaled to 8-bit weights (5e-2), argmax >= 95%.
        XCTAssertLessThanOrEqual(e.worst, max(2 * p.worst, 1e-3))
        XCTAssertLessThanOrEqual(e.worst, 5e-2)
        XCTAssertGreaterThanOrEqual(Double(e.top1), 0.95 * Double(e.positions))
    }

    /// The encrypted file is ordinary and carries no tokenizer (it would reveal P); type checks.
    func testEncryptedFileFormat() throws {
        let f = try GGUFFile(path: TestModels.smolLM2)
        let w = try ModelEncryptor.encryptLlama(gguf: f, key: Self.key(f), type: .f16, kernels: Kernels.selected())
        XCTAssertTrue(w.metadata.allSatisfy { !$0.0.hasPrefix("tokenizer.") })
        XCTAssertEqual(w.tensors.first { $0.name == "blk.0.attn_q.weight" }?.type, 1) // GGUF F16
        XCTAssertEqual(w.tensors.first { $0.name == "blk.0.attn_norm.weight" }?.type, 0)
        assertThrowsEngineError(isInvalidArgument) {
            _ = try ModelEncryptor.encryptLlama(gguf: f, key: Self.key(f), type: .q4_0, kernels: Kernels.selected())
        }
    }

    /// Split encryption: the server file has no vocabulary tensors, sees only rotated vectors, and
    /// the client's greedy text equals plain f32 generation.
    func testSplitEncryption() throws {
        let f = try GGUFFile(path: TestModels.smolLM2)
        let key = try Self.key(f)
        let k = try Kernels.selected()
        let sp = NSTemporaryDirectory() + "engine-split-server-\(getpid()).gguf"
        let cp = NSTemporaryDirectory() + "engine-split-client-\(getpid()).gguf"
        defer {
            unlink(sp)
            unlink(cp)
        }
        try ModelEncryptor.encryptLlama(gguf: f, key: key, split: true, kernels: k).write(to: sp)
        try ModelEncryptor.clientHalf(gguf: f, key: key, kernels: k).write(to: cp)
        let sf = try GGUFFile(path: sp)
        XCTAssertNil(sf.tensors["token_embd.weight"])
        XCTAssertNil(sf.tensors["output.weight"])
        XCTAssertNil(sf.metadata["tokenizer.ggml.tokens"])
        let server = try LlamaModel(gguf: sf, format: .f32, kernels: k)
        XCTAssertThrowsError(try server.forward([1, 2], cache: server.makeCache(capacity: 8)))
        XCTAssertThrowsError(
            try server.forwardHidden(
                [Float](repeating: .nan, count: server.config.dim), cache: server.makeCache(capacity: 8)))
        let session = try SplitEncryptedSession(client: GGUFFile(path: cp), server: server, kernels: k)
        let plain = try LlamaModel(gguf: f, format: .f32, kernels: k)
        let (_, prompts) = try SmolLM2Tests.loadFixture()
        var same = 0
        for pr in prompts.prefix(3) {
            let p = GenerationParameters(maxTokens: 32, stopTokens: [])
            let text = try session.tokenizer.decode(pr.ids)
            if try session.generate(prompt: text, parameters: p)
                == TextGenerator(model: plain, tokenizer: session.tokenizer).generate(prompt: text, parameters: p)
            {
                same += 1
            }
        }
        print(
            """
            Split encryption: \(same)/3 identical 32-token greedy continuations; client work \
            \(session.clientSeconds) s, \(session.bytesSent) bytes sent, \(session.bytesReceived) received
            """
        )
        XCTAssertEqual(same, 3)
        // Counters stay exact when several threads step their own sequences through one session
        // (a data race before they were locked; `swift test --sanitize=thread` reports it).
        let (sent0, received0) = (session.bytesSent, session.bytesReceived)
        let (threads, steps) = (4, 12)
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            guard let cache = try? server.makeCache(capacity: steps) else { return }
            for i in 0..<steps { _ = try? session.step([1 + t + i], cache: cache) }
        }
        let d = server.config.dim
        XCTAssertEqual(session.bytesSent - sent0, threads * steps * d * 4)
        XCTAssertEqual(session.bytesReceived - received0, threads * steps * d * 4)
        XCTAssertThrowsError(
            try SplitEncryptedSession(client: f, server: server, kernels: k), "a plain GGUF is not a client half")
    }
}
