/// Keys and values of the positions a decoder has seen, per layer. Attention reads each cache
/// type in its own storage format (`attend`); nothing dequantizes a whole cache per step.
public protocol KVCache: AnyObject, Sendable {
    /// Most positions the cache can hold.
    var capacity: Int { get }
    /// Positions filled so far.
    var length: Int { get }
    /// Bytes the cache holds.
    var memoryBytes: Int { get }
    /// Drops positions from `newLength` on.
    func trim(to newLength: Int) throws
    /// Stores token-major keys and values (count x kvHeads x headDim) of one layer at positions
    /// start ..< start + count.
    func append(layer: Int, keys: [Float], values: [Float], at start: Int, count: Int) throws
    /// Attention of queries q (count x heads x headDim, positions start ..< start + count) over
    /// the layer's positions 0 ..< start + count (causal), into `out` (same shape as q).
    func attend(
        layer: Int, shape: AttentionShape, score: ScoreFunction, q: UnsafeBufferPointer<Float>, start: Int, count: Int,
        into out: UnsafeMutableBufferPointer<Float>, kernels: Kernels
    ) throws
    /// Marks positions ..< newLength as filled, once every layer has appended them.
    func advance(to newLength: Int) throws
    /// Most positions the model should append per step (nil: any number), e.g. so a cache under
    /// a RAM budget is never handed a whole long prompt at once.
    var maxStepTokens: Int? { get }
}

extension KVCache {
    /// Any number of positions per step.
    public var maxStepTokens: Int? { nil }
}

/// The rows of a token-major append (count x kvHeads rows of headDim values) in a head-major
/// layer of `rowsPerHead` rows per head: body(offset of the row's first value in the input,
/// destination row h * rowsPerHead + first + t). Caches write through pointers taken once per
/// call: element stores into a class's nested arrays pay Swift's exclusivity and uniqueness
/// checks per value (~3% of a 1-thread SmolLM2 decode).
@inline(__always)
func forEachAppendedRow(
    count: Int, kvHeads: Int, headDim: Int, rowsPerHead: Int, at first: Int, _ body: (Int, Int) -> Void
) {
    for t in 0..<count {
        for h in 0..<kvHeads { body((t * kvHeads + h) * headDim, h * rowsPerHead + first + t) }
    }
}

/// Dense f32 KV cache, head-major per layer (kvHeads x capacity x headDim): the reference cache.
public final class DenseKVCache: KVCache, @unchecked Sendable {
    /// Most positions the cache can hold.
    public let capacity: Int
    /// Positions filled so far.
    public private(set) var length = 0
    let kvHeads: Int
    let headDim: Int
    var keys: [[Float]]
    var values: [[Float]]

    /// A cache for `layers` layers of `kvHeads` heads of `headDim` values, `capacity` positions.
    public init(layers: Int, kvHeads: Int, headDim: Int, capacity: Int) {
        self.capacity = capacity
        self.kvHeads = kvHeads
        self.headDim = headDim
        keys = Array(repeating: [Float](repeating: 0, count: kvHeads * capacity * headDim), count: layers)
        values = keys
    }

    /// Bytes of keys and values held (the whole capacity is allocated up front).
    public var memoryBytes: Int { (keys.count + values.count) * kvHeads * capacity * headDim * 4 }

    /// Drops positions from `newLength` on.
    public func trim(to newLength: Int) throws {
        try require(newLength >= 0 && newLength <= length, "cannot trim a cache of \(length) positions to \(newLength)")
        length = newLength
    }

    /// Marks positions ..< newLength as filled.
    public func advance(to newLength: Int) throws {
        try require(newLength >= length && newLength <= capacity, "cannot advance to \(newLength) of \(capacity)")
        length = newLength
    }

    /// Stores token-major rows (count x kvHeads x headDim) head-major at positions start ..< start + count.
    public func append(layer: Int, keys k: [Float], values v: [Float], at start: Int, count: Int) throws {
        let hd = headDim
        try require(start >= 0 && start + count <= capacity, "positions \(start)..<\(start + count) exceed \(capacity)")
        try require(k.count >= count * kvHeads * hd && v.count >= count * kvHeads * hd, "too few key/value values")
        k.withUnsafeBufferPointer { ks in
            v.withUnsafeBufferPointer { vs in
                keys[layer].withUnsafeMutableBufferPointer { kd in
                    values[layer].withUnsafeMutableBufferPointer { vd in
                        forEachAppendedRow(
                            count: count, kvHeads: kvHeads, headDim: hd, rowsPerHead: capacity, at: start
                        ) {
                            (kd.baseAddress! + $1 * hd).update(from: ks.baseAddress! + $0, count: hd)
                            (vd.baseAddress! + $1 * hd).update(from: vs.baseAddress! + $0, count: hd)
                        }
                    }
                }
            }
        }
    }

    /// Causal attention over the layer's f32 keys and values (decode, prefill or polynomial Power-Softmax).
    public func attend(
        layer l: Int, shape: AttentionShape, score: ScoreFunction, q: UnsafeBufferPointer<Float>, start: Int,
        count: Int,
        into out: UnsafeMutableBufferPointer<Float>, kernels k: Kernels
    ) throws {
        try keys[l].withUnsafeBufferPointer { kc in
            try values[l].withUnsafeBufferPointer { vc in
                if case .powerPolynomial = score {
                    try k.attentionPolynomial(
                        shape: shape, score: score, q: q, keys: kc, values: vc, capacity: capacity, start: start,
                        into: out)
                } else if count == 1 {
                    try k.attentionDecode(
                        shape: shape, score: score, q: q, keys: UnsafeRawBufferPointer(kc), keyType: .f32,
                        values: UnsafeRawBufferPointer(vc), valueType: .f32, length: start + 1, capacity: capacity,
                        into: out)
                } else {
                    try k.attentionPrefillCached(
                        shape: shape, score: score, q: q, keys: kc, values: vc, capacity: capacity, start: start,
                        into: out)
                }
            }
        }
    }
}

/// The dense cache under its earlier name.
public typealias LlamaKVCache = DenseKVCache
