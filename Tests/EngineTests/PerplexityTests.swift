import Foundation
import XCTest
import Engine

/// Perplexity and the KV cache types on the real SmolLM2 against the float64 numpy reference of
/// scripts/ref_smollm2.py --perplexity (fixture Fixtures/smollm2_perplexity.json: token ids of
/// the first 256 tokens of Debian's GPL-3 text, chunks of 128).
final class PerplexityTests: XCTestCase {
    struct Fixture: Decodable {
        var context: Int
        var chunks: Int
        var bos: Int?
        var tokens: [Int]
        var chunkNll: [Double]
        var perplexity: Double
    }

    static func fixture() throws -> Fixture {
        let dec = JSONDecoder()
        dec.keyDecodingStrategy = .convertFromSnakeCase
        return try dec.decode(Fixture.self, from: Data(contentsOf: fixtureURL("smollm2_perplexity.json")))
    }

    static func perplexity(
        _ m: LlamaModel, _ f: Fixture, kv: KVCacheConfig = .f32, step: Int = 1
    ) throws -> PerplexityResult {
        try evaluatePerplexity(
            tokens: f.tokens, context: f.context, vocab: m.config.vocab, bos: f.bos, stepTokens: step,
            makeCache: { try m.makeCache(capacity: f.context, config: kv) },
            step: { ids, cache in try m.forward(ids, cache: cache, allLogits: true) })
    }

    static let exactModel: LlamaModel? = try? LlamaModel(
        path: TestModels.smolLM2, format: .native, activations: .exact, kernels: Kernels.selected())

    func exactModel() throws -> LlamaModel {
        try Self.exactModel
            ?? LlamaModel(path: TestModels.smolLM2, format: .native, activations: .exact, kernels: Kernels.selected())
    }

    /// The f32 cache, f32 weights and exact activations (the numerics of the reference), token by
    /// token and in steps of 32: each chunk's mean NLL within 1e-4 of float64. A chunk's mean NLL
    /// moves by at most twice the largest logit error; ours is ~2e-6 of the logit range (~30)
    /// per SmolLM2Tests, so 1e-4 leaves ~50x headroom (measured: 1.2e-6).
    func testF32CachePerplexityMatchesReference() throws {
        let f = try Self.fixture()
        let models = [
            try LlamaModel(path: TestModels.smolLM2, format: .f32, kernels: Kernels.selected()), try exactModel(),
        ]
        for (i, m) in models.enumerated() {
            for step in [1, 32] {
                let r = try Self.perplexity(m, f, step: step)
                XCTAssertEqual(r.tokens, f.chunks * (f.context - 1 - f.context / 2))
                for (a, b) in zip(r.chunkNLL, f.chunkNll) {
                    XCTAssertEqual(a, b, accuracy: 1e-4, "model \(i) step \(step)")
                }
                XCTAssertEqual(r.perplexity, f.perplexity, accuracy: f.perplexity * 1e-4)
            }
        }
    }

    /// Relative quantization step of each type: the largest error of a stored key or value is
    /// half of it times its block's (or channel group's) range. f16: 2^-11 relative; q8_0: 1/127
    /// of the block's max; q4_0: 1/8 of it; KIVI q4: 1/15 of the range; q2: 1/3.
    static let step: [KVCacheType: Float] = [
        .f32: 0, .f16: 1.0 / 2048, .q8_0: 1.0 / 127, .q4_0: 1.0 / 8, .q4: 1.0 / 15, .q2: 1.0 / 3,
    ]

    /// Every cache type on a 128-token real prompt (the fixture's first chunk; KIVI with no f16
    /// window, so 96 tokens are read quantized), against the f32 cache:
    /// - f16 and q8_0: at every position the logits stay within 8 x (relative step) x (logit
    ///   range). Half a step of error per stored value, compounded over 30 layers, measured 2.5x
    ///   (f16: 1.2e-3 of the range) and 7x (q8_0: 0.055; a per-token block shares its scale with
    ///   the head's largest channel) the step here.
    /// - 4- and 2-bit types: such a bound is vacuous (the step is 1/15 to 1/3 of the range), so
    ///   the check is the greedy choice: top-1 agreement with the f32 cache over the 128
    ///   positions of at least 85% (q4), 60% (q4_0, q2); measured on this text 94.5%, 69.5%, 76.6%
    ///   (AVX-512) and 94.5%, 71.1%, 74.2% (AVX2); with int8 key scores q4 93.8%, q2 71.9% (AVX2).
    ///   mikv (2-bit plus Q8_0 copies of a tenth of the positions) at least 75%, h2o at its bytes
    ///   55%: measured 83.6% and 69.5% (AVX2); the bound for mikv sits above what q2 alone reaches.
    /// Processing the prompt at once equals processing it token by token (the cache contents
    /// each row sees are the same by design): within 1e-5 of the range.
    func testCacheTypesStayNearF32AndStepsAgree() throws {
        let f = try Self.fixture()
        let m = try exactModel()
        let V = m.config.vocab
        let ids = Array(f.tokens[0..<f.context])
        let ref = try m.forward(ids, cache: m.makeCache(capacity: f.context), allLogits: true)
        func argmax(_ l: [Float], _ p: Int) -> Int { (0..<V).max { l[p * V + $0] < l[p * V + $1] }! }
        let minTop1: [KVCacheType: Double] = [.q4: 0.85, .q4_0: 0.60, .q2: 0.60, .mikv: 0.75, .h2o: 0.55]
        let configs =
            KVCacheType.allCases.map { KVCacheConfig(type: $0, window: 0) }
            + [KVCacheType.q4, .q2].map { KVCacheConfig(type: $0, window: 0, scores: .int8) }
        for kv in configs {
            let t = kv.type
            let whole = try m.forward(ids, cache: m.makeCache(capacity: f.context, config: kv), allLogits: true)
            let cache = try m.makeCache(capacity: f.context, config: kv)
            var byToken: [Float] = []
            for id in ids { byToken += try m.forward([id], cache: cache) }
            var worst: Float = 0
            var worstStep: Float = 0
            var agree = 0
            for p in 0..<ids.count {
                let row = ref[(p * V)..<((p + 1) * V)]
                let range = row.max()! - row.min()!
                var d: Float = 0
                var ds: Float = 0
                for j in 0..<V {
                    d = max(d, abs(whole[p * V + j] - ref[p * V + j]))
                    ds = max(ds, abs(whole[p * V + j] - byToken[p * V + j]))
                }
                worst = max(worst, d / range)
                worstStep = max(worstStep, ds / range)
                if argmax(whole, p) == argmax(ref, p) { agree += 1 }
            }
            let top1 = Double(agree) / Double(ids.count)
            if let minimum = minTop1[t] {
                XCTAssertGreaterThanOrEqual(top1, minimum, "\(t) \(kv.scores): top-1 agreement with the f32 cache")
            } else {
                XCTAssertLessThanOrEqual(worst, 8 * Self.step[t]!, "\(t): logits vs the f32 cache")
            }
            XCTAssertLessThanOrEqual(worstStep, 1e-5, "\(t) \(kv.scores): whole prompt vs token by token")
            print(
                "kv \(t) \(kv.scores): max |logit - f32 cache| / range \(worst), top-1 \(top1), "
                    + "prompt vs tokens \(worstStep)"
            )
        }
    }

    /// The encrypted model (same key as EncryptionTests, f32 weights) with each cache type: with
    /// the f32 cache it equals the plain model within 1%; per-channel and per-block quantization
    /// is not rotation-invariant, so with a quantized cache it is not bit-identical to the plain
    /// model with the same cache, only close: perplexity within 3% (measured: q8_0 -1.2%, q4
    /// -1.3%, q2 -2.2%; the plain q4 cache itself moves perplexity by 1.4% on this text). mikv
    /// within 10% (measured -6.0%): which positions keep a Q8_0 copy is a discrete choice driven
    /// by 2-bit scores, so the rotation's different quantization noise also changes the choice;
    /// 256 tokens is a small sample. Both mikv figures stay far below q2's (about 41).
    func testEncryptedModelWithQuantizedCaches() throws {
        let f = try Self.fixture()
        let plain = try exactModel()
        let gguf = try GGUFFile(path: TestModels.smolLM2)
        let enc = try EncryptionTests.encrypted(gguf, type: .f32, format: .native)
        let P = try EncryptionTests.key(gguf).vocabularyPermutation
        let V = plain.config.vocab
        for t in [KVCacheType.f32, .q8_0, .q4, .q2, .mikv] {
            let kv = KVCacheConfig(type: t, window: 32)
            let a = try Self.perplexity(plain, f, kv: kv)
            let b = try evaluatePerplexity(
                tokens: f.tokens, context: f.context, vocab: V, bos: f.bos, stepTokens: 16,
                makeCache: { try enc.makeCache(capacity: f.context, config: kv) },
                step: { ids, cache in
                    let l = try enc.forward(ids.map { P[$0] }, cache: cache, allLogits: true)
                    return (0..<ids.count).flatMap { r in (0..<V).map { l[r * V + P[$0]] } }
                })
            print("encrypted kv \(t): perplexity \(b.perplexity) vs plain \(a.perplexity)")
            let bound = t == .f32 ? 0.01 : t == .mikv ? 0.10 : 0.03
            XCTAssertEqual(b.perplexity, a.perplexity, accuracy: a.perplexity * bound, "\(t)")
        }
    }
}
