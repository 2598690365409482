import CKernels
import Foundation

/// Equivariant encryption of a Llama-family GGUF model (row-vector convention of DESIGN.md,
/// written here for Engine's y = W x with W stored out x in):
///  - every RMSNorm gain is folded into the linear layers that read the normalised stream
///    (q, k, v; gate, up; the final norm into an untied output matrix), leaving weightless norms,
///    which commute with an orthogonal Q;
///  - the residual stream is rotated: readers W' = W Q, writers (o_proj, down_proj) W' = Q^T W,
///    embeddings and output rows e' = e Q;
///  - the vocabulary is permuted: row P[t] of the new embedding and output matrices holds row t.
/// The result is an ordinary GGUF (f32 tensors) that the unmodified engine runs; tokenizer
/// metadata is dropped (it would reveal P: the client tokenizes).
public enum ModelEncryptor {
    public static func encryptLlama(gguf f: GGUFFile, key: EncryptionKey, kernels: Kernels) throws -> GGUFWriter {
        let c = try LlamaConfig(gguf: f)
        guard try EncryptionKey.modelID(gguf: f) == key.modelID, key.shape == ModelShape(c) else {
            throw EngineError.invalidArgument("the key belongs to another model (wrong key)")
        }
        let d = c.dim
        let q = try key.residualRotation().map { Float($0) }                  // d x d
        var qt = [Float](repeating: 0, count: d * d)
        for i in 0..<d { for j in 0..<d { qt[j * d + i] = q[i * d + j] } }
        let p = key.vocabularyPermutation

        func floats(_ name: String) throws -> (v: [Float], rows: Int, cols: Int) {
            let m = try f.matrix(name)
            return (m.dequantized(kernels: kernels), m.rows, m.cols)
        }
        func mul(_ a: [Float], _ b: [Float], _ m: Int, _ k: Int, _ n: Int) throws -> [Float] { try LinearAlgebra.matmul(a, b, m: m, k: k, n: n) }
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
        let ones = [Float](repeating: 1, count: d)
        func add(_ name: String, _ v: [Float], rows: Int, cols: Int) throws {
            try out.add(name, matrix: QuantizedMatrix(f32: v, rows: rows, cols: cols), dims: rows == 1 ? [cols] : [cols, rows])
        }

        let emb = try floats("token_embd.weight")
        try add("token_embd.weight", permuteRows(try mul(emb.v, q, emb.rows, d, d), emb.rows, d), rows: emb.rows, cols: d)
        let outNorm = try floats("output_norm.weight").v
        let head = f.tensors["output.weight"] != nil ? try floats("output.weight") : emb
        try add("output.weight", permuteRows(try reader(head.v, head.rows, outNorm), head.rows, d), rows: head.rows, cols: d)
        try add("output_norm.weight", ones, rows: 1, cols: d)
        for l in 0..<c.layers {
            let pre = "blk.\(l)."
            let an = try floats(pre + "attn_norm.weight").v, fn = try floats(pre + "ffn_norm.weight").v
            for name in ["attn_q", "attn_k", "attn_v"] {
                let w = try floats(pre + name + ".weight")
                try add(pre + name + ".weight", try reader(w.v, w.rows, an), rows: w.rows, cols: d)
            }
            for name in ["ffn_gate", "ffn_up"] {
                let w = try floats(pre + name + ".weight")
                try add(pre + name + ".weight", try reader(w.v, w.rows, fn), rows: w.rows, cols: d)
            }
            let wo = try floats(pre + "attn_output.weight"), wd = try floats(pre + "ffn_down.weight")
            try add(pre + "attn_output.weight", try writer(wo.v, wo.cols), rows: d, cols: wo.cols)
            try add(pre + "ffn_down.weight", try writer(wd.v, wd.cols), rows: d, cols: wd.cols)
            try add(pre + "attn_norm.weight", ones, rows: 1, cols: d)
            try add(pre + "ffn_norm.weight", ones, rows: 1, cols: d)
        }
        return out
    }
}
