import CKernels

/// The storage type of a KV cache.
public enum KVCacheType: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Dense f32 (the reference).
    case f32
    /// Dense IEEE half.
    case f16
    /// Blocks of 32 int8 values with an f16 scale (GGUF Q8_0), per token.
    case q8_0
    /// Blocks of 32 4-bit values with an f16 scale (GGUF Q4_0, llama.cpp's q4_0 cache), per token.
    case q4_0
    /// KIVI 4-bit: keys per channel in groups of 32 tokens, values per token (Q4_1 blocks), both
    /// asymmetric (f16 scale and minimum); the most recent tokens in f16.
    case q4
    /// KIVI 2-bit, arranged like `q4` (values in Q2_1 blocks).
    case q2
    /// MiKV-style mixed precision: every position in KIVI 2-bit (as `q2`), and the positions whose
    /// accumulated attention marks them important (`KVCacheConfig.important` of them) also in
    /// Q8_0, which attention reads instead; the most recent tokens in f16.
    case mikv
    /// H2O-style eviction at the bytes `mikv` takes: the important positions in f16, the others
    /// dropped; the most recent tokens in f16.
    case h2o

    /// The type's name.
    public var description: String { rawValue }

    /// Parses a name as the CLI and the server accept it.
    public static func named(_ s: String) throws(EngineError) -> KVCacheType {
        guard let t = KVCacheType(rawValue: s.lowercased()) else {
            throw EngineError.invalidArgument(
                "unknown KV cache type '\(s)' (expected one of: \(allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return t
    }

    /// Whether the type keeps a recent window in f16 (`KVCacheConfig.window`).
    public var isKIVI: Bool { self == .q4 || self == .q2 || isMixed }

    /// Whether the type keeps an importance-selected set of positions (mikv, h2o).
    public var isMixed: Bool { self == .mikv || self == .h2o }

    /// Bits of the quantized codes for the KIVI types (mikv: its low-precision part).
    var kiviBits: Int32 { self == .q4 ? 4 : 2 }

    /// Row type of the per-token types (f32, f16, q8_0, q4_0); nil for the KIVI types.
    public var rowType: RowType? {
        switch self {
        case .f32: .f32
        case .f16: .f16
        case .q8_0: .q8_0
        case .q4_0: .q4_0
        case .q4, .q2, .mikv, .h2o: nil
        }
    }

    /// Bytes one token takes in one layer of `kvHeads` heads of `headDim` values, keys and
    /// values, once quantized (the KIVI window's f16 tokens not counted; mikv and h2o at the
    /// default `KVCacheConfig.important`, see `KVCacheConfig.bytesPerToken`).
    public func bytesPerToken(kvHeads: Int, headDim: Int) -> Int {
        KVCacheConfig(type: self).bytesPerToken(kvHeads: kvHeads, headDim: headDim)
    }

    /// Bytes of the low-precision (KIVI) part of one position in one KV head.
    func kiviBytes(headDim: Int) -> Int {
        let keys = ck_kivi_group_bytes(kiviBits, headDim) / Int(CK_KIVI_G)
        return keys + ck_qmatmul_row_bytes(kiviBits == 4 ? RowType.q4_1.c : RowType.q2_1.c, headDim)
    }
}

/// A KV cache's type and options.
public struct KVCacheConfig: Sendable, Equatable {
    /// Storage type.
    public var type: KVCacheType
    /// KIVI types: the most recent tokens kept in f16 (at least this many, fewer than this many
    /// plus 32, once the cache holds that many).
    public var window: Int

    /// Default window of the KIVI types (as in the KIVI paper's residual length).
    public static let defaultWindow = 128

    /// mikv: the fraction of the positions outside the f16 window that also keep a Q8_0 copy
    /// (the most attended ones); h2o keeps the positions that fit in the same bytes, in f16.
    public var important: Double

    /// Default `important` fraction.
    public static let defaultImportant = 0.1

    /// Quantized types: how attention scores meet the quantized keys: `.exact` (f32 queries
    /// times keys dequantized in registers) or `.int8` (integer dot products: q8_0 / q4_0 quantize
    /// the query once per step to int8 blocks, as llama.cpp does for quantized K caches; q4 / q2
    /// quantize the query times each key group's channel scales once per group).
    public var scores: Numerics

    /// Per-token types (f32, f16, q8_0, q4_0): keep the cache within a RAM budget by writing older
    /// blocks to disk and attending to the best-matching ones (`OffloadKVCache`); nil keeps it all
    /// in RAM.
    public var offload: KVOffload?

    /// A cache configuration; see each property.
    public init(
        type: KVCacheType = .f32, window: Int = KVCacheConfig.defaultWindow, scores: Numerics = .exact,
        offload: KVOffload? = nil, important: Double = KVCacheConfig.defaultImportant
    ) {
        self.type = type
        self.window = window
        self.scores = scores
        self.offload = offload
        self.important = important
    }

    /// Bytes one token takes in one layer of `kvHeads` heads of `headDim` values, keys and
    /// values, once outside the f16 window: mikv counts its 2-bit part and, for the `important`
    /// fraction, a Q8_0 key and value row and 8 bytes of position and accumulated attention;
    /// h2o is given the same bytes (rounded down); the KIVI window's f16 tokens are not counted.
    public func bytesPerToken(kvHeads: Int, headDim: Int) -> Int {
        if let r = type.rowType { return 2 * kvHeads * ck_qmatmul_row_bytes(r.c, headDim) }
        if type.isMixed { return Int((Double(kvHeads) * mikvBytesPerHead(headDim: headDim)).rounded(.down)) }
        return kvHeads * type.kiviBytes(headDim: headDim)
    }

    /// The fraction of the positions outside the window that keep a high-precision copy: mikv
    /// `important`; h2o as many f16 positions as fit in mikv's bytes (at most all).
    func keptFraction(headDim: Int) -> Double {
        if type == .mikv { return important }
        return min(1, mikvBytesPerHead(headDim: headDim) / Double(MixedSet.slotBytes(.f16, headDim: headDim)))
    }

    /// mikv's bytes per position and KV head: the 2-bit part and `important` Q8_0 slots.
    private func mikvBytesPerHead(headDim: Int) -> Double {
        Double(KVCacheType.mikv.kiviBytes(headDim: headDim)) + important
            * Double(MixedSet.slotBytes(.q8_0, headDim: headDim))
    }

    /// The dense f32 cache.
    public static let f32 = KVCacheConfig()

    /// Throws unless the options suit a model with `headDim` values per head and a context of
    /// `context` tokens (when given: the window must fit in it); int8 scores need a quantized type.
    public func validate(context: Int?, headDim: Int) throws(EngineError) {
        try require(window >= 0, "the KV window must be non-negative, got \(window)")
        try require(
            scores == .exact || (type != .f32 && type != .f16 && !type.isMixed),
            "int8 key scores need a quantized KV cache type (q8_0, q4_0, q4 or q2), got \(type)")
        try require(
            important.isFinite && important >= 0 && important <= 1,
            "the important fraction must be in 0...1, got \(important)")
        if type.isKIVI, let context {
            try require(
                window <= context, "the KV window (\(window) tokens) is larger than the context (\(context) tokens)")
        }
        if let offload {
            try require(
                type.rowType != nil,
                "disk offload works with the per-token cache types (f32, f16, q8_0, q4_0), not \(type)")
            try require(
                offload.blocks >= 1 && offload.blocks <= KVOffload.maxBlocks,
                "KV blocks per step must be in 1...\(KVOffload.maxBlocks), got \(offload.blocks)")
            try require(offload.budgetBytes > 0, "the KV budget must be positive")
        }
        if type != .f32 && type != .f16 {
            try require(headDim % 32 == 0, "\(type) caches need a head size that is a multiple of 32, got \(headDim)")
        }
    }
}

/// Per-token caches of one row type (f16, q8_0, q4_0; f32 works too), head-major per layer.
/// Attention reads the stored rows directly (the decode kernel, one query row at a time for
/// prefill, so a prompt processed at once sees exactly the cache a token-by-token pass sees).
public final class RowKVCache: KVCache, @unchecked Sendable {
    /// Most positions the cache can hold.
    public let capacity: Int
    /// Positions filled so far.
    public private(set) var length = 0
    /// Storage type.
    public let type: RowType
    /// Whether scores use int8-quantized queries (`KVCacheConfig.scores`).
    public let int8Scores: Bool
    let kvHeads: Int
    let headDim: Int
    let rowBytes: Int
    let kernels: Kernels
    var keys: [[UInt8]]
    var values: [[UInt8]]

    /// A cache of `layers` layers for up to `capacity` positions, rows of `type`.
    public init(
        layers: Int, kvHeads: Int, headDim: Int, capacity: Int, type: RowType, int8Scores: Bool = false,
        kernels: Kernels
    ) throws {
        try require(!int8Scores || type.isQuantized, "int8 scores need a quantized cache type, got \(type)")
        self.int8Scores = int8Scores
        try require(layers > 0 && kvHeads > 0 && headDim > 0 && capacity > 0, "cache dimensions must be positive")
        self.capacity = capacity
        self.type = type
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.rowBytes = try type.rowBytes(headDim)
        self.kernels = kernels
        let bytes = try CheckedSize.product(kvHeads, capacity, rowBytes, what: "KV cache layer")
        keys = Array(repeating: [UInt8](repeating: 0, count: bytes), count: layers)
        values = keys
    }

    /// Bytes the cache holds (allocated for its whole capacity).
    public var memoryBytes: Int { (keys.count + values.count) * kvHeads * capacity * rowBytes }

    /// Drops positions from `newLength` on.
    public func trim(to newLength: Int) throws {
        try require(newLength >= 0 && newLength <= length, "cannot trim a cache of \(length) positions to \(newLength)")
        length = newLength
    }

    /// Marks positions ..< newLength as filled, once every layer has appended them.
    public func advance(to newLength: Int) throws {
        try require(newLength >= length && newLength <= capacity, "cannot advance to \(newLength) of \(capacity)")
        length = newLength
    }

    /// Stores token-major keys and values (count x kvHeads x headDim) of one layer at positions
    /// start ..< start + count.
    public func append(layer: Int, keys k: [Float], values v: [Float], at start: Int, count: Int) throws {
        let hd = headDim
        try require(layer >= 0 && layer < keys.count, "layer \(layer) out of range")
        try require(start >= 0 && start + count <= capacity, "positions \(start)..<\(start + count) exceed \(capacity)")
        try require(k.count >= count * kvHeads * hd && v.count >= count * kvHeads * hd, "too few key/value values")
        let quantize = kernels.qmatmulTable.pointee.quantize!
        let (rb, cap, c) = (rowBytes, capacity, type.c)
        k.withUnsafeBufferPointer { kp in
            v.withUnsafeBufferPointer { vp in
                keys[layer].withUnsafeMutableBytes { kc in
                    values[layer].withUnsafeMutableBytes { vc in
                        forEachAppendedRow(count: count, kvHeads: kvHeads, headDim: hd, rowsPerHead: cap, at: start) {
                            quantize(c, kp.baseAddress! + $0, hd, kc.baseAddress! + $1 * rb)
                            quantize(c, vp.baseAddress! + $0, hd, vc.baseAddress! + $1 * rb)
                        }
                    }
                }
            }
        }
    }

    /// Causal attention of the queries of positions start ..< start + count over the layer's stored rows.
    public func attend(
        layer l: Int, shape: AttentionShape, score: ScoreFunction, q: UnsafeBufferPointer<Float>, start: Int,
        count: Int, into out: UnsafeMutableBufferPointer<Float>, kernels k: Kernels
    ) throws {
        if case .powerPolynomial = score {
            throw EngineError.invalidArgument("the polynomial Power-Softmax evaluation needs an f32 KV cache")
        }
        let row = shape.heads * shape.headDim
        try require(q.count >= count * row && out.count >= count * row, "q/out hold fewer than \(count) rows")
        try keys[l].withUnsafeBytes { kc in
            try values[l].withUnsafeBytes { vc in
                for i in 0..<count {
                    try k.attentionDecode(
                        shape: shape, score: score, q: UnsafeBufferPointer(rebasing: q[(i * row)..<((i + 1) * row)]),
                        keys: kc, keyType: type, values: vc, valueType: type, length: start + i + 1,
                        capacity: capacity, int8Scores: int8Scores,
                        into: UnsafeMutableBufferPointer(rebasing: out[(i * row)..<((i + 1) * row)]))
                }
            }
        }
    }
}

/// KIVI-style cache (q4, q2): per layer and KV head, keys quantized per channel in groups of 32
/// tokens (`ck_kivi_*` layout) and values per token (Q4_1 / Q2_1 rows), plus the most recent
/// tokens in f16. With L positions filled, tokens below q(L) = 32 * floor((L - R) / 32) (0 when
/// L < R) are read quantized, the rest from the f16 window: at least R, fewer than R + 32.
/// Row i of a prompt processed at once attends with the boundary q(start + i + 1), exactly what
/// a token-by-token pass would see.
///
/// The mixed types (mikv, h2o) add an importance-selected set per layer and KV head (`MixedSet`,
/// MixedKVCache.swift); their groups are quantized and selected row by row in `attend`.
public final class KIVIKVCache: KVCache, @unchecked Sendable {
    /// Most positions the cache can hold.
    public let capacity: Int
    /// Positions filled so far.
    public private(set) var length = 0
    /// Storage type.
    public let type: KVCacheType
    /// f16 window (tokens).
    public let window: Int
    /// Whether key scores use int8 queries per group and integer dots (`KVCacheConfig.scores`).
    public let int8Scores: Bool
    let layers: Int
    let kvHeads: Int
    let headDim: Int
    let bits: Int32
    let groupBytes: Int
    let valueType: RowType
    let valueRowBytes: Int
    let kernels: Kernels
    /// per layer: kvHeads x maxGroups x groupBytes
    var keyGroups: [[UInt8]]
    /// per layer: kvHeads x capacity x valueRowBytes
    var valueRows: [[UInt8]]
    /// per layer, f16 keys and values of positions windowStart ..< windowStart + windowCap
    /// (kvHeads x windowCap x headDim each)
    var windowKeys: [[UInt16]]
    var windowValues: [[UInt16]]
    var windowCap: Int
    /// First position held in the f16 window (a multiple of 32).
    private(set) var windowStart = 0
    /// per layer: groups quantized so far (mikv, h2o: quantized and selected)
    var quantizedGroups: [Int]
    /// mikv, h2o: per layer, the high-precision positions and the accumulated attention
    var mixed: [MixedSet] = []
    /// mikv, h2o: the fraction of positions outside the window that keep a high-precision copy
    let keptFraction: Double

    /// A cache for `layers` layers of `kvHeads` heads of `headDim` values, `capacity` positions.
    public init(layers: Int, kvHeads: Int, headDim: Int, capacity: Int, config: KVCacheConfig, kernels: Kernels) throws
    {
        try require(config.type.isKIVI, "\(config.type) is not a KIVI cache type")
        try require(layers > 0 && kvHeads > 0 && headDim > 0 && capacity > 0, "cache dimensions must be positive")
        try config.validate(context: nil, headDim: headDim)
        self.capacity = capacity
        self.type = config.type
        self.window = config.window
        self.int8Scores = config.scores == .int8
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.bits = config.type.kiviBits
        self.keptFraction = config.type.isMixed ? config.keptFraction(headDim: headDim) : 0
        self.groupBytes = ck_kivi_group_bytes(bits, headDim)
        self.valueType = bits == 4 ? .q4_1 : .q2_1
        self.valueRowBytes = try valueType.rowBytes(headDim)
        self.kernels = kernels
        let maxGroups = capacity / Int(CK_KIVI_G)
        let lowStore = config.type != .h2o
        let kb = lowStore ? try CheckedSize.product(kvHeads, max(1, maxGroups), groupBytes, what: "KV cache layer") : 0
        let vb = lowStore ? try CheckedSize.product(kvHeads, capacity, valueRowBytes, what: "KV cache layer") : 0
        keyGroups = Array(repeating: [UInt8](repeating: 0, count: kb), count: layers)
        valueRows = Array(repeating: [UInt8](repeating: 0, count: vb), count: layers)
        windowCap = min(capacity, config.window + Int(CK_KIVI_G) + 128)
        let wb = try CheckedSize.product(kvHeads, windowCap, headDim, what: "KV cache window")
        windowKeys = Array(repeating: [UInt16](repeating: 0, count: wb), count: layers)
        windowValues = windowKeys
        quantizedGroups = Array(repeating: 0, count: layers)
        if config.type.isMixed {
            let slots = Int((keptFraction * Double(maxGroups * Int(CK_KIVI_G))).rounded(.down)) + 1
            mixed = try (0..<layers).map { _ in
                try MixedSet(
                    type: config.type == .mikv ? .q8_0 : .f16, kvHeads: kvHeads, headDim: headDim, slots: slots,
                    windowCap: windowCap)
            }
        }
    }

    /// Positions below this are read quantized when `filled` positions are in the cache.
    func quantizedEnd(_ filled: Int) -> Int {
        let g = Int(CK_KIVI_G)
        return filled < window ? 0 : g * ((filled - window) / g)
    }

    /// Bytes the cache holds (allocated for its whole capacity).
    public var memoryBytes: Int {
        (keyGroups.first?.count ?? 0) * layers + (valueRows.first?.count ?? 0) * layers + 2 * layers * kvHeads
            * windowCap * headDim * 2 + mixed.reduce(0) { $0 + $1.memoryBytes }
    }

    /// Drops positions from `newLength` on.
    public func trim(to newLength: Int) throws {
        try require(newLength >= 0 && newLength <= length, "cannot trim a cache of \(length) positions to \(newLength)")
        if type.isMixed && newLength != length {
            // Accumulated attention includes the dropped positions' queries; only a reset is exact.
            try require(newLength == 0, "a \(type) KV cache can only be trimmed to 0 positions (reset)")
            length = 0
            windowStart = 0
            for l in 0..<layers {
                quantizedGroups[l] = 0
                mixed[l].reset()
            }
            return
        }
        // Positions that a shorter cache would read from f16 are gone from the window once quantized.
        try require(
            quantizedEnd(newLength) >= windowStart,
            "cannot trim a \(type) KV cache to \(newLength) positions: its f16 window starts at \(windowStart)")
        length = newLength
        let groups = quantizedEnd(newLength) / Int(CK_KIVI_G)
        for l in 0..<layers { quantizedGroups[l] = min(quantizedGroups[l], groups) }
    }

    /// Marks positions ..< newLength as filled, once every layer has appended them.
    public func advance(to newLength: Int) throws {
        try require(newLength >= length && newLength <= capacity, "cannot advance to \(newLength) of \(capacity)")
        if type.isMixed {
            for l in 0..<layers { try quantizeMixed(layer: l, groups: quantizedEnd(newLength) / Int(CK_KIVI_G)) }
        }
        length = newLength
        let newStart = quantizedEnd(newLength)
        if newStart > windowStart {
            let shift = newStart - windowStart
            let keep = newLength - newStart
            for l in 0..<layers {
                for h in 0..<kvHeads {
                    let base = h * windowCap * headDim
                    windowKeys[l].withUnsafeMutableBufferPointer { p in
                        (p.baseAddress! + base).update(
                            from: p.baseAddress! + base + shift * headDim, count: keep * headDim)
                    }
                    windowValues[l].withUnsafeMutableBufferPointer { p in
                        (p.baseAddress! + base).update(
                            from: p.baseAddress! + base + shift * headDim, count: keep * headDim)
                    }
                }
                if !mixed.isEmpty { mixed[l].shiftWindow(by: shift, keep: keep, windowCap: windowCap) }
            }
            windowStart = newStart
        }
        // A long prompt step grew the window; once its rows are quantized, give the memory back.
        if windowCap > 2 * baseWindowCap && newLength - windowStart <= baseWindowCap {
            try resizeWindow(baseWindowCap)
        }
    }

    /// Window rows a cache keeps allocated between steps: the window, a group being filled and
    /// one prompt chunk of engine serve's default size.
    var baseWindowCap: Int { min(capacity, window + Int(CK_KIVI_G) + 128) }

    /// Grows the f16 window so it holds positions windowStart ..< end.
    private func reserveWindow(_ end: Int) throws {
        let need = end - windowStart
        if need <= windowCap { return }
        try resizeWindow(min(capacity, max(need, windowCap * 2)))
    }

    /// Reallocates the f16 window to `newCap` rows per head, keeping the rows in use.
    private func resizeWindow(_ newCap: Int) throws {
        let keep = min(newCap, windowCap) * headDim
        let wb = try CheckedSize.product(kvHeads, newCap, headDim, what: "KV cache window")
        for l in 0..<layers {
            for arr in [0, 1] {
                let old = arr == 0 ? windowKeys[l] : windowValues[l]
                var a = [UInt16](repeating: 0, count: wb)
                for h in 0..<kvHeads {
                    for i in 0..<keep { a[h * newCap * headDim + i] = old[h * windowCap * headDim + i] }
                }
                if arr == 0 { windowKeys[l] = a } else { windowValues[l] = a }
            }
            if !mixed.isEmpty { mixed[l].resizeWindow(from: windowCap, to: newCap) }
        }
        windowCap = newCap
    }

    /// Stores token-major keys and values (count x kvHeads x headDim) of one layer at positions
    /// start ..< start + count.
    public func append(layer l: Int, keys k: [Float], values v: [Float], at start: Int, count: Int) throws {
        let hd = headDim
        try require(l >= 0 && l < layers, "layer \(l) out of range")
        try require(
            start >= windowStart && start + count <= capacity,
            "positions \(start)..<\(start + count) exceed \(capacity)")
        try require(k.count >= count * kvHeads * hd && v.count >= count * kvHeads * hd, "too few key/value values")
        try reserveWindow(start + count)
        let (wc, ws) = (windowCap, windowStart)
        let toF16 = kernels.vecTable.pointee.to_f16! // round to nearest even, as Float16(x)
        k.withUnsafeBufferPointer { kp in
            v.withUnsafeBufferPointer { vp in
                windowKeys[l].withUnsafeMutableBufferPointer { kw in
                    windowValues[l].withUnsafeMutableBufferPointer { vw in
                        forEachAppendedRow(count: count, kvHeads: kvHeads, headDim: hd, rowsPerHead: wc, at: start - ws)
                        {
                            toF16(kp.baseAddress! + $0, kw.baseAddress! + $1 * hd, hd)
                            toF16(vp.baseAddress! + $0, vw.baseAddress! + $1 * hd, hd)
                        }
                    }
                }
            }
        }
        // Quantize the groups the rows of this step will read quantized (q(start + count)); the
        // mixed types do it row by row in attend, where the selection sees each row's attention.
        if type.isMixed {
            mixed[l].appendedEnd = start + count
            return
        }
        let target = quantizedEnd(start + count) / Int(CK_KIVI_G)
        while quantizedGroups[l] < target {
            try quantizeGroup(layer: l, group: quantizedGroups[l])
            quantizedGroups[l] += 1
        }
    }

    /// Quantizes group `grp` of layer `l` from the f16 window: keys per channel, values per token.
    func quantizeGroup(layer l: Int, group grp: Int) throws {
        let (hd, wc, ws, G) = (headDim, windowCap, windowStart, Int(CK_KIVI_G))
        let maxGroups = capacity / G
        var rows = [Float](repeating: 0, count: G * hd)
        let quantizeRow = kernels.qmatmulTable.pointee.quantize!
        for h in 0..<kvHeads {
            // keys: the group's 32 f16 rows, per channel
            precondition(
                grp * G >= ws && (h * wc + grp * G + G - ws) * hd <= windowKeys[l].count,
                "KIVI group outside its window")
            windowKeys[l].withUnsafeBufferPointer { kw in
                rows.withUnsafeMutableBufferPointer { r in
                    for t in 0..<G {
                        kernels.floatsFromFloat16Unchecked(
                            kw.baseAddress! + (h * wc + grp * G + t - ws) * hd, into: r.baseAddress! + t * hd, count: hd
                        )
                    }
                }
            }
            let st = rows.withUnsafeBufferPointer { r in
                keyGroups[l].withUnsafeMutableBytes { kg in
                    ck_kivi_quantize_keys(
                        bits, hd, r.baseAddress!, hd, kg.baseAddress! + (h * maxGroups + grp) * groupBytes)
                }
            }
            try EngineError.check(st, "KIVI key quantization (keys must be finite and within the f16 range)")
            // values: per token
            for t in 0..<G {
                windowValues[l].withUnsafeBufferPointer { vw in
                    rows.withUnsafeMutableBufferPointer {
                        kernels.floatsFromFloat16Unchecked(
                            vw.baseAddress! + (h * wc + grp * G + t - ws) * hd, into: $0.baseAddress!, count: hd)
                    }
                }
                rows.withUnsafeBufferPointer { r in
                    valueRows[l].withUnsafeMutableBytes { vr in
                        quantizeRow(
                            valueType.c, r.baseAddress!, hd,
                            vr.baseAddress! + (h * capacity + grp * G + t) * valueRowBytes)
                    }
                }
            }
        }
    }

    /// Causal attention of the queries of positions start ..< start + count over the layer's stored rows.
    public func attend(
        layer l: Int, shape: AttentionShape, score: ScoreFunction, q: UnsafeBufferPointer<Float>, start: Int,
        count: Int, into out: UnsafeMutableBufferPointer<Float>, kernels k: Kernels
    ) throws {
        if case .powerPolynomial = score {
            throw EngineError.invalidArgument("the polynomial Power-Softmax evaluation needs an f32 KV cache")
        }
        if type.isMixed {
            try attendMixed(
                layer: l, shape: shape, score: score, q: q, start: start, count: count, into: out, kernels: k)
            return
        }
        var p = try score.params(scale: shape.defaultScale)
        let (h, kvh, d, g) = (shape.heads, shape.kvHeads, shape.headDim, shape.group)
        try require(kvh == kvHeads && d == headDim, "attention shape does not match the cache")
        try require(q.count >= count * h * d && out.count >= count * h * d, "q/out hold fewer than \(count) rows")
        try require(start >= windowStart && start + count <= capacity, "positions out of range")
        try requireFinite(UnsafeBufferPointer(rebasing: q[0..<(count * h * d)]), "q")
        let G = Int(CK_KIVI_G)
        let maxGroups = capacity / G
        let lastGroups = quantizedEnd(start + count) / G
        try require(lastGroups <= quantizedGroups[l], "the layer's keys were not appended before attention")
        // Long contexts split the quantized groups so both cores stream the cache.
        let chunks = (lastGroups * G >= 2048 && k.threads > 1) ? 2 : 1
        let parts = chunks + 1
        let units = count * kvh
        let floats = units * parts * (g * d + 2 * g)
        let stateBytes = floats * 4 + units * parts * MemoryLayout<ck_status>.stride
        let scratchBytes = max(
            ck_attention_kivi_scratch_bytes(lastGroups / chunks + 1, g, d),
            ck_attention_decode_scratch_bytes(window + G + count, g, d))
        let table = k.attentionTable
        let (gb, vrb, wc, ws, bitsC, vt) = (groupBytes, valueRowBytes, windowCap, windowStart, bits, valueType.c)
        let i8 = int8Scores
        let qb = q.baseAddress!
        let ob = out.baseAddress!
        let bad: ck_status = keyGroups[l].withUnsafeBytes { kg in
            valueRows[l].withUnsafeBytes { vr in
                windowKeys[l].withUnsafeBytes { wk in
                    windowValues[l].withUnsafeBytes { wv in
                        ThreadScratch.with(slot: 0, bytes: stateBytes) { raw in
                            let po = raw.bindMemory(to: Float.self, capacity: floats)
                            let pm = po + units * parts * g * d
                            let pl = pm + units * parts * g
                            let stp = UnsafeMutableBufferPointer(
                                start: (raw + floats * 4).bindMemory(to: ck_status.self, capacity: units * parts),
                                count: units * parts)
                            stp.initialize(repeating: CK_OK)
                            let work = units * parts
                            let t = (start + count) * kvh * d * count >= 1 << 15 ? k.threads : 1
                            let params = p
                            Threads.parallelFor(work, threads: t) { w in
                                var p = params
                                let u = w / parts
                                let part = w % parts
                                let row = u / kvh
                                let head = u % kvh
                                let filled = start + row + 1
                                let qEnd = self.quantizedEnd(filled)
                                let qrow = qb + row * h * d + head * g * d
                                let so = po + w * g * d
                                ThreadScratch.with(slot: 1, bytes: scratchBytes) { scratch in
                                    if part < chunks {
                                        let r = Threads.range(qEnd / G, parts: chunks, index: part)
                                        stp[w] = ck_attention_kivi_partial(
                                            table, &p, qrow, g, d, bitsC,
                                            kg.baseAddress! + (head * maxGroups + r.lowerBound) * gb, r.count, vt,
                                            vr.baseAddress! + (head * self.capacity + r.lowerBound * G) * vrb, vrb,
                                            i8, scratch, so, pm + w * g, pl + w * g)
                                    } else {
                                        let off = (head * wc + qEnd - ws) * d * 2
                                        stp[w] = ck_attention_decode_partial(
                                            table, &p, qrow, g, d, RowType.f16.c, wk.baseAddress! + off, d * 2,
                                            RowType.f16.c, wv.baseAddress! + off, d * 2, filled - qEnd, false,
                                            scratch, so, pm + w * g, pl + w * g)
                                    }
                                }
                            }
                            if let bad = stp.first(where: { $0 != CK_OK }) { return bad }
                            for u in 0..<units {
                                let row = u / kvh
                                let head = u % kvh
                                ck_attention_merge(
                                    &p, g, d, parts, po + u * parts * g * d, pm + u * parts * g, pl + u * parts * g,
                                    ob + row * h * d + head * g * d)
                            }
                            return CK_OK
                        }
                    }
                }
            }
        }
        if bad != CK_OK { try EngineError.check(bad, "KIVI attention arguments") }
    }
}
