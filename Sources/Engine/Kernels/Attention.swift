import CKernels

/// How attention turns scores into weights.
public enum ScoreFunction: Sendable, Equatable {
    /// exp(x - max) / sum.
    case softmax
    /// Power-Softmax: (x / (max|x| + delta))^p / (eps + sum (x / (max|x| + delta))^p), p even.
    /// For models trained with it (HE-friendly: polynomial but for one reciprocal).
    case power(p: Int = 4, eps: Float = 1e-6, delta: Float = 1e-6)
    /// Power-Softmax evaluated with polynomial operations only (an HE evaluator's form): scores
    /// divided by a public bound B >= |x| instead of the running max, and the one reciprocal by
    /// `iterations` Goldschmidt steps (ck_attention.h). Equals `.power` up to the eps term and the
    /// iteration error; runs on the serial reference kernel.
    case powerPolynomial(p: Int = 4, eps: Float = 1e-6, bound: Float, iterations: Int = 24)

    func params(scale: Float) throws(EngineError) -> ck_attention_params {
        switch self {
        case .softmax:
            return ck_attention_params(score: CK_SCORE_SOFTMAX, scale: scale, power: 0, eps: 0, delta: 0)
        case .power(let p, let eps, let delta):
            try require(p >= 2 && p <= 64 && p % 2 == 0, "Power-Softmax exponent must be even in 2...64, got \(p)")
            try require(eps >= 0 && eps.isFinite, "Power-Softmax eps must be finite and >= 0, got \(eps)")
            try require(delta > 0 && delta.isFinite, "Power-Softmax delta must be finite and > 0, got \(delta)")
            return ck_attention_params(score: CK_SCORE_POWER, scale: scale, power: Int32(p), eps: eps, delta: delta)
        case .powerPolynomial:
            throw EngineError.invalidArgument(
                "polynomial Power-Softmax runs through attentionPolynomial, not the fast kernels")
        }
    }

    func polyParams(scale: Float) throws(EngineError) -> ck_attention_poly_params? {
        guard case .powerPolynomial(let p, let eps, let bound, let it) = self else { return nil }
        try require(p >= 2 && p <= 64 && p % 2 == 0, "Power-Softmax exponent must be even in 2...64, got \(p)")
        try require(eps >= 0 && eps.isFinite, "Power-Softmax eps must be finite and >= 0, got \(eps)")
        try require(bound > 0 && bound.isFinite, "the score bound must be finite and > 0, got \(bound)")
        try require(it >= 1 && it <= 64, "Goldschmidt iterations must be in 1...64, got \(it)")
        return ck_attention_poly_params(scale: scale, power: Int32(p), eps: eps, bound: bound, iterations: Int32(it))
    }
}

/// Head layout of a multi-head attention with grouped-query (GQA) KV heads.
public struct AttentionShape: Sendable, Equatable {
    /// Query heads.
    public var heads: Int
    /// Key/value heads (heads is a multiple).
    public var kvHeads: Int
    /// Values per head.
    public var headDim: Int

    /// Throws unless heads is a positive multiple of kvHeads and headDim > 0.
    public init(heads: Int, kvHeads: Int, headDim: Int) throws(EngineError) {
        try require(
            heads > 0 && kvHeads > 0 && headDim > 0,
            "heads (\(heads)), kvHeads (\(kvHeads)) and headDim (\(headDim)) must be positive")
        try require(heads % kvHeads == 0, "heads (\(heads)) must be a multiple of kvHeads (\(kvHeads))")
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
    }

    /// Query heads per KV head.
    public var group: Int { heads / kvHeads }
    /// Default score scale 1/sqrt(headDim).
    public var defaultScale: Float { 1 / Float(headDim).squareRoot() }
}

extension Kernels {
    /// Causal attention over a prompt. Layouts (f32, token-major): q and out are T x heads x d;
    /// k and v are (start + T) x kvHeads x d, holding `start` earlier positions then the T new
    /// ones; query i sits at position start + i and sees keys 0...start+i.
    public func attentionPrefill(
        shape: AttentionShape, score: ScoreFunction = .softmax, scale: Float? = nil,
        q: UnsafeBufferPointer<Float>, k: UnsafeBufferPointer<Float>, v: UnsafeBufferPointer<Float>,
        start: Int = 0, into out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        var p = try score.params(scale: scale ?? shape.defaultScale)
        let (h, kvh, d, _) = (shape.heads, shape.kvHeads, shape.headDim, shape.group)
        try require(start >= 0, "start must be >= 0, got \(start)")
        try require(q.count % (h * d) == 0 && q.count > 0, "q has \(q.count) values, expected T x \(h) x \(d)")
        let T = q.count / (h * d)
        try require(k.count == (start + T) * kvh * d, "k has \(k.count) values, expected \(start + T) x \(kvh) x \(d)")
        try require(v.count == k.count, "v has \(v.count) values, expected \(k.count)")
        try require(out.count >= q.count, "out holds \(out.count) values, expected \(q.count)")
        try requireFinite(q, "q")
        try requireFinite(k, "k")
        try requireFinite(v, "v")
        // token-major: head j's rows start at j * d, one row per kvHeads * d floats
        try prefillUnits(
            &p, shape: shape, q: q, T: T, start: start, keys: k.baseAddress!, values: v.baseAddress!,
            headOffset: d, rowStride: kvh * d, out: out)
    }

    /// One decoding step: q (heads x d, f32) against `length` cached positions. The caches are
    /// head-major rows of `keyType` / `valueType`: KV head j, position t at byte offset
    /// (j * capacity + t) * rowBytes(d), capacity >= length (default: length). Head-major keeps
    /// each head's rows contiguous: a token-major cache (rows 4 KiB apart) streamed 6x slower
    /// here. With `int8Scores` the scaled queries are quantized to int8 blocks and scored with
    /// integer dots (keyType must be quantized). Long contexts are split across threads and the
    /// partial softmax states merged.
    public func attentionDecode(
        shape: AttentionShape, score: ScoreFunction = .softmax, scale: Float? = nil,
        q: UnsafeBufferPointer<Float>, keys: UnsafeRawBufferPointer, keyType: RowType,
        values: UnsafeRawBufferPointer, valueType: RowType, length T: Int, capacity: Int? = nil,
        int8Scores: Bool = false, into out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        var p = try score.params(scale: scale ?? shape.defaultScale)
        let (h, kvh, d, g) = (shape.heads, shape.kvHeads, shape.headDim, shape.group)
        try require(q.count == h * d, "q has \(q.count) values, expected \(h) x \(d)")
        try require(out.count >= h * d, "out holds \(out.count) values, expected \(h * d)")
        try require(T > 0, "the cache is empty: decoding needs at least one cached position")
        let cap = capacity ?? T
        try require(cap >= T, "capacity (\(cap)) must be at least the length (\(T))")
        let kb = try keyType.rowBytes(d)
        let vbytes = try valueType.rowBytes(d)
        try require(
            keys.count >= cap * kvh * kb,
            "keys hold \(keys.count) bytes, need \(cap * kvh * kb) for \(kvh) heads x \(cap) positions")
        try require(values.count >= cap * kvh * vbytes, "values hold \(values.count) bytes, need \(cap * kvh * vbytes)")
        try require(!int8Scores || keyType.isQuantized, "int8 scores need a quantized key type, got \(keyType)")
        try requireFinite(q, "q")
        let table = attentionTable
        // Split long contexts so both cores stream the cache; short ones are not worth it.
        let chunks = (T >= 2048 && threads > 1) ? max(1, min(threads * 2 / max(1, min(kvh, threads)), T / 1024)) : 1
        let units = kvh * chunks
        let maxChunk = Threads.range(T, parts: chunks, index: 0).count + 1
        let scratchBytes = ck_attention_decode_scratch_bytes(maxChunk, g, d)
        let qb = q.baseAddress!
        let kbase = keys.baseAddress!
        let vbase = values.baseAddress!
        // Per-unit partial states and scores live in per-thread scratch (ThreadScratch):
        // a decode step allocates nothing once the scratch has grown to its size.
        let floats = units * (g * d + 2 * g)
        let stateBytes = floats * 4 + units * MemoryLayout<ck_status>.stride
        let bad: ck_status = ThreadScratch.with(slot: 0, bytes: stateBytes) { raw in
            let po = raw.bindMemory(to: Float.self, capacity: floats)
            let pm = po + units * g * d
            let pl = pm + units * g
            do {
                let stp = UnsafeMutableBufferPointer(
                    start: (raw + floats * 4).bindMemory(to: ck_status.self, capacity: units), count: units)
                stp.initialize(repeating: CK_OK)
                // Threads pay from ~32k cached values on (hand-off through the spinning pool).
                let t = T * kvh * d >= 1 << 15 ? threads : 1
                Threads.parallelFor(units, threads: t) { u in
                    let head = u / chunks
                    let r = Threads.range(T, parts: chunks, index: u % chunks)
                    ThreadScratch.with(slot: 1, bytes: scratchBytes) { scratch in
                        stp[u] = ck_attention_decode_partial(
                            table, &p, qb + head * g * d, g, d,
                            keyType.c, kbase + (head * cap + r.lowerBound) * kb, kb,
                            valueType.c, vbase + (head * cap + r.lowerBound) * vbytes, vbytes,
                            r.count, int8Scores, scratch,
                            po + u * g * d, pm + u * g, pl + u * g)
                    }
                }
                if let bad = stp.first(where: { $0 != CK_OK }) { return bad }
                // Gather each head's chunks (stored head-major, chunk-minor) and merge.
                for head in 0..<kvh {
                    let base = head * chunks
                    ck_attention_merge(
                        &p, g, d, chunks, po + base * g * d, pm + base * g, pl + base * g,
                        out.baseAddress! + head * g * d)
                }
                return CK_OK
            }
        }
        if bad != CK_OK {
            try EngineError.check(bad, "attention decode arguments")
        }
    }
}

extension Kernels {
    /// Causal prefill against a head-major f32 cache (kvHeads x capacity x d) that already holds
    /// positions 0..<start+T (the T new ones included). q and out are T x heads x d.
    public func attentionPrefillCached(
        shape: AttentionShape, score: ScoreFunction = .softmax, scale: Float? = nil,
        q: UnsafeBufferPointer<Float>, keys: UnsafeBufferPointer<Float>,
        values: UnsafeBufferPointer<Float>, capacity: Int, start: Int,
        into out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        var p = try score.params(scale: scale ?? shape.defaultScale)
        let d = shape.headDim
        let T = try Self.cachedTokens(
            shape: shape, q: q.count, keys: keys.count, values: values.count, capacity: capacity, start: start,
            out: out.count)
        // head-major: head j's rows start at j * capacity * d, contiguous
        try prefillUnits(
            &p, shape: shape, q: q, T: T, start: start, keys: keys.baseAddress!, values: values.baseAddress!,
            headOffset: capacity * d, rowStride: d, out: out)
    }

    /// Runs prefill over (KV head, row block) units. Unit u takes every units-th pair:
    /// interleaving balances the causal triangle, and each unit needs only its own scratch.
    private func prefillUnits(
        _ p: inout ck_attention_params, shape: AttentionShape, q: UnsafeBufferPointer<Float>, T: Int, start: Int,
        keys: UnsafePointer<Float>, values: UnsafePointer<Float>, headOffset: Int, rowStride: Int,
        out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        let (h, kvh, d, g) = (shape.heads, shape.kvHeads, shape.headDim, shape.group)
        let table = attentionTable
        let nblocks = (T + Int(CK_ATTN_BQ) - 1) / Int(CK_ATTN_BQ)
        let units = min(threads, nblocks * kvh)
        let scratchBytes = ck_attention_prefill_scratch_bytes(g, d)
        var status = [ck_status](repeating: CK_OK, count: units) // one slot per unit: no shared writes
        let qb = q.baseAddress!
        let ob = out.baseAddress!
        let params = p
        status.withUnsafeMutableBufferPointer { stp in
            Threads.parallelFor(units, threads: units) { u in
                var pp = params
                withUnsafeTemporaryAllocation(byteCount: scratchBytes, alignment: 64) { scratch in
                    var item = u
                    while item < nblocks * kvh {
                        let head = item % kvh
                        let blk = item / kvh
                        let r0 = blk * Int(CK_ATTN_BQ)
                        let r1 = min(T, r0 + Int(CK_ATTN_BQ))
                        let st = ck_attention_prefill(
                            table, &pp, qb + head * g * d, h * d, T, r0, r1, g, d, start,
                            keys + head * headOffset, rowStride, values + head * headOffset, rowStride,
                            ob + head * g * d, h * d, scratch.baseAddress!)
                        if st != CK_OK { stp[u] = st }
                        item += units
                    }
                }
            }
        }
        try EngineError.check(status.first { $0 != CK_OK } ?? CK_OK, "attention prefill parameters")
    }
}

extension Kernels {
    /// Causal attention with polynomial-only Power-Softmax (`ScoreFunction.powerPolynomial`)
    /// against a head-major f32 cache (kvHeads x capacity x d) holding positions 0..<start+T.
    /// q and out are T x heads x d. Serial reference: an evaluation mode, not a fast path.
    public func attentionPolynomial(
        shape: AttentionShape, score: ScoreFunction, scale: Float? = nil,
        q: UnsafeBufferPointer<Float>, keys: UnsafeBufferPointer<Float>,
        values: UnsafeBufferPointer<Float>, capacity: Int, start: Int,
        into out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        guard var p = try score.polyParams(scale: scale ?? shape.defaultScale) else {
            throw EngineError.invalidArgument("attentionPolynomial needs ScoreFunction.powerPolynomial, got \(score)")
        }
        let (h, d, g) = (shape.heads, shape.headDim, shape.group)
        let T = try Self.cachedTokens(
            shape: shape, q: q.count, keys: keys.count, values: values.count, capacity: capacity, start: start,
            out: out.count)
        var scratch = [Float](repeating: 0, count: start + T)
        for i in 0..<T {
            for head in 0..<h {
                let kv = head / g
                let base = (i * h + head) * d
                let st = ck_attention_power_poly_row(
                    &p, q.baseAddress! + base, d, keys.baseAddress! + kv * capacity * d, d,
                    values.baseAddress! + kv * capacity * d, d, start + i + 1, &scratch, out.baseAddress! + base)
                try EngineError.check(st, "polynomial Power-Softmax attention")
            }
        }
    }

    /// Checks the sizes of a head-major cached attention call; returns T, the query positions.
    static func cachedTokens(
        shape: AttentionShape, q: Int, keys: Int, values: Int, capacity: Int, start: Int, out: Int
    ) throws(EngineError) -> Int {
        let (h, kvh, d) = (shape.heads, shape.kvHeads, shape.headDim)
        try require(q % (h * d) == 0 && q > 0, "q has \(q) values, expected T x \(h) x \(d)")
        let T = q / (h * d)
        try require(
            start >= 0 && start + T <= capacity,
            "positions \(start)..<\(start + T) exceed the cache capacity \(capacity)")
        try require(
            keys >= kvh * capacity * d && values >= kvh * capacity * d, "cache smaller than \(kvh) x \(capacity) x \(d)"
        )
        try require(out >= q, "out holds \(out) values, expected \(q)")
        return T
    }
}
