import CKernels
import Foundation

/// Equivariant encryption of a Llama-family GGUF model (row-vector convention of docs/encryption.md,
/// written here for Engine's y = W x with W stored out x in):
///  - every RMSNorm gain is folded into the linear layers that read the normalised stream
///    (q, k, v; gate, up; the final norm into an untied output matrix), leaving weightless norms,
///    which commute with an orthogonal Q;
///  - the residual stream is rotated: readers W' = W Q, writers (o_proj, down_proj) W' = Q^T W,
///    embeddings and output rows e' = e Q;
///  - the vocabulary is permuted: row P[t] of the new embedding and output matrices holds row t;
///  - per KV head, q and k rows get the same 2x2 rotation on each RoPE pair (adjacent pairs in
///    GGUF), which commutes with RoPE and keeps q.k; v rows get an orthogonal A and the o_proj
///    columns of the group A^T;
///  - the MLP hidden units are permuted (gate, up rows; down columns) and up/down get a positive
///    diagonal s / 1/s, exact for SwiGLU.
/// The result is an ordinary GGUF that the unmodified engine runs; its matrices are written as
/// `type` (f32 exact; f16 or q8_0 re-quantize the transformed weights: the rotation spreads every
/// weight over all of its row, so the original 4-bit grid cannot be kept). Norm gains stay f32.
/// Tokenizer metadata is dropped (it would reveal P: the client tokenizes).
public enum ModelEncryptor {
    /// Matrix types an encrypted model can be written as.
    public static let outputTypes: [RowType] = [.f32, .f16, .q8_0]

    /// `split`: the server file omits the embedding table and the output head (the client holds
    /// them: `clientHalf`), so no ids, vocabulary-sized tensors or logits reach the server.
    public static func encryptLlama(
        gguf f: GGUFFile, key: EncryptionKey, type: RowType = .f32, split: Bool = false,
        kernels: Kernels
    ) throws -> GGUFWriter {
        try require(outputTypes.contains(type), "encrypted models are written as f32, f16 or q8_0, not \(type)")
        let c = try LlamaConfig(gguf: f)
        guard try EncryptionKey.modelID(gguf: f) == key.modelID, key.shape == ModelShape(c) else {
            throw EngineError.invalidArgument("the key belongs to another model (wrong key)")
        }
        let d = c.dim
        let q = try key.residualRotation().map { Float($0) } // d x d
        var qt = [Float](repeating: 0, count: d * d)
        for i in 0..<d { for j in 0..<d { qt[j * d + i] = q[i * d + j] } }
        let p = key.vocabularyPermutation

        func floats(_ name: String) throws -> (v: [Float], rows: Int, cols: Int) {
            let m = try f.matrix(name)
            return (m.dequantized(kernels: kernels), m.rows, m.cols)
        }
        func mul(_ a: [Float], _ b: [Float], _ m: Int, _ k: Int, _ n: Int) throws -> [Float] {
            try LinearAlgebra.matmul(a, b, m: m, k: k, n: n)
        }
        /// Reader: (W diag(g)) Q, W rows x d.
        func reader(_ w: [Float], _ rows: Int, _ g: [Float]?) throws -> [Float] {
            var w = w
            if let g { for r in 0..<rows { for j in 0..<d { w[r * d + j] *= g[j] } } }
            return try mul(w, q, rows, d, d)
        }
        /// Writer: Q^T W, W d x cols.
        func writer(_ w: [Float], _ cols: Int) throws -> [Float] { try mul(qt, w, d, d, cols) }
        /// Rows permuted: out[P[t]] = in[t].
        func permuteRows(_ w: [Float], _ rows: Int, _ cols: Int) -> [Float] {
            var out = [Float](repeating: 0, count: w.count)
            for t in 0..<rows { for j in 0..<cols { out[p[t] * cols + j] = w[t * cols + j] } }
            return out
        }

        var out = GGUFWriter()
        out.metadata = f.metadata.filter { !$0.key.hasPrefix("tokenizer.") && $0.key != "general.alignment" }
            .sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        out.metadata.append(("engine.encrypted", .bool(true)))
        out.metadata.append(("engine.key_check", .string(key.checkValue)))
        let ones = [Float](repeating: 1, count: d)
        func add(_ name: String, _ v: [Float], rows: Int, cols: Int) throws {
            let m =
                rows == 1 || type == .f32
                ? try QuantizedMatrix(f32: v, rows: rows, cols: cols)
                : try QuantizedMatrix(quantizing: v, rows: rows, cols: cols, type: type, kernels: kernels)
            try out.add(name, matrix: m, dims: rows == 1 ? [cols] : [cols, rows])
        }

        if split {
            out.metadata.append(("engine.split", .bool(true)))
            out.metadata.removeAll { $0.0 == "llama.vocab_size" }
            out.metadata.append(("llama.vocab_size", .uint(UInt64(c.vocab))))
        } else {
            let (embQ, headQ) = try rotatedVocabularyTensors(f, q: q, kernels: kernels)
            try add("token_embd.weight", permuteRows(embQ, c.vocab, d), rows: c.vocab, cols: d)
            try add("output.weight", permuteRows(headQ, c.vocab, d), rows: c.vocab, cols: d)
        }
        try add("output_norm.weight", ones, rows: 1, cols: d)
        for l in 0..<c.layers {
            let pre = "blk.\(l)."
            let an = try floats(pre + "attn_norm.weight").v
            let fn = try floats(pre + "ffn_norm.weight").v
            let hd = c.headDim
            let g = c.heads / c.kvHeads
            var wq = try reader(try floats(pre + "attn_q.weight").v, c.heads * hd, an)
            var wk = try reader(try floats(pre + "attn_k.weight").v, c.kvHeads * hd, an)
            var wv = try reader(try floats(pre + "attn_v.weight").v, c.kvHeads * hd, an)
            var wo = try floats(pre + "attn_output.weight").v // d x (heads * hd)
            let angles = key.ropePairAngles(layer: l)
            // rotate rows (2i, 2i+1) of a head block by theta
            func rotatePair(_ w: inout [Float], row0: Int, _ theta: Double) {
                let cs = Float(cos(theta))
                let sn = Float(sin(theta))
                for j in 0..<d {
                    let a = w[row0 * d + j]
                    let b = w[(row0 + 1) * d + j]
                    w[row0 * d + j] = cs * a - sn * b
                    w[(row0 + 1) * d + j] = sn * a + cs * b
                }
            }
            for h in 0..<c.kvHeads {
                for i in 0..<(hd / 2) {
                    let theta = angles[h * hd / 2 + i]
                    rotatePair(&wk, row0: h * hd + 2 * i, theta)
                    for qh in (h * g)..<((h + 1) * g) { rotatePair(&wq, row0: qh * hd + 2 * i, theta) }
                }
                let a = try key.valueRotation(layer: l, head: h).map { Float($0) } // hd x hd
                // v rows of head h: A W_v
                let block = Array(wv[(h * hd * d)..<((h + 1) * hd * d)])
                wv.replaceSubrange((h * hd * d)..<((h + 1) * hd * d), with: try mul(a, block, hd, hd, d))
                // o_proj columns of each q head in the group: W_o[:, cols] A^T
                for qh in (h * g)..<((h + 1) * g) {
                    for r in 0..<d {
                        let base = r * c.heads * hd + qh * hd
                        let old = Array(wo[base..<(base + hd)])
                        for j in 0..<hd {
                            var acc: Float = 0
                            for t in 0..<hd { acc += old[t] * a[j * hd + t] } // (old A^T)_j = sum_t old_t A[j][t]
                            wo[base + j] = acc
                        }
                    }
                }
            }
            try add(pre + "attn_q.weight", wq, rows: c.heads * hd, cols: d)
            try add(pre + "attn_k.weight", wk, rows: c.kvHeads * hd, cols: d)
            try add(pre + "attn_v.weight", wv, rows: c.kvHeads * hd, cols: d)
            try add(pre + "attn_output.weight", try writer(wo, c.heads * hd), rows: d, cols: c.heads * hd)
            // MLP: permute hidden units, scale up by s and down by 1/s
            let perm = key.mlpPermutation(layer: l)
            let sc = key.mlpScales(layer: l).map { Float($0) }
            let gate = try reader(try floats(pre + "ffn_gate.weight").v, c.hidden, fn)
            let up = try reader(try floats(pre + "ffn_up.weight").v, c.hidden, fn)
            let down = try floats(pre + "ffn_down.weight").v // d x hidden
            var gate2 = gate
            var up2 = up
            var down2 = down
            for u in 0..<c.hidden {
                let dst = perm[u]
                for j in 0..<d {
                    gate2[dst * d + j] = gate[u * d + j]
                    up2[dst * d + j] = up[u * d + j] * sc[u]
                }
                for r in 0..<d { down2[r * c.hidden + dst] = down[r * c.hidden + u] / sc[u] }
            }
            try add(pre + "ffn_gate.weight", gate2, rows: c.hidden, cols: d)
            try add(pre + "ffn_up.weight", up2, rows: c.hidden, cols: d)
            try add(pre + "ffn_down.weight", try writer(down2, c.hidden), rows: d, cols: c.hidden)
            try add(pre + "attn_norm.weight", ones, rows: 1, cols: d)
            try add(pre + "ffn_norm.weight", ones, rows: 1, cols: d)
        }
        return out
    }

    /// E Q and (H diag(g_out)) Q (vocab x dim, plain row order) for embedding E, head H.
    static func rotatedVocabularyTensors(_ f: GGUFFile, q: [Float], kernels: Kernels) throws -> ([Float], [Float]) {
        let e = try f.matrix("token_embd.weight")
        let d = e.cols
        let ev = e.dequantized(kernels: kernels)
        var hv = f.tensors["output.weight"] != nil ? try f.matrix("output.weight").dequantized(kernels: kernels) : ev
        let g = try f.matrix("output_norm.weight").dequantized(kernels: kernels)
        for r in 0..<e.rows { for j in 0..<d { hv[r * d + j] *= g[j] } }
        return (
            try LinearAlgebra.matmul(ev, q, m: e.rows, k: d, n: d),
            try LinearAlgebra.matmul(hv, q, m: e.rows, k: d, n: d)
        )
    }

    /// The client half of a split-encrypted model: the embedding table E Q and the output head
    /// (H diag(g)) Q in plain vocabulary order, the model's metadata and its tokenizer (the
    /// client tokenizes). The client looks rows up, sends them, and turns the server's final
    /// hidden state into logits itself.
    public static func clientHalf(gguf f: GGUFFile, key: EncryptionKey, type: RowType = .f32, kernels: Kernels) throws
        -> GGUFWriter
    {
        let c = try LlamaConfig(gguf: f)
        guard try EncryptionKey.modelID(gguf: f) == key.modelID, key.shape == ModelShape(c) else {
            throw EngineError.invalidArgument("the key belongs to another model (wrong key)")
        }
        try require(outputTypes.contains(type), "the client half is written as f32, f16 or q8_0, not \(type)")
        let q = try key.residualRotation().map { Float($0) }
        let (embQ, headQ) = try rotatedVocabularyTensors(f, q: q, kernels: kernels)
        var out = GGUFWriter()
        out.metadata = f.metadata.filter { $0.key != "general.alignment" }.sorted { $0.key < $1.key }.map {
            ($0.key, $0.value)
        }
        out.metadata.append(("engine.split_client", .bool(true)))
        out.metadata.append(("engine.key_check", .string(key.checkValue)))
        for (name, v) in [("token_embd.weight", embQ), ("output.weight", headQ)] {
            let m =
                type == .f32
                ? try QuantizedMatrix(f32: v, rows: c.vocab, cols: c.dim)
                : try QuantizedMatrix(quantizing: v, rows: c.vocab, cols: c.dim, type: type, kernels: kernels)
            try out.add(name, matrix: m)
        }
        return out
    }

    /// The plain model re-written with every matrix as `type` (norms f32, metadata kept): the
    /// same-format baseline for measuring what encryption itself costs (f32 vs f32, q8_0 vs q8_0).
    public static func convertLlama(gguf f: GGUFFile, type: RowType, kernels: Kernels) throws -> GGUFWriter {
        try require(outputTypes.contains(type), "models are converted to f32, f16 or q8_0, not \(type)")
        var out = GGUFWriter()
        out.metadata = f.metadata.filter { $0.key != "general.alignment" }.sorted { $0.key < $1.key }.map {
            ($0.key, $0.value)
        }
        for name in f.tensorOrder {
            let m = try f.matrix(name)
            let v = m.dequantized(kernels: kernels)
            let w =
                m.rows == 1 || type == .f32
                ? try QuantizedMatrix(f32: v, rows: m.rows, cols: m.cols)
                : try QuantizedMatrix(quantizing: v, rows: m.rows, cols: m.cols, type: type, kernels: kernels)
            try out.add(name, matrix: w, dims: try f.tensor(name).dims)
        }
        return out
    }
}
