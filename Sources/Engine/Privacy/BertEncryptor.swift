import Foundation

/// How the residual stream of a post-LayerNorm encoder (BERT) is hidden. LayerNorm carries
/// gamma * n(z) + beta on the stream itself, so a plain rotation cannot be folded away
/// (docs/encryption.md, "Encoder"):
public enum BertEncryption: String, Sendable, CaseIterable {
    /// A hidden-dimension permutation Pi (LayerNorm commutes once gamma and beta are permuted):
    /// zero overhead and a standard BERT file any runtime loads, but every token's multiset of
    /// values is unchanged (measured in docs/threat-model.md).
    case permutation
    /// A rotation Q fixing the all-ones direction (mean-centering commutes); each LayerNorm runs
    /// without its affine and is followed by the d x d map Q^T diag(gamma) Q and bias Q^T beta
    /// (stored as `LayerNorm.transform` / `LayerNorm.bias`): two extra d x d products per layer.
    case rotation
}

extension ModelEncryptor {
    /// Encrypts a BERT model directory (config.json + model.safetensors) for `key` and writes
    /// `output/` with config.json (plus "engine_encryption") and model.safetensors (F32). No
    /// vocabulary is written: it would reveal P; the client tokenizes.
    ///
    /// With x' = T x the encrypted stream (T = Pi, or Q^T for `.rotation`), in Engine's y = W x
    /// convention: readers W' = W T^-1 (q, k, v, intermediate), writers W' = T W, b' = T b
    /// (attention output, FFN output), embedding rows e' = T e, vocabulary rows permuted by P.
    /// Per head: q' = M^T q and k' = M^-1 k with M = R diag(s) (q.k kept; no RoPE in BERT),
    /// v' = A^T v and the output projection's head columns times A; GELU hidden units permuted.
    public static func encryptBert(
        directory: String, key: EncryptionKey, mode: BertEncryption,
        output: String, kernels: Kernels
    ) throws {
        let cfgPath = directory + "/config.json"
        guard let cfgData = FileManager.default.contents(atPath: cfgPath) else {
            throw EngineError.io("cannot read \(cfgPath)")
        }
        let c: BertConfig
        do { c = try JSONDecoder().decode(BertConfig.self, from: cfgData) } catch {
            throw EngineError.invalidFile("\(cfgPath): \(error)")
        }
        try require(c.engineEncryption == nil, "\(directory) is already encrypted")
        guard try EncryptionKey.modelID(bert: directory) == key.modelID, key.shape == ModelShape(c) else {
            throw EngineError.invalidArgument("the key belongs to another model (wrong key)")
        }
        let st = try SafeTensorsFile(path: directory + "/model.safetensors")
        let prefix = st.tensors["embeddings.word_embeddings.weight"] != nil ? "" : "bert."
        let d = c.hiddenSize
        let h = c.intermediateSize
        let nh = c.numAttentionHeads
        let hd = d / nh
        func t(_ n: String, _ shape: [Int]) throws -> [Float] { try st.floats(prefix + n, shape: shape) }

        let pi = key.hiddenPermutation
        let q: [Float] = mode == .rotation ? try key.onesFixingRotation().map { Float($0) } : []
        var qt = [Float](repeating: 0, count: mode == .rotation ? d * d : 0)
        if mode == .rotation { for i in 0..<d { for j in 0..<d { qt[j * d + i] = q[i * d + j] } } }
        /// W' = W T^-1 for W rows x d (also embedding tables: each row is a stream vector).
        func reader(_ w: [Float], _ rows: Int) throws -> [Float] {
            if mode == .rotation { return try LinearAlgebra.matmul(w, q, m: rows, k: d, n: d) }
            var o = w
            for r in 0..<rows { for j in 0..<d { o[r * d + pi[j]] = w[r * d + j] } }
            return o
        }
        /// W' = T W for W d x cols (a vector when cols == 1).
        func writer(_ w: [Float], _ cols: Int) throws -> [Float] {
            if mode == .rotation { return try LinearAlgebra.matmul(qt, w, m: d, k: d, n: cols) }
            var o = w
            for j in 0..<d { for cc in 0..<cols { o[pi[j] * cols + cc] = w[j * cols + cc] } }
            return o
        }
        /// Left-multiplies rows [r0, r0+n) of a row-major matrix (n x cols block) by B (n x n).
        func leftBlock(_ w: inout [Float], r0: Int, n: Int, cols: Int, _ b: [Float]) throws {
            let block = Array(w[(r0 * cols)..<((r0 + n) * cols)])
            w.replaceSubrange(
                (r0 * cols)..<((r0 + n) * cols), with: try LinearAlgebra.matmul(b, block, m: n, k: n, n: cols))
        }

        var out = SafeTensorsWriter()
        out.metadata = ["format": "pt", "engine_encryption": mode.rawValue]
        // Embeddings: vocabulary rows permuted by P, every row moved to the encrypted stream.
        let P = key.vocabularyPermutation
        let word = try reader(t("embeddings.word_embeddings.weight", [c.vocabSize, d]), c.vocabSize)
        var wordP = [Float](repeating: 0, count: word.count)
        for tok in 0..<c.vocabSize { for j in 0..<d { wordP[P[tok] * d + j] = word[tok * d + j] } }
        try out.add("embeddings.word_embeddings.weight", shape: [c.vocabSize, d], wordP)
        try out.add(
            "embeddings.position_embeddings.weight", shape: [c.maxPositionEmbeddings, d],
            reader(t("embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, d]), c.maxPositionEmbeddings))
        try out.add(
            "embeddings.token_type_embeddings.weight", shape: [c.typeVocabSize, d],
            reader(t("embeddings.token_type_embeddings.weight", [c.typeVocabSize, d]), c.typeVocabSize))
        func norm(_ n: String) throws {
            let g = try t(n + ".weight", [d])
            let b = try t(n + ".bias", [d])
            if mode == .permutation {
                try out.add(n + ".weight", shape: [d], writer(g, 1))
                try out.add(n + ".bias", shape: [d], writer(b, 1))
            } else {
                // G = Q^T diag(gamma) Q (symmetric), bias Q^T beta
                var gq = q
                for k in 0..<d { for j in 0..<d { gq[k * d + j] *= g[k] } }
                try out.add(n + ".transform", shape: [d, d], LinearAlgebra.matmul(qt, gq, m: d, k: d, n: d))
                try out.add(n + ".bias", shape: [d], writer(b, 1))
            }
        }
        try norm("embeddings.LayerNorm")

        for l in 0..<c.numHiddenLayers {
            let p = "encoder.layer.\(l)."
            var wq = try t(p + "attention.self.query.weight", [d, d])
            var bq = try t(p + "attention.self.query.bias", [d])
            var wk = try t(p + "attention.self.key.weight", [d, d])
            var bk = try t(p + "attention.self.key.bias", [d])
            var wv = try t(p + "attention.self.value.weight", [d, d])
            var bv = try t(p + "attention.self.value.bias", [d])
            var wo = try t(p + "attention.output.dense.weight", [d, d])
            for head in 0..<nh {
                let (r, s) = try key.queryKeyTransform(layer: l, head: head)
                // M^T = diag(s) R^T, M^-1 = diag(1/s) R^T
                var mt = [Float](repeating: 0, count: hd * hd)
                var minv = mt
                var at = mt
                for i in 0..<hd {
                    for j in 0..<hd {
                        mt[i * hd + j] = Float(s[i] * r[j * hd + i])
                        minv[i * hd + j] = Float(r[j * hd + i] / s[i])
                    }
                }
                let a = try key.valueRotation(layer: l, head: head).map { Float($0) }
                for i in 0..<hd { for j in 0..<hd { at[i * hd + j] = a[j * hd + i] } }
                try leftBlock(&wq, r0: head * hd, n: hd, cols: d, mt)
                try leftBlock(&bq, r0: head * hd, n: hd, cols: 1, mt)
                try leftBlock(&wk, r0: head * hd, n: hd, cols: d, minv)
                try leftBlock(&bk, r0: head * hd, n: hd, cols: 1, minv)
                try leftBlock(&wv, r0: head * hd, n: hd, cols: d, at)
                try leftBlock(&bv, r0: head * hd, n: hd, cols: 1, at)
                // W_o[:, head] A
                for row in 0..<d {
                    let old = Array(wo[(row * d + head * hd)..<(row * d + (head + 1) * hd)])
                    for j in 0..<hd {
                        var acc: Float = 0
                        for tt in 0..<hd { acc += old[tt] * a[tt * hd + j] }
                        wo[row * d + head * hd + j] = acc
                    }
                }
            }
            try out.add(p + "attention.self.query.weight", shape: [d, d], reader(wq, d))
            try out.add(p + "attention.self.query.bias", shape: [d], bq)
            try out.add(p + "attention.self.key.weight", shape: [d, d], reader(wk, d))
            try out.add(p + "attention.self.key.bias", shape: [d], bk)
            try out.add(p + "attention.self.value.weight", shape: [d, d], reader(wv, d))
            try out.add(p + "attention.self.value.bias", shape: [d], bv)
            try out.add(p + "attention.output.dense.weight", shape: [d, d], writer(wo, d))
            try out.add(
                p + "attention.output.dense.bias", shape: [d], writer(t(p + "attention.output.dense.bias", [d]), 1))
            try norm(p + "attention.output.LayerNorm")
            // GELU MLP: hidden units permuted by sigma
            let sigma = key.mlpPermutation(layer: l)
            let wi = try t(p + "intermediate.dense.weight", [h, d])
            let bi = try t(p + "intermediate.dense.bias", [h])
            let wd = try t(p + "output.dense.weight", [d, h])
            var wi2 = wi
            var bi2 = bi
            var wd2 = wd
            for u in 0..<h {
                let dst = sigma[u]
                for j in 0..<d {
                    wi2[dst * d + j] = wi[u * d + j]
                    wd2[j * h + dst] = wd[j * h + u]
                }
                bi2[dst] = bi[u]
            }
            try out.add(p + "intermediate.dense.weight", shape: [h, d], reader(wi2, h))
            try out.add(p + "intermediate.dense.bias", shape: [h], bi2)
            try out.add(p + "output.dense.weight", shape: [d, h], writer(wd2, h))
            try out.add(p + "output.dense.bias", shape: [d], writer(t(p + "output.dense.bias", [d]), 1))
            try norm(p + "output.LayerNorm")
        }

        guard var cfg = try JSONSerialization.jsonObject(with: cfgData) as? [String: Any] else {
            throw EngineError.invalidFile("\(cfgPath): not a JSON object")
        }
        cfg["engine_encryption"] = mode.rawValue
        cfg["engine_key_check"] = key.checkValue
        // written into a temporary sibling directory, renamed into place when complete
        var path = output
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        let tmp = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        var done = false
        defer { if !done { try? FileManager.default.removeItem(atPath: tmp) } }
        try out.write(to: tmp + "/model.safetensors")
        let w = try AtomicFileWriter(path: tmp + "/config.json")
        try w.write(Array(try JSONSerialization.data(withJSONObject: cfg, options: [.prettyPrinted, .sortedKeys])))
        try w.commit()
        try replaceModelDirectory(path, with: tmp)
        done = true
    }

    /// Moves `tmp` to `path`. An existing `path` is replaced only if it holds nothing but an
    /// encrypted model's two files; anything else is refused untouched.
    static func replaceModelDirectory(_ path: String, with tmp: String) throws {
        if FileManager.default.fileExists(atPath: path) {
            let names = Set((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? ["?"])
            guard names.isSubset(of: ["config.json", "model.safetensors"]) else {
                throw EngineError.invalidArgument(
                    "\(path) exists and holds other files: refusing to replace it (remove it or choose another output)")
            }
        }
        try swapDirectoryIntoPlace(tmp, at: path)
    }
}

/// What the client of an encrypted encoder needs from its key, without the model: the vocabulary
/// permutation for ids going out and the inverse hidden transform for vectors coming back. A
/// remote client (engine serve) builds it from the key and the mode the server reports.
public struct EncoderCipher: Sendable {
    /// How the hidden dimension was encrypted.
    public let mode: BertEncryption
    let p: [Int], pi: [Int], q: [Float]

    /// The cipher of `key` for an encoder encrypted in `mode`.
    public init(key: EncryptionKey, mode: BertEncryption) throws {
        self.mode = mode
        p = key.vocabularyPermutation
        pi = key.hiddenPermutation
        q = mode == .rotation ? try key.onesFixingRotation().map { Float($0) } : []
    }

    /// What the server sees for a plain id sequence.
    public func encryptIDs(_ ids: [Int]) -> [Int] { ids.map { p[$0] } }

    /// A plain vector from an encrypted one (dim values).
    public func decrypt(_ e: ArraySlice<Float>) -> [Float] {
        let d = pi.count
        let b = e.startIndex
        if mode == .permutation { return (0..<d).map { e[b + pi[$0]] } }
        return (0..<d).map { i in
            var acc: Float = 0
            for j in 0..<d { acc += q[i * d + j] * e[b + j] }
            return acc
        }
    }
}

/// The client side of equivariant encryption for an encoder: tokenizes with the plain
/// tokenizer, sends permuted ids, and maps the server's (encrypted) sentence vectors back:
/// e = Pi^-1 e' or e = Q e'. Mean pooling and L2 normalisation commute with both, so the server
/// pools and normalises; cosine similarities are unchanged.
public final class EncryptedEncoderSession: @unchecked Sendable {
    /// The plain tokenizer (client side).
    public let tokenizer: WordPieceTokenizer
    /// The encrypted encoder the server runs.
    public let server: BertModel
    /// The key's transforms.
    public let cipher: EncoderCipher
    /// How the hidden dimension was encrypted.
    public var mode: BertEncryption { cipher.mode }

    /// A session; throws if the key does not fit the server model.
    public init(tokenizer: WordPieceTokenizer, server: BertModel, key: EncryptionKey) throws {
        try key.verify(modelCheck: server.config.engineKeyCheck, model: "the server model")
        guard let m = server.config.engineEncryption.flatMap(BertEncryption.init(rawValue:)) else {
            throw EngineError.invalidArgument(
                "the server model is not an encrypted BERT (config.json has no engine_encryption)")
        }
        try require(
            key.shape == ModelShape(server.config), "the key's model shape differs from the server model's (wrong key)")
        self.tokenizer = tokenizer
        self.server = server
        cipher = try EncoderCipher(key: key, mode: m)
    }

    /// What the server sees for a plain id sequence.
    public func encryptIDs(_ ids: [Int]) -> [Int] { cipher.encryptIDs(ids) }

    /// A plain vector from an encrypted one (dim values).
    public func decrypt(_ e: ArraySlice<Float>) -> [Float] { cipher.decrypt(e) }

    /// Sentence embeddings (n x dim) of `texts`, computed by the server on permuted ids.
    public func embed(_ texts: [String], batch: Int = 32) throws -> [Float] {
        try require(batch > 0, "batch must be positive, got \(batch)")
        let d = server.config.hiddenSize
        var out: [Float] = []
        for b0 in stride(from: 0, to: texts.count, by: batch) {
            let ids = texts[b0..<min(texts.count, b0 + batch)].map { encryptIDs(tokenizer.encode($0)) }
            let e = try server.embed(ids: ids)
            for i in 0..<ids.count { out += decrypt(e[(i * d)..<((i + 1) * d)]) }
        }
        return out
    }
}
