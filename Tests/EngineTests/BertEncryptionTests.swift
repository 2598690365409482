import XCTest
import Engine

/// Encrypted MiniLM (both post-LayerNorm options) run by the ordinary BertModel on permuted ids:
/// decrypted sentence vectors equal the plain ones; the server's token states do not.
final class BertEncryptionTests: XCTestCase {
    func testEncryptedMiniLM() throws {
        let k = try Kernels.selected()
        let plain = try BertModel(directory: TestModels.miniLM, kernels: k)
        let key = try EncryptionKey(
            secret: [UInt8](repeating: 7, count: 32), shape: ModelShape(plain.config),
            modelID: EncryptionKey.modelID(bert: TestModels.miniLM))
        let texts = Array(try miniLMReference().prefix(100).map(\.text))
        let ref = try plain.embed(texts)
        let d = plain.config.hiddenSize
        for mode in BertEncryption.allCases {
            let dir = NSTemporaryDirectory() + "engine-enc-minilm-\(getpid())-\(mode)"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try ModelEncryptor.encryptBert(directory: TestModels.miniLM, key: key, mode: mode, output: dir, kernels: k)
            XCTAssertFalse(
                FileManager.default.fileExists(atPath: dir + "/vocab.txt"), "no vocabulary: it would reveal P")
            let server = try BertModel(directory: dir, kernels: k)
            XCTAssertThrowsError(try server.embed("plain text cannot be sent"))
            let session = try EncryptedEncoderSession(tokenizer: plain.tokenizer, server: server, key: key)
            let e = try session.embed(texts)
            var worst = 1.0
            for i in 0..<texts.count {
                worst = min(worst, cosine(e[(i * d)..<((i + 1) * d)], ref[(i * d)..<((i + 1) * d)]))
            }
            // The bound; both options are exact up to f32 rounding (~1 - 1e-7 measured).
            XCTAssertGreaterThanOrEqual(worst, 0.9999, "\(mode)")
            // The server's token states: no row equal to the plain one; correlation reported.
            let ids = try plain.tokenizer.encode(texts[0])
            let xs = try plain.tokenEmbeddings(ids: ids)
            let ys = try server.tokenEmbeddings(ids: session.encryptIDs(ids))
            var minRowDiff = Double.infinity
            for t in 0..<ids.count {
                var diff = 0.0
                var norm = 0.0
                for j in 0..<d {
                    diff = max(diff, Double(abs(xs[t * d + j] - ys[t * d + j])))
                    norm += Double(xs[t * d + j] * xs[t * d + j])
                }
                minRowDiff = min(minRowDiff, diff / norm.squareRoot())
            }
            let corr = cosine(xs[...], ys[...])
            // Sorted values of a token state: equal under a permutation (option a's leak), not under Q.
            let sortedGap = zip(xs[0..<d].sorted(), ys[0..<d].sorted()).map { abs($0 - $1) }.max()!
            print(
                """
                Encrypted MiniLM (\(mode)): worst cosine to plain \(worst) over \(texts.count) sentences; \
                server token states: cos(plain, server) \(corr), min row max|diff|/norm \(minRowDiff), max gap \
                between sorted values of a token state \(sortedGap)
                """
            )
            XCTAssertGreaterThan(minRowDiff, 0.01)
            XCTAssertLessThan(abs(corr), 0.3)
            if mode == .permutation {
                XCTAssertLessThan(sortedGap, 1e-3)
            } else {
                XCTAssertGreaterThan(sortedGap, 1e-2)
            }
            // Another key for the same model: refused by the model's key check value before any output
            // (without the check it would give unrelated vectors); the plain model with a key likewise.
            let other = try EncryptionKey(
                secret: [UInt8](repeating: 8, count: 32), shape: key.shape, modelID: key.modelID)
            assertThrowsEngineError(isInvalidArgument, "wrong key") {
                _ = try EncryptedEncoderSession(tokenizer: plain.tokenizer, server: server, key: other)
            }
            assertThrowsEngineError(isInvalidArgument, "plain model with a key") {
                _ = try EncryptedEncoderSession(tokenizer: plain.tokenizer, server: plain, key: key)
            }
            // Without a key, the encrypted directory refuses text (it has no usable tokenizer).
            XCTAssertThrowsError(try server.embed(["a sentence"]))
        }
        // A key for another model is refused; an encrypted directory cannot be encrypted again.
        let bad = try EncryptionKey(secret: key.secret, shape: key.shape, modelID: [UInt8](repeating: 0, count: 32))
        XCTAssertThrowsError(
            try ModelEncryptor.encryptBert(
                directory: TestModels.miniLM, key: bad, mode: .permutation,
                output: NSTemporaryDirectory() + "engine-never", kernels: k))
        XCTAssertThrowsError(try EncryptedEncoderSession(tokenizer: plain.tokenizer, server: plain, key: key))
    }
}
