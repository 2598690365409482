import CKernels
import Foundation

/// Hyper-parameters of a Llama-family decoder, read from GGUF metadata (`llama.*` keys).
public struct LlamaConfig: Sendable, Equatable {
    /// Width of the residual stream.
    public var dim: Int
    /// Transformer layers.
    public var layers: Int
    /// Query heads.
    public var heads: Int
    /// Key/value heads (grouped-query attention).
    public var kvHeads: Int
    /// Width of the MLP hidden layer.
    public var hidden: Int
    /// Vocabulary size.
    public var vocab: Int
    /// Most positions the model was trained for.
    public var contextLength: Int
    /// RoPE frequency base.
    public var ropeBase: Float
    /// RMSNorm epsilon.
    public var normEps: Float
    /// Width of one head.
    public var headDim: Int { dim / heads }

    /// Reads and checks the `llama.*` metadata of a GGUF file.
    public init(gguf f: GGUFFile) throws {
        let arch = try f.string("general.architecture")
        guard arch == "llama" else {
            throw EngineError.unsupported(
                "\(f.file.path): architecture '\(arch)'; this decoder supports 'llama' (Llama, SmolLM2, Mistral-style)")
        }
        dim = try f.int("llama.embedding_length")
        layers = try f.int("llama.block_count")
        heads = try f.int("llama.attention.head_count")
        kvHeads = try f.int("llama.attention.head_count_kv")
        hidden = try f.int("llama.feed_forward_length")
        contextLength = try f.int("llama.context_length")
        ropeBase = Float(f.metadata["llama.rope.freq_base"]?.double ?? 10000)
        normEps = Float(try f.double("llama.attention.layer_norm_rms_epsilon"))
        if case .bool(true)? = f.metadata["engine.split"], f.tensors["token_embd.weight"] == nil {
            // server half of a split-encrypted model: no vocabulary tensors
            guard let v = f.metadata["llama.vocab_size"]?.int, v > 0 else {
                throw EngineError.invalidFile("\(f.file.path): split model without llama.vocab_size")
            }
            vocab = v
        } else {
            let emb = try f.tensor("token_embd.weight")
            vocab = f.metadata["llama.vocab_size"]?.int ?? emb.rowCount
            guard emb.rowLength == dim, emb.rowCount == vocab else {
                throw EngineError.invalidFile(
                    "\(f.file.path): token_embd.weight is \(emb.rowCount)x\(emb.rowLength), expected \(vocab)x\(dim)")
            }
        }
        guard (1...Limits.dimension).contains(dim), (1...Limits.heads).contains(heads), kvHeads > 0,
            heads % kvHeads == 0, dim % heads == 0, (dim / heads) % 2 == 0, (1...Limits.layers).contains(layers),
            (1...(8 * Limits.dimension)).contains(hidden), (1...Limits.vocabulary).contains(vocab)
        else {
            throw EngineError.invalidFile(
                """
                \(f.file.path): inconsistent shape (dim \(dim), heads \(heads), kv heads \(kvHeads), layers \(layers), \
                hidden \(hidden), vocabulary \(vocab))
                """)
        }
        guard (1...Limits.context).contains(contextLength) else {
            throw EngineError.invalidFile(
                "\(f.file.path): context length \(contextLength) outside 1...\(Limits.context)")
        }
        guard ropeBase.isFinite, ropeBase > 1, normEps.isFinite, normEps > 0, normEps < 1 else {
            throw EngineError.invalidFile(
                "\(f.file.path): rope base \(ropeBase) or norm epsilon \(normEps) out of range (base > 1, 0 < eps < 1)")
        }
        // the file must hold exactly `layers` blocks: a config that disagrees with its tensors is refused
        guard f.tensors["blk.\(layers).attn_q.weight"] == nil else {
            throw EngineError.invalidFile(
                "\(f.file.path): the file has more than the \(layers) layers its metadata declares")
        }
    }
}

/// How decoder weights are held.
public enum WeightFormat: String, Sendable, CaseIterable {
    /// Dequantized to f32 at load: the reference path.
    case f32
    /// As stored in the file (Q8_0/Q4_0/Q4_1 stay quantized); see `Numerics` for how
    /// activations meet them.
    case native
}

/// A Llama-family decoder (RMSNorm, RoPE on adjacent pairs as GGUF stores it, GQA, SwiGLU).
public final class LlamaModel: @unchecked Sendable {
    /// The hyper-parameters.
    public let config: LlamaConfig
    /// Key check value of an encrypted model (GGUF `engine.key_check`; nil for a plain model).
    public let keyCheck: String?
    /// How the weights are held (f32 reference or as stored).
    public let format: WeightFormat
    /// Activation numerics for quantized weights: `.exact` (f32 activations, weights
    /// dequantized in registers; equals the f32 path up to rounding) or `.int8` (as llama.cpp).
    public let activations: Numerics
    /// The kernels (level and threads) the model runs with.
    public let kernels: Kernels
    /// Attention score function: softmax, or Power-Softmax for models trained with it (from the
    /// GGUF keys `engine.attention.score` = "power", `engine.attention.power_p`, `.power_eps`,
    /// `.power_delta`, or given at load), or its polynomial-only evaluation.
    public let score: ScoreFunction

    struct Layer {
        var attnNorm: [Float], ffnNorm: [Float]
        var wq: QuantizedMatrix, wk: QuantizedMatrix, wv: QuantizedMatrix, wo: QuantizedMatrix
        var gate: QuantizedMatrix, up: QuantizedMatrix, down: QuantizedMatrix
    }
    let layers: [Layer]
    /// Absent in the server half of a split-encrypted model (`engine.split`): the client holds
    /// the embedding table and the output head, the server sees only hidden states.
    let embedding: QuantizedMatrix?
    let output: QuantizedMatrix?
    let outputNorm: [Float]
    var numerics: Numerics { format == .native ? activations : .exact }

    /// Loads a GGUF file. Every tensor's shape is checked against the configuration.
    public init(
        gguf f: GGUFFile, format: WeightFormat = .native, activations: Numerics = .int8, score: ScoreFunction? = nil,
        kernels: Kernels
    ) throws {
        let c = try LlamaConfig(gguf: f)
        config = c
        keyCheck = f.metadata["engine.key_check"]?.string
        if let score {
            self.score = score
        } else if let name = f.metadata["engine.attention.score"]?.string {
            guard name == "power" else {
                throw EngineError.unsupported(
                    "\(f.file.path): attention score '\(name)'; supported: power (softmax is the default)")
            }
            self.score = .power(
                p: f.metadata["engine.attention.power_p"]?.int ?? 4,
                eps: Float(f.metadata["engine.attention.power_eps"]?.double ?? 1e-6),
                delta: Float(f.metadata["engine.attention.power_delta"]?.double ?? 1e-6))
        } else {
            self.score = .softmax
        }
        if case .powerPolynomial = self.score {} else { _ = try self.score.params(scale: 1) } // validate now
        self.format = format
        self.activations = activations
        self.kernels = kernels
        func mat(_ name: String, rows: Int, cols: Int) throws -> QuantizedMatrix {
            let m = try f.matrix(name)
            guard m.rows == rows && m.cols == cols else {
                throw EngineError.invalidFile(
                    "\(f.file.path): \(name) is \(m.rows)x\(m.cols), expected \(rows)x\(cols)")
            }
            try m.checkFinite("\(f.file.path): \(name)")
            if format == .f32 && m.type != .f32 {
                return try QuantizedMatrix(f32: m.dequantized(kernels: kernels), rows: rows, cols: cols)
            }
            // 4-bit weights meet int8 activations in the interleaved layout (a copy in RAM)
            return activations == .int8 ? m.interleaved() : m
        }
        func vec(_ name: String, _ n: Int) throws -> [Float] {
            let m = try f.matrix(name)
            guard m.rows * m.cols == n else {
                throw EngineError.invalidFile("\(f.file.path): \(name) has \(m.rows * m.cols) values, expected \(n)")
            }
            try m.checkFinite("\(f.file.path): \(name)")
            return m.dequantized(kernels: kernels)
        }
        let kvDim = c.kvHeads * c.headDim
        layers = try (0..<c.layers).map { l in
            let p = "blk.\(l)."
            return Layer(
                attnNorm: try vec(p + "attn_norm.weight", c.dim), ffnNorm: try vec(p + "ffn_norm.weight", c.dim),
                wq: try mat(p + "attn_q.weight", rows: c.dim, cols: c.dim),
                wk: try mat(p + "attn_k.weight", rows: kvDim, cols: c.dim),
                wv: try mat(p + "attn_v.weight", rows: kvDim, cols: c.dim),
                wo: try mat(p + "attn_output.weight", rows: c.dim, cols: c.dim),
                gate: try mat(p + "ffn_gate.weight", rows: c.hidden, cols: c.dim),
                up: try mat(p + "ffn_up.weight", rows: c.hidden, cols: c.dim),
                down: try mat(p + "ffn_down.weight", rows: c.dim, cols: c.hidden))
        }
        if case .bool(true)? = f.metadata["engine.split"], f.tensors["token_embd.weight"] == nil {
            embedding = nil
            output = nil
        } else {
            embedding = try mat("token_embd.weight", rows: c.vocab, cols: c.dim)
            output =
                f.tensors["output.weight"] != nil ? try mat("output.weight", rows: c.vocab, cols: c.dim) : embedding
        }
        outputNorm = try vec("output_norm.weight", c.dim)
    }

    /// Convenience: opens and loads a GGUF file.
    public convenience init(
        path: String, format: WeightFormat = .native, activations: Numerics = .int8, score: ScoreFunction? = nil,
        kernels: Kernels
    ) throws {
        try self.init(
            gguf: GGUFFile(path: path), format: format, activations: activations, score: score, kernels: kernels)
    }

    /// A fresh dense KV cache for up to `capacity` positions (default: the model's context length).
    public func makeCache(capacity: Int? = nil) throws -> DenseKVCache {
        let cap = capacity ?? config.contextLength
        try require(
            cap > 0 && cap <= config.contextLength, "cache capacity \(cap) must be in 1...\(config.contextLength)")
        return DenseKVCache(layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, capacity: cap)
    }

    /// A fresh KV cache of the given type for up to `capacity` positions (default: the model's
    /// context length).
    public func makeCache(capacity: Int? = nil, config kv: KVCacheConfig) throws -> any KVCache {
        let cap = capacity ?? config.contextLength
        try require(
            cap > 0 && cap <= config.contextLength, "cache capacity \(cap) must be in 1...\(config.contextLength)")
        try kv.validate(context: nil, headDim: config.headDim)
        if let offload = kv.offload, let rowType = kv.type.rowType {
            return try OffloadKVCache(
                layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, capacity: cap, type: rowType,
                int8Scores: kv.scores == .int8, offload: offload, kernels: kernels)
        }
        switch kv.type {
        case .f32:
            return DenseKVCache(layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, capacity: cap)
        case .f16, .q8_0, .q4_0:
            return try RowKVCache(
                layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, capacity: cap,
                type: kv.type.rowType!, int8Scores: kv.scores == .int8,
                kernels: kernels)
        case .q4, .q2, .mikv, .h2o:
            return try KIVIKVCache(
                layers: config.layers, kvHeads: config.kvHeads, headDim: config.headDim, capacity: cap, config: kv,
                kernels: kernels)
        }
    }

    /// Runs `tokens` at positions cache.length ..< cache.length + T, appends their keys and values
    /// to the cache and returns logits (T x vocab if `allLogits`, else only the last position).
    /// `onResidual(layer, x)`, if given, sees the residual stream (T x dim) after each layer
    /// (layer -1: the embeddings) — a diagnostic tap, e.g. to inspect what a server computes.
    public func forward(
        _ tokens: [Int], cache: any KVCache, allLogits: Bool = false,
        onResidual: ((Int, [Float]) -> Void)? = nil
    ) throws -> [Float] {
        let c = config
        let T = tokens.count
        try require(T > 0, "forward needs at least one token")
        for t in tokens where t < 0 || t >= c.vocab {
            throw EngineError.invalidArgument("token id \(t) is out of range 0..<\(c.vocab)")
        }
        let start = cache.length
        guard start + T <= cache.capacity else {
            throw EngineError.invalidArgument(
                "\(start + T) positions exceed the context of \(cache.capacity) (prompt too long)")
        }
        guard let embedding, let output else {
            throw EngineError.unsupported(
                """
                this is the server half of a split-encrypted model: it takes hidden states (forwardHidden), not \
                token ids
                """
            )
        }
        let d = c.dim
        var x = [Float](repeating: 0, count: T * d)
        try x.withUnsafeMutableBufferPointer { xp in
            for (i, t) in tokens.enumerated() {
                try kernels.row(embedding, t, into: UnsafeMutableBufferPointer(rebasing: xp[(i * d)..<((i + 1) * d)]))
            }
        }
        try layersForward(&x, T: T, cache: cache, onResidual: onResidual)
        let rows = allLogits ? T : 1
        let last = Array(x[((T - rows) * d)...])
        var normed = [Float](repeating: 0, count: rows * d)
        try norm(last, outputNorm, into: &normed)
        var logits = [Float](repeating: 0, count: rows * c.vocab)
        try lin(output, normed, rows, &logits)
        return logits
    }

    /// The server half of split encryption: runs input vectors (T x dim, e.g. embedding rows the
    /// client looked up and rotated) at the cache's next positions and returns the final residual
    /// stream (T x dim, before the output norm). No token ids or vocabulary are involved.
    public func forwardHidden(_ inputs: [Float], cache: any KVCache, onResidual: ((Int, [Float]) -> Void)? = nil)
        throws -> [Float]
    {
        let d = config.dim
        try require(!inputs.isEmpty && inputs.count % d == 0, "inputs must be T x \(d) values, got \(inputs.count)")
        try inputs.withUnsafeBufferPointer { try requireFinite($0, "input vectors") }
        let T = inputs.count / d
        guard cache.length + T <= cache.capacity else {
            throw EngineError.invalidArgument("\(cache.length + T) positions exceed the context of \(cache.capacity)")
        }
        var x = inputs
        try layersForward(&x, T: T, cache: cache, onResidual: onResidual)
        return x
    }

    /// The transformer layers over the residual stream x (T x dim) at positions cache.length..<+T;
    /// appends keys and values and advances the cache. A cache with `maxStepTokens` gets the rows in
    /// steps of at most that many (the same result: each row sees the cache a single step would),
    /// unless a residual tap needs the whole stream at once.
    func layersForward(_ x: inout [Float], T: Int, cache: any KVCache, onResidual: ((Int, [Float]) -> Void)?) throws {
        guard let step = cache.maxStepTokens, step > 0, T > step, onResidual == nil else {
            return try layersForwardStep(&x, T: T, cache: cache, onResidual: onResidual)
        }
        let d = config.dim
        var i = 0
        while i < T {
            let n = min(step, T - i)
            var piece = Array(x[(i * d)..<((i + n) * d)])
            try layersForwardStep(&piece, T: n, cache: cache, onResidual: nil)
            x.replaceSubrange((i * d)..<((i + n) * d), with: piece)
            i += n
        }
    }

    /// `layersForward` in one step.
    private func layersForwardStep(
        _ x: inout [Float], T: Int, cache: any KVCache, onResidual: ((Int, [Float]) -> Void)?
    ) throws {
        try layersForward(
            &x, segments: [Segment(cache: cache, start: cache.length, rows: 0..<T)], onResidual: onResidual)
    }

    /// Rows of a batch that belong to one sequence: they run at positions start ..< start + rows.count
    /// of its own cache.
    struct Segment {
        let cache: any KVCache
        let start: Int
        let rows: Range<Int>
    }

    /// The layers over rows of several sequences at once: every linear layer reads its weights once
    /// for all rows; rotary positions, cache appends and attention are per sequence.
    func layersForward(_ x: inout [Float], segments: [Segment], onResidual: ((Int, [Float]) -> Void)?) throws {
        let T = segments.last!.rows.upperBound
        var s = Scratch(config, tokens: T)
        let rope = RotaryTable(
            base: config.ropeBase, headDim: config.headDim,
            positions: segments.flatMap { $0.start..<($0.start + $0.rows.count) })
        onResidual?(-1, x)
        for (l, L) in layers.enumerated() {
            try attentionBlock(L, layer: l, &x, tokens: T, segments: segments, rope: rope, &s)
            try mlpBlock(L, &x, tokens: T, &s)
            onResidual?(l, x)
        }
        for g in segments { try g.cache.advance(to: g.start + g.rows.count) }
    }

    /// One forward step over several sequences, each with its own cache (continuous batching):
    /// `batch[i].tokens` run at the next positions of `batch[i].cache`. Returns each sequence's
    /// last-position logits. Every row is computed as `forward` computes it alone (the kernels
    /// treat rows independently), so results equal one call per sequence.
    public func forward(batch: [(tokens: [Int], cache: any KVCache)]) throws -> [[Float]] {
        let c = config
        try require(!batch.isEmpty, "forward needs at least one sequence")
        // one sequence: the single-sequence path (the same arithmetic, without the batch's
        // segment bookkeeping and logit copies)
        if batch.count == 1 { return [try forward(batch[0].tokens, cache: batch[0].cache)] }
        var segments: [Segment] = []
        var row = 0
        for (i, b) in batch.enumerated() {
            try require(!b.tokens.isEmpty, "sequence \(i) of the batch has no tokens")
            for t in b.tokens where t < 0 || t >= c.vocab {
                throw EngineError.invalidArgument("token id \(t) is out of range 0..<\(c.vocab)")
            }
            guard b.cache.length + b.tokens.count <= b.cache.capacity else {
                throw EngineError.invalidArgument(
                    "\(b.cache.length + b.tokens.count) positions exceed the context of \(b.cache.capacity)")
            }
            for g in segments where g.cache === b.cache {
                throw EngineError.invalidArgument("one cache appears twice in a batch")
            }
            segments.append(Segment(cache: b.cache, start: b.cache.length, rows: row..<(row + b.tokens.count)))
            row += b.tokens.count
        }
        guard let embedding, let output else {
            throw EngineError.unsupported("this is the server half of a split-encrypted model: it takes hidden states")
        }
        let d = c.dim
        let tokens = batch.flatMap(\.tokens)
        var x = [Float](repeating: 0, count: tokens.count * d)
        try x.withUnsafeMutableBufferPointer { xp in
            for (i, t) in tokens.enumerated() {
                try kernels.row(embedding, t, into: UnsafeMutableBufferPointer(rebasing: xp[(i * d)..<((i + 1) * d)]))
            }
        }
        try layersForward(&x, segments: segments, onResidual: nil)
        var last = [Float](repeating: 0, count: segments.count * d)
        for (i, g) in segments.enumerated() {
            let r = g.rows.upperBound - 1
            for j in 0..<d { last[i * d + j] = x[r * d + j] }
        }
        var normed = [Float](repeating: 0, count: segments.count * d)
        try norm(last, outputNorm, into: &normed)
        var logits = [Float](repeating: 0, count: segments.count * c.vocab)
        try lin(output, normed, segments.count, &logits)
        return (0..<segments.count).map { Array(logits[($0 * c.vocab)..<(($0 + 1) * c.vocab)]) }
    }

    /// Buffers of one forward call (T tokens).
    struct Scratch {
        var h: [Float], q: [Float], att: [Float], k: [Float], v: [Float], gate: [Float], up: [Float]
        init(_ c: LlamaConfig, tokens T: Int) {
            h = [Float](repeating: 0, count: T * c.dim)
            q = h
            att = h
            k = [Float](repeating: 0, count: T * c.kvHeads * c.headDim)
            v = k
            gate = [Float](repeating: 0, count: T * c.hidden)
            up = gate
        }
    }

    /// x += o(attention(rope(q(n(x))), rope(k(n(x))), v(n(x)))), keys and values appended to each
    /// sequence's cache.
    func attentionBlock(
        _ L: Layer, layer l: Int, _ x: inout [Float], tokens T: Int, segments: [Segment], rope: RotaryTable,
        _ s: inout Scratch
    ) throws {
        let c = config
        let shape = try AttentionShape(heads: c.heads, kvHeads: c.kvHeads, headDim: c.headDim)
        try norm(x, L.attnNorm, into: &s.h)
        try s.q.withUnsafeMutableBufferPointer { q in
            try s.k.withUnsafeMutableBufferPointer { k in
                try s.v.withUnsafeMutableBufferPointer { v in
                    try s.h.withUnsafeBufferPointer { h in
                        try kernels.linearSharingInput(
                            [L.wq, L.wk, L.wv], x: UnsafeBufferPointer(rebasing: h[0..<(T * c.dim)]), tokens: T,
                            into: [
                                UnsafeMutableBufferPointer(rebasing: q[0..<(T * L.wq.rows)]),
                                UnsafeMutableBufferPointer(rebasing: k[0..<(T * L.wk.rows)]),
                                UnsafeMutableBufferPointer(rebasing: v[0..<(T * L.wv.rows)]),
                            ], numerics: numerics)
                    }
                }
            }
        }
        try rope.apply(&s.q, rows: T, heads: c.heads, kernels: kernels)
        try rope.apply(&s.k, rows: T, heads: c.kvHeads, kernels: kernels)
        let kv = c.kvHeads * c.headDim
        let qd = c.heads * c.headDim
        for g in segments {
            let n = g.rows.count
            if segments.count == 1 {
                try g.cache.append(layer: l, keys: s.k, values: s.v, at: g.start, count: n)
            } else {
                let r = (g.rows.lowerBound * kv)..<(g.rows.upperBound * kv)
                try g.cache.append(layer: l, keys: Array(s.k[r]), values: Array(s.v[r]), at: g.start, count: n)
            }
            let r = (g.rows.lowerBound * qd)..<(g.rows.upperBound * qd)
            try s.q.withUnsafeBufferPointer { qp in
                try s.att.withUnsafeMutableBufferPointer { op in
                    try g.cache.attend(
                        layer: l, shape: shape, score: score, q: UnsafeBufferPointer(rebasing: qp[r]), start: g.start,
                        count: n, into: UnsafeMutableBufferPointer(rebasing: op[r]), kernels: kernels)
                }
            }
        }
        try lin(L.wo, s.att, T, &s.h)
        for i in 0..<(T * c.dim) { x[i] += s.h[i] }
    }

    /// x += down(silu(gate(n(x))) * up(n(x))) (SwiGLU).
    func mlpBlock(_ L: Layer, _ x: inout [Float], tokens T: Int, _ s: inout Scratch) throws {
        let c = config
        try norm(x, L.ffnNorm, into: &s.h)
        try s.gate.withUnsafeMutableBufferPointer { g in
            try s.up.withUnsafeMutableBufferPointer { u in
                try s.h.withUnsafeBufferPointer { h in
                    try kernels.linearSharingInput(
                        [L.gate, L.up], x: UnsafeBufferPointer(rebasing: h[0..<(T * c.dim)]), tokens: T,
                        into: [
                            UnsafeMutableBufferPointer(rebasing: g[0..<(T * L.gate.rows)]),
                            UnsafeMutableBufferPointer(rebasing: u[0..<(T * L.up.rows)]),
                        ], numerics: numerics)
                }
            }
        }
        try s.gate.withUnsafeMutableBufferPointer { g in
            try s.up.withUnsafeBufferPointer {
                try kernels.siluMul(UnsafeMutableBufferPointer(rebasing: g[0..<(T * c.hidden)]), $0)
            }
        }
        try lin(L.down, s.gate, T, &s.h)
        for i in 0..<(T * c.dim) { x[i] += s.h[i] }
    }

    /// RMSNorm of the rows of x (whole rows of dim) with gain w into y.
    func norm(_ x: [Float], _ w: [Float], into y: inout [Float]) throws {
        try kernels.rmsNorm(x, w, eps: config.normEps, into: &y, dim: config.dim)
    }

    private func lin(_ w: QuantizedMatrix, _ x: [Float], _ T: Int, _ y: inout [Float]) throws {
        try x.withUnsafeBufferPointer { xp in
            try y.withUnsafeMutableBufferPointer { yp in
                try kernels.linear(
                    w, x: UnsafeBufferPointer(rebasing: xp[0..<(T * w.cols)]), tokens: T,
                    into: UnsafeMutableBufferPointer(rebasing: yp[0..<(T * w.rows)]), numerics: numerics)
            }
        }
    }
}

extension Kernels {
    /// RMSNorm of the rows of x (`dim` values each) with gain w into y (arrays).
    public func rmsNorm(_ x: [Float], _ w: [Float], eps: Float, into y: inout [Float], dim: Int) throws {
        try x.withUnsafeBufferPointer { xp in
            try y.withUnsafeMutableBufferPointer { yp in
                try w.withUnsafeBufferPointer { try rmsNorm(xp, into: yp, d: dim, gamma: $0, eps: eps) }
            }
        }
    }
}

/// Rotary position embedding on adjacent pairs (2i, 2i+1), ggml's "normal" mode, which is how
/// GGUF stores Llama q/k weights (Hugging Face's rotate_half pairing i <-> i + d/2 is permuted
/// into it by the converter). Angles position x base^(-2i/d) are computed in double once per call
/// for its positions, then rounded to f32 cosines and sines for the C kernel.
struct RotaryTable {
    let headDim: Int
    let cos: [Float]
    let sin: [Float]

    init(base: Float, headDim: Int, positions: some Collection<Int>) {
        self.headDim = headDim
        let half = headDim / 2
        let invFreq = (0..<half).map { i in Foundation.pow(Double(base), -Double(2 * i) / Double(headDim)) }
        var c = [Float](repeating: 0, count: positions.count * half)
        var s = c
        for (r, p) in positions.enumerated() {
            for i in 0..<half {
                let a = Double(p) * invFreq[i]
                c[r * half + i] = Float(Foundation.cos(a))
                s[r * half + i] = Float(Foundation.sin(a))
            }
        }
        cos = c
        sin = s
    }

    /// Rotates `heads` heads of each of `rows` rows of x (rows of heads x headDim values).
    func apply(_ x: inout [Float], rows: Int, heads: Int, kernels: Kernels) throws {
        try x.withUnsafeMutableBufferPointer { xp in
            try cos.withUnsafeBufferPointer { cp in
                try sin.withUnsafeBufferPointer { sp in
                    try kernels.rope(
                        xp, rows: rows, heads: heads, headDim: headDim, rowStride: heads * headDim, cos: cp, sin: sp)
                }
            }
        }
    }
}
