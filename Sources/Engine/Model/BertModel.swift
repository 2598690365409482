import CKernels
import Foundation

/// Hugging Face BERT `config.json` (the fields the encoder needs).
public struct BertConfig: Codable, Sendable, Equatable {
    /// Width of the hidden states.
    public var hiddenSize: Int
    /// Transformer layers.
    public var numHiddenLayers: Int
    /// Attention heads per layer.
    public var numAttentionHeads: Int
    /// Width of the MLP hidden layer.
    public var intermediateSize: Int
    /// Most positions (position-embedding rows).
    public var maxPositionEmbeddings: Int
    /// Vocabulary size (word-embedding rows).
    public var vocabSize: Int
    /// Token-type embedding rows.
    public var typeVocabSize: Int
    /// LayerNorm epsilon.
    public var layerNormEps: Double
    /// MLP activation (`gelu` is supported).
    public var hiddenAct: String
    /// Hugging Face model type (`bert`).
    public var modelType: String
    /// Set by `ModelEncryptor.encryptBert`: "permutation" or "rotation" (absent for plain models).
    public var engineEncryption: String?
    /// Key check value of an encrypted model (`EncryptionKey.checkValue`).
    public var engineKeyCheck: String?

    enum CodingKeys: String, CodingKey {
        case hiddenSize = "hidden_size"
        case numHiddenLayers = "num_hidden_layers"
        case numAttentionHeads = "num_attention_heads"
        case intermediateSize = "intermediate_size"
        case maxPositionEmbeddings = "max_position_embeddings"
        case vocabSize = "vocab_size"
        case typeVocabSize = "type_vocab_size"
        case layerNormEps = "layer_norm_eps"
        case hiddenAct = "hidden_act"
        case modelType = "model_type"
        case engineEncryption = "engine_encryption"
        case engineKeyCheck = "engine_key_check"
    }
}

/// A BERT encoder (post-LayerNorm, GELU) with sentence-transformers mean pooling + L2 norm,
/// loaded from a Hugging Face directory (config.json, model.safetensors, vocab.txt).
public final class BertModel: @unchecked Sendable {
    /// The hyper-parameters read from config.json.
    public let config: BertConfig
    /// The model's WordPiece tokenizer (vocab.txt); nil for an encrypted model directory, whose
    /// vocabulary would reveal the key's permutation (its client tokenizes with the plain model's).
    public let textTokenizer: WordPieceTokenizer?
    /// The directory's WordPiece tokenizer (an encrypted model directory has none: use the client's).
    public var tokenizer: WordPieceTokenizer {
        get throws {
            guard let textTokenizer else {
                throw EngineError.unsupported(
                    """
                    this is an encrypted model: embed text through its key's client (engine embed --key), or \
                    pass token ids
                    """
                )
            }
            return textTokenizer
        }
    }
    /// A LayerNorm: y = gamma * n(x) + beta, or, in a rotation-encrypted model
    /// (`LayerNorm.transform` present), y = n(x) G^T + bias with a d x d matrix G.
    struct Norm {
        var gamma: [Float], beta: [Float]
        var transform: QuantizedMatrix? = nil, bias: [Float] = []
    }
    /// Biases and LayerNorm parameters of one layer (the weight matrices live in `mats`).
    struct Layer {
        var bq: [Float], bk: [Float], bv: [Float], bo: [Float], ln1: Norm
        var bi: [Float], bd: [Float], ln2: Norm
    }
    let wordEmb: [Float], posEmb: [Float], typeEmb: [Float], embLN: Norm
    let layers: [Layer]
    /// The same linear weights as row matrices for Engine's kernels (q, k, v, o, in, out per layer).
    let mats: [[QuantizedMatrix]]
    /// The kernels (and thread count) this model runs with.
    public let kernels: Kernels

    /// Loads a model directory (model.safetensors, config.json, vocab.txt or tokenizer.json).
    public init(directory: String, maxLength: Int = 256, kernels: Kernels? = nil) throws {
        let cfgPath = directory + "/config.json"
        guard let data = FileManager.default.contents(atPath: cfgPath) else {
            throw EngineError.io("cannot read \(cfgPath)")
        }
        let c: BertConfig
        do { c = try JSONDecoder().decode(BertConfig.self, from: data) } catch {
            throw EngineError.invalidFile("\(cfgPath): \(error)")
        }
        guard c.modelType == "bert" else {
            throw EngineError.unsupported("\(cfgPath): model_type '\(c.modelType)'; supported: bert")
        }
        guard c.hiddenAct == "gelu" else {
            throw EngineError.unsupported("\(cfgPath): hidden_act '\(c.hiddenAct)'; supported: gelu")
        }
        guard (1...Limits.heads).contains(c.numAttentionHeads), (1...Limits.dimension).contains(c.hiddenSize),
            c.hiddenSize % c.numAttentionHeads == 0, (1...Limits.layers).contains(c.numHiddenLayers),
            (1...(8 * Limits.dimension)).contains(c.intermediateSize), (1...Limits.vocabulary).contains(c.vocabSize),
            (1...Limits.context).contains(c.maxPositionEmbeddings), (1...1024).contains(c.typeVocabSize)
        else {
            throw EngineError.invalidFile(
                """
                \(cfgPath): inconsistent shape (hidden_size \(c.hiddenSize), heads \(c.numAttentionHeads), layers \
                \(c.numHiddenLayers), intermediate \(c.intermediateSize), vocabulary \(c.vocabSize), positions \
                \(c.maxPositionEmbeddings), token types \(c.typeVocabSize))
                """)
        }
        guard c.layerNormEps.isFinite, c.layerNormEps > 0, c.layerNormEps < 1 else {
            throw EngineError.invalidFile("\(cfgPath): layer_norm_eps \(c.layerNormEps) outside (0, 1)")
        }
        config = c
        if c.engineEncryption != nil {
            // an encrypted model is only meaningful through its key's client (permuted ids)
            textTokenizer = nil
        } else {
            let tok = try WordPieceTokenizer(directory: directory, maxLength: min(maxLength, c.maxPositionEmbeddings))
            guard tok.tokens.count == c.vocabSize else {
                throw EngineError.invalidFile(
                    "\(directory)/vocab.txt has \(tok.tokens.count) tokens, config says \(c.vocabSize)")
            }
            textTokenizer = tok
        }
        let st = try SafeTensorsFile(path: directory + "/model.safetensors")
        let prefix = st.tensors["embeddings.word_embeddings.weight"] != nil ? "" : "bert."
        let d = c.hiddenSize
        let h = c.intermediateSize
        func t(_ n: String, _ shape: [Int]) throws -> [Float] {
            let v = try st.floats(prefix + n, shape: shape)
            try requireFinite(v, "\(directory)/model.safetensors: \(prefix + n)")
            return v
        }
        // the file must hold exactly the layers config.json declares
        guard st.tensors[prefix + "encoder.layer.\(c.numHiddenLayers).attention.self.query.weight"] == nil else {
            throw EngineError.invalidFile(
                "\(directory): model.safetensors has more than the \(c.numHiddenLayers) layers config.json declares")
        }
        wordEmb = try t("embeddings.word_embeddings.weight", [c.vocabSize, d])
        posEmb = try t("embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, d])
        typeEmb = try t("embeddings.token_type_embeddings.weight", [c.typeVocabSize, d])
        func norm(_ n: String) throws -> Norm {
            if st.tensors[prefix + n + ".transform"] != nil {
                return Norm(
                    gamma: [Float](repeating: 1, count: d), beta: [Float](repeating: 0, count: d),
                    transform: try QuantizedMatrix(f32: t(n + ".transform", [d, d]), rows: d, cols: d),
                    bias: try t(n + ".bias", [d]))
            }
            return Norm(gamma: try t(n + ".weight", [d]), beta: try t(n + ".bias", [d]))
        }
        embLN = try norm("embeddings.LayerNorm")
        var ls: [Layer] = []
        var ms: [[QuantizedMatrix]] = []
        for i in 0..<c.numHiddenLayers {
            let p = "encoder.layer.\(i)."
            func m(_ n: String, _ rows: Int, _ cols: Int) throws -> QuantizedMatrix {
                try QuantizedMatrix(f32: t(p + n + ".weight", [rows, cols]), rows: rows, cols: cols)
            }
            ms.append([
                try m("attention.self.query", d, d), try m("attention.self.key", d, d),
                try m("attention.self.value", d, d),
                try m("attention.output.dense", d, d), try m("intermediate.dense", h, d), try m("output.dense", d, h),
            ])
            ls.append(
                Layer(
                    bq: try t(p + "attention.self.query.bias", [d]), bk: try t(p + "attention.self.key.bias", [d]),
                    bv: try t(p + "attention.self.value.bias", [d]), bo: try t(p + "attention.output.dense.bias", [d]),
                    ln1: try norm(p + "attention.output.LayerNorm"),
                    bi: try t(p + "intermediate.dense.bias", [h]), bd: try t(p + "output.dense.bias", [d]),
                    ln2: try norm(p + "output.LayerNorm")))
        }
        layers = ls
        mats = ms
        self.kernels = try kernels ?? Kernels.selected()
    }

    /// Final hidden states (T x hidden) of a token sequence ([CLS] ... [SEP] as the tokenizer makes).
    public func tokenEmbeddings(ids: [Int]) throws -> [Float] { try tokenEmbeddings(ids: ids, kernels: kernels) }

    func tokenEmbeddings(ids: [Int], kernels k: Kernels) throws -> [Float] { try forward([ids], kernels: k) }

    /// Final hidden states of several sequences, concatenated (sum of lengths x hidden). The
    /// linear layers run once over all tokens (per-token products, so batching is exact);
    /// attention runs per sequence. On several threads a batch of at least 64 tokens per thread
    /// is cut into groups of whole sequences, each run on its own thread.
    func forward(_ seqs: [[Int]], kernels k: Kernels) throws -> [Float] {
        let c = config
        let lengths = seqs.map(\.count)
        let T = lengths.reduce(0, +)
        try require(!seqs.isEmpty && lengths.allSatisfy { $0 > 0 }, "no tokens")
        for n in lengths {
            try require(
                n <= c.maxPositionEmbeddings, "\(n) tokens exceed the \(c.maxPositionEmbeddings) positions of the model"
            )
        }
        for s in seqs {
            for i in s where i < 0 || i >= c.vocabSize {
                throw EngineError.invalidArgument("token id \(i) is out of range 0..<\(c.vocabSize)")
            }
        }
        let groups = k.threads > 1 ? sequenceGroups(lengths, parts: k.threads) : []
        if groups.count > 1, let scope = BLASSingleThreadScope.enter() {
            defer { scope.leave() }
            // Each group of whole sequences runs the full forward on one thread (OpenBLAS on one
            // thread, see BLASSingleThreadScope): rows are independent in every product and
            // attention stays within a sequence, so the groups never wait for one another.
            var one = k
            one.threads = 1
            var outs = [Result<[Float], Error>](repeating: .success([]), count: groups.count)
            outs.withUnsafeMutableBufferPointer { o in
                Threads.parallelFor(groups.count, threads: groups.count) { g in
                    o[g] = Result { try self.forwardSerial(Array(seqs[groups[g]]), kernels: one) }
                }
            }
            var x: [Float] = []
            x.reserveCapacity(T * c.hiddenSize)
            for r in outs { x += try r.get() }
            return x
        }
        return try forwardSerial(seqs, kernels: k)
    }

    /// Contiguous groups of whole sequences, at most `parts`, balanced by tokens, each of at
    /// least 64 tokens (below that a second thread is better spent inside the products); one
    /// group (everything) when no split qualifies.
    func sequenceGroups(_ lengths: [Int], parts: Int) -> [Range<Int>] {
        let T = lengths.reduce(0, +)
        let p = min(parts, lengths.count, T / 64)
        guard p > 1 else { return [0..<lengths.count] }
        var groups: [Range<Int>] = []
        var start = 0
        var seen = 0
        for (i, n) in lengths.enumerated() {
            seen += n
            // close group g once its share of the tokens is reached (keep one sequence per group left)
            if groups.count < p - 1 && seen * p >= T * (groups.count + 1)
                && lengths.count - i - 1 >= p - groups.count - 1
            {
                groups.append(start..<(i + 1))
                start = i + 1
            }
        }
        groups.append(start..<lengths.count) // non-empty: each closed group left one sequence per group to come
        return groups
    }

    /// The forward of `forward(_:kernels:)` on the calling thread and `k.threads` (inputs checked).
    func forwardSerial(_ seqs: [[Int]], kernels k: Kernels) throws -> [Float] {
        let c = config
        let d = c.hiddenSize
        let lengths = seqs.map(\.count)
        let T = lengths.reduce(0, +)
        var x = embeddings(seqs, tokens: T)
        try layerNorm(&x, embLN, T, d, k)
        var s = Scratch(tokens: T, dim: d, intermediate: c.intermediateSize, longest: lengths.max()!)
        // OpenBLAS wins once the token count makes real matrix products; below, the row kernels.
        let blas = T >= 128
        for (li, L) in layers.enumerated() {
            try attentionBlock(L, mats[li], &x, lengths: lengths, &s, kernels: k, blas: blas)
            try mlpBlock(L, mats[li], &x, tokens: T, &s, kernels: k, blas: blas)
        }
        return x
    }

    /// Buffers of one forward call.
    struct Scratch {
        var q: [Float], k: [Float], v: [Float], ctx: [Float], tmp: [Float], inter: [Float], scores: [Float]
        init(tokens T: Int, dim d: Int, intermediate: Int, longest: Int) {
            q = [Float](repeating: 0, count: T * d)
            k = q
            v = q
            ctx = q
            tmp = q
            inter = [Float](repeating: 0, count: T * intermediate)
            scores = [Float](repeating: 0, count: longest * longest)
        }
    }

    /// Word + position + token-type embeddings of every token (sequences concatenated).
    func embeddings(_ seqs: [[Int]], tokens T: Int) -> [Float] {
        let d = config.hiddenSize
        var x = [Float](repeating: 0, count: T * d)
        var row = 0
        for s in seqs {
            for (t, id) in s.enumerated() {
                for j in 0..<d { x[row * d + j] = wordEmb[id * d + j] + posEmb[t * d + j] + typeEmb[j] }
                row += 1
            }
        }
        return x
    }

    /// x = LayerNorm(x + o(attention(q(x), k(x), v(x)))), bidirectional, per sequence and head.
    func attentionBlock(
        _ L: Layer, _ M: [QuantizedMatrix], _ x: inout [Float], lengths: [Int], _ s: inout Scratch,
        kernels k: Kernels, blas: Bool
    ) throws {
        let d = config.hiddenSize
        let T = x.count / d
        try lin(k, M[0], x, L.bq, T, &s.q, blas)
        try lin(k, M[1], x, L.bk, T, &s.k, blas)
        try lin(k, M[2], x, L.bv, T, &s.v, blas)
        var start = 0
        for n in lengths {
            for head in 0..<config.numAttentionHeads { attendHead(&s, start: start, count: n, head: head, kernels: k) }
            start += n
        }
        try residual(k, M[3], s.ctx, L.bo, T, &x, &s.tmp, blas)
        try layerNorm(&x, L.ln1, T, d, k)
    }

    /// One head of one sequence with sgemm: S = Q_h K_h^T / sqrt(hd), softmax, O_h = P V_h.
    func attendHead(_ s: inout Scratch, start: Int, count n: Int, head: Int, kernels: Kernels) {
        let d = config.hiddenSize
        let hd = d / config.numAttentionHeads
        let scale = 1 / Float(hd).squareRoot()
        let at = start * d + head * hd
        s.q.withUnsafeBufferPointer { qp in
            s.k.withUnsafeBufferPointer { kp in
                s.scores.withUnsafeMutableBufferPointer { sp in
                    ck_blas_sgemm(
                        false, true, n, n, hd, scale, qp.baseAddress! + at, d, kp.baseAddress! + at, d, 0,
                        sp.baseAddress, n)
                }
            }
        }
        // softmax of each score row with the attention kernels' row passes (vectorised exp)
        var p = ck_attention_params(score: CK_SCORE_SOFTMAX, scale: 1, power: 0, eps: 0, delta: 0)
        let table = kernels.attentionTable.pointee
        s.scores.withUnsafeMutableBufferPointer { sp in
            for r in 0..<n {
                let row = sp.baseAddress! + r * n
                let m = table.row_max(&p, row, n)
                let inv = 1 / table.row_weights(&p, row, n, m)
                for j in 0..<n { row[j] *= inv }
            }
        }
        s.scores.withUnsafeBufferPointer { sp in
            s.v.withUnsafeBufferPointer { vp in
                s.ctx.withUnsafeMutableBufferPointer { cp in
                    ck_blas_sgemm(
                        false, false, n, hd, n, 1, sp.baseAddress, n, vp.baseAddress! + at, d, 0, cp.baseAddress! + at,
                        d)
                }
            }
        }
    }

    /// x = LayerNorm(x + out(GELU(in(x)))) with the exact (erf) GELU.
    func mlpBlock(
        _ L: Layer, _ M: [QuantizedMatrix], _ x: inout [Float], tokens T: Int, _ s: inout Scratch, kernels k: Kernels,
        blas: Bool
    ) throws {
        let d = config.hiddenSize
        try lin(k, M[4], x, L.bi, T, &s.inter, blas)
        s.inter.withUnsafeMutableBufferPointer { k.geluErf($0) }
        try residual(k, M[5], s.inter, L.bd, T, &x, &s.tmp, blas)
        try layerNorm(&x, L.ln2, T, d, k)
    }

    /// Sentence embedding: mean of the token states, L2-normalised (sentence-transformers).
    public func embed(_ text: String) throws -> [Float] { try embed(ids: [tokenizer.encode(text)]) }

    /// Embeddings of many sentences (n x hidden, row-major). Sentences go through the model in
    /// batches of up to `batch`: the linear layers see all their tokens at once (OpenBLAS sgemm
    /// from 128 tokens; on several threads, one group of whole sentences per thread), attention
    /// stays per sentence. Results equal one-by-one embedding up to float rounding.
    public func embed(_ texts: [String], batch: Int = 32) throws -> [Float] {
        try require(batch > 0, "batch must be positive, got \(batch)")
        let tok = try tokenizer
        var out: [Float] = []
        out.reserveCapacity(texts.count * config.hiddenSize)
        for b0 in stride(from: 0, to: texts.count, by: batch) {
            out += try embed(ids: texts[b0..<min(texts.count, b0 + batch)].map { tok.encode($0) })
        }
        return out
    }

    /// Sentence embeddings (mean pool + L2 norm) of token-id sequences run as one batch
    /// (n x hidden). This is all an encrypted model's server needs: ids in, vectors out.
    public func embed(ids seqs: [[Int]]) throws -> [Float] {
        let d = config.hiddenSize
        let x = try forward(seqs, kernels: kernels)
        var out: [Float] = []
        out.reserveCapacity(seqs.count * d)
        var row = 0
        for s in seqs {
            var e = [Float](repeating: 0, count: d)
            for t in 0..<s.count { for j in 0..<d { e[j] += x[(row + t) * d + j] } }
            row += s.count
            var n: Float = 0
            for j in 0..<d {
                e[j] /= Float(s.count)
                n += e[j] * e[j]
            }
            let inv = 1 / max(n.squareRoot(), 1e-12)
            out += e.map { $0 * inv }
        }
        return out
    }

    /// y (T x out) = x (T x in) W^T + b with Engine's row kernels (at sentence lengths they beat
    /// OpenBLAS, whose threading and buffer locks dominate such small products).
    func lin(
        _ k: Kernels, _ w: QuantizedMatrix, _ x: [Float], _ b: [Float], _ T: Int, _ y: inout [Float],
        _ blas: Bool = false
    ) throws {
        if blas && w.type == .f32 {
            // y starts as the bias in every row and sgemm adds X W^T to it (beta 1): no zeroing
            // pass and no bias pass over y
            let n = w.rows
            try require(x.count >= T * w.cols && y.count >= T * n && b.count == n, "linear: shapes do not match")
            y.withUnsafeMutableBufferPointer { yp in
                b.withUnsafeBufferPointer { bp in
                    for t in 0..<T { (yp.baseAddress! + t * n).update(from: bp.baseAddress!, count: n) }
                }
            }
            sgemmAdd(w, x, T, &y)
            return
        }
        try x.withUnsafeBufferPointer { xp in
            try y.withUnsafeMutableBufferPointer { yp in
                try k.linear(
                    w, x: UnsafeBufferPointer(rebasing: xp[0..<(T * w.cols)]), tokens: T,
                    into: UnsafeMutableBufferPointer(rebasing: yp[0..<(T * w.rows)]), useBLAS: blas)
            }
        }
        for t in 0..<T { for j in 0..<w.rows { y[t * w.rows + j] += b[j] } }
    }

    /// x += y W^T + b (the residual branch of attention's output and of the MLP); `tmp` holds
    /// the product on the row-kernel path. With OpenBLAS the bias joins x first and sgemm adds
    /// the product into x itself (beta 1).
    func residual(
        _ k: Kernels, _ w: QuantizedMatrix, _ y: [Float], _ b: [Float], _ T: Int, _ x: inout [Float],
        _ tmp: inout [Float], _ blas: Bool
    ) throws {
        let n = w.rows
        if blas && w.type == .f32 {
            try require(y.count >= T * w.cols && x.count >= T * n && b.count == n, "residual: shapes do not match")
            x.withUnsafeMutableBufferPointer { xp in
                b.withUnsafeBufferPointer { bp in
                    for t in 0..<T { for j in 0..<n { xp[t * n + j] += bp[j] } }
                }
            }
            sgemmAdd(w, y, T, &x)
            return
        }
        try lin(k, w, y, b, T, &tmp, blas)
        x.withUnsafeMutableBufferPointer { xp in
            tmp.withUnsafeBufferPointer { tp in for i in 0..<(T * n) { xp[i] += tp[i] } }
        }
    }

    /// y (T x w.rows) += x (T x w.cols) W^T with OpenBLAS (dense f32 weights).
    func sgemmAdd(_ w: QuantizedMatrix, _ x: [Float], _ T: Int, _ y: inout [Float]) {
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                w.withUnsafeBytes { wb in
                    ck_blas_sgemm(
                        false, true, T, w.rows, w.cols, 1, xp.baseAddress, w.cols,
                        wb.baseAddress!.assumingMemoryBound(to: Float.self), w.cols, 1, yp.baseAddress, w.rows)
                }
            }
        }
    }

    func layerNorm(_ x: inout [Float], _ n: Norm, _ T: Int, _ d: Int, _ k: Kernels) throws {
        try x.withUnsafeMutableBufferPointer { xp in
            try n.gamma.withUnsafeBufferPointer { gp in
                try n.beta.withUnsafeBufferPointer { bp in
                    try k.layerNorm(
                        UnsafeMutableBufferPointer(rebasing: xp[0..<(T * d)]), d: d, gamma: gp, beta: bp,
                        eps: Float(config.layerNormEps))
                }
            }
        }
        if let g = n.transform {
            var y = [Float](repeating: 0, count: x.count)
            try lin(k, g, x, n.bias, T, &y, T >= 128)
            x = y
        }
    }
}
