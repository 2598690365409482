import CKernels
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Disk offload of a per-token KV cache under a RAM budget (`KVCacheConfig.offload`).
///
/// The cache keeps the first `sinkTokens` positions and a recent window in RAM; older positions
/// live in a file in blocks of `blockTokens`, and each decode step attends exactly to the sink,
/// the window and the `blocks` stored blocks whose key summaries best match the query (sign
/// codes, scored by the Hamming kernels). With all blocks selected the result is full attention.
public struct KVOffload: Sendable, Equatable {
    /// RAM the cache may hold between steps, in bytes (sink, window, summaries, read buffer).
    public var budgetBytes: Int
    /// Directory of the block file (created there, removed when the cache is released).
    public var directory: String
    /// Stored blocks attended per step and KV head.
    public var blocks: Int

    /// Tokens per stored block.
    public static let blockTokens = 64
    /// First positions always kept in RAM (the attention sink).
    public static let sinkTokens = 64
    /// Default blocks per step.
    public static let defaultBlocks = 8
    /// Most blocks per step accepted.
    public static let maxBlocks = 4096

    /// An offload configuration; see each property.
    public init(budgetBytes: Int, directory: String, blocks: Int = KVOffload.defaultBlocks) {
        self.budgetBytes = budgetBytes
        self.directory = directory
        self.blocks = blocks
    }
}

/// A per-token cache (rows of f32, f16, q8_0 or q4_0) whose older blocks are written to disk.
///
/// Positions: the sink [0, S) and the window [w(f), f) are read from RAM, where for a query that
/// sees f positions w(f) = S + 64 * ceil((f - S - W) / 64) (S when that is not positive) and W is
/// the window the budget leaves. Blocks [S, w(f)) are stored: each is written once, complete, as a
/// page-aligned record (64 key rows, then 64 value rows) with a CRC-32C kept in RAM and checked on
/// every read. Its summary is the block's mean key minus a fixed centre (the mean key of the first
/// stored block) as three residual sign codes with scales; a query group estimates q . summary
/// from Hamming distances between its own sign codes and the block's (`selectBlocks`), and the
/// `blocks` highest estimates (ties: the earlier block) are read and attended exactly, merged with
/// the sink and the window by the decode kernel's partial states. Row i of a prompt step sees
/// exactly what a token-by-token pass sees (selection depends only on the row's query and position).
public final class OffloadKVCache: KVCache, @unchecked Sendable {
    /// Most positions the cache can hold.
    public let capacity: Int
    /// Positions filled so far.
    public private(set) var length = 0
    /// Row type of keys and values.
    public let type: RowType
    /// Whether scores use int8-quantized queries (`KVCacheConfig.scores`).
    public let int8Scores: Bool
    /// Stored blocks attended per step and KV head.
    public let blocksPerStep: Int
    /// Recent positions kept in RAM (W).
    public let windowTokens: Int
    /// The RAM budget in bytes.
    public let budgetBytes: Int
    /// The name the block file was created under. It is unlinked at once: the file has no name
    /// while in use (nothing is left behind if the process dies) and its space returns when the
    /// cache is released.
    public let path: String
    /// Largest `memoryBytes` so far.
    public private(set) var peakMemoryBytes = 0
    /// Bytes read back from the block file so far.
    public private(set) var bytesRead = 0
    /// Bytes written to the block file so far.
    public private(set) var bytesWritten = 0

    static let S = KVOffload.sinkTokens
    static let B = KVOffload.blockTokens
    let layers: Int
    let kvHeads: Int
    let headDim: Int
    let rowBytes: Int
    /// Bytes of one record (64 key rows then 64 value rows) and its stride in the file (pages).
    let recordBytes: Int
    let recordStride: Int
    /// 64-bit words of one sign code.
    let words: Int
    let maxBlocks: Int
    /// RAM besides the window rows (sink, summaries, checksums, centres, buffers), and per row.
    let baseBytes: Int
    let perTokenBytes: Int
    let kernels: Kernels
    /// per layer: kvHeads x S rows
    var sinkKeys: [[UInt8]]
    var sinkValues: [[UInt8]]
    /// per layer: kvHeads x windowRows rows, positions windowStart ..< windowStart + windowRows
    var windowKeys: [[UInt8]]
    var windowValues: [[UInt8]]
    var windowRows: Int
    /// First position held in the RAM window.
    public private(set) var windowStart = KVOffload.sinkTokens
    /// per layer: blocks written to the file
    var written: [Int]
    /// per layer: kvHeads x maxBlocks x levels sign codes of `words` words
    var summaries: [[UInt64]]
    /// per layer: kvHeads x maxBlocks x levels scales of the sign codes
    var summaryScales: [[Float]]
    /// per layer: kvHeads x maxBlocks CRC-32C of the records
    var checksums: [[UInt32]]
    /// per layer: kvHeads x headDim centre (mean key of the first stored block)
    var centres: [[Float]]
    let file: ScratchFile
    /// io_uring reads of the selected records, or (where io_uring is unavailable) pread into
    /// `readBuffer`.
    let uring: UringExtents?
    let readBuffer: UnsafeMutableRawPointer?
    var staging: [UInt8]

    /// A cache for `layers` layers of `kvHeads` heads of `headDim` values, `capacity` positions,
    /// rows of `type`, offloaded as `offload` says. Throws if the budget cannot hold the sink, the
    /// read buffer, the summaries and a window of two blocks, or the directory is not writable.
    public init(
        layers: Int, kvHeads: Int, headDim: Int, capacity: Int, type: RowType, int8Scores: Bool = false,
        offload: KVOffload, kernels: Kernels
    ) throws {
        try require(layers > 0 && kvHeads > 0 && headDim > 0 && capacity > 0, "cache dimensions must be positive")
        try require(!int8Scores || type.isQuantized, "int8 scores need a quantized cache type, got \(type)")
        try require(
            offload.blocks >= 1 && offload.blocks <= KVOffload.maxBlocks,
            "KV blocks per step must be in 1...\(KVOffload.maxBlocks), got \(offload.blocks)")
        try require(offload.budgetBytes > 0, "the KV budget must be positive")
        let S = Self.S
        let B = Self.B
        self.capacity = capacity
        self.type = type
        self.int8Scores = int8Scores
        self.blocksPerStep = offload.blocks
        self.budgetBytes = offload.budgetBytes
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.kernels = kernels
        rowBytes = try type.rowBytes(headDim)
        recordBytes = 2 * B * rowBytes
        recordStride = (recordBytes + 4095) / 4096 * 4096
        words = (headDim + 63) / 64
        maxBlocks = max(0, (capacity - S) / B)
        let (fixed, perToken) = try Self.ramCost(
            layers: layers, kvHeads: kvHeads, headDim: headDim, capacity: capacity, type: type, blocks: offload.blocks)
        let readBytes = kvHeads * offload.blocks * recordStride
        let minWindow = Self.minimumWindow
        let minimum = fixed + minWindow * perToken
        try require(
            offload.budgetBytes >= minimum,
            "the KV budget of \(mib(offload.budgetBytes)) MiB is below the \(mib(minimum)) MiB this model needs for "
                + "the sink (\(S) tokens), \(offload.blocks) blocks read per step and a window of \(minWindow) tokens")
        windowTokens = min((offload.budgetBytes - fixed) / perToken, capacity)
        baseBytes = fixed - Self.stepTokens * perToken
        perTokenBytes = perToken
        windowRows = max(B, min(windowTokens + Self.stepTokens, capacity))
        let sb = kvHeads * S * rowBytes
        sinkKeys = Array(repeating: [UInt8](repeating: 0, count: sb), count: layers)
        sinkValues = sinkKeys
        let wb = try CheckedSize.product(kvHeads, windowRows, rowBytes, what: "KV window")
        windowKeys = Array(repeating: [UInt8](repeating: 0, count: wb), count: layers)
        windowValues = windowKeys
        written = Array(repeating: 0, count: layers)
        summaries = Array(
            repeating: [UInt64](repeating: 0, count: kvHeads * maxBlocks * Self.levels * words), count: layers)
        summaryScales = Array(
            repeating: [Float](repeating: 0, count: kvHeads * maxBlocks * Self.levels), count: layers)
        checksums = Array(repeating: [UInt32](repeating: 0, count: kvHeads * maxBlocks), count: layers)
        centres = Array(repeating: [Float](repeating: 0, count: kvHeads * headDim), count: layers)
        staging = [UInt8](repeating: 0, count: recordStride)
        // The block file: a new name, created exclusively (nothing is replaced), unlinked at once.
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: offload.directory, isDirectory: &isDir), isDir.boolValue else {
            throw EngineError.io("KV offload directory \(offload.directory) does not exist or is not a directory")
        }
        let name = "engine-kv-\(getpid())-\(UInt64.random(in: 0...UInt64.max) & 0xffff_ffff_ffff).blocks"
        let blockFile = try ScratchFile(
            path: (offload.directory as NSString).appendingPathComponent(name), mode: 0o600)
        blockFile.unlinkName()
        file = blockFile
        path = blockFile.path
        let ring = UringReader(capacity: readBytes)
        uring = ring.map { UringExtents(reader: $0, fd: blockFile.fd, path: blockFile.path) }
        readBuffer = ring == nil ? UnsafeMutableRawPointer.allocate(byteCount: readBytes, alignment: 4096) : nil
        peakMemoryBytes = memoryBytes
    }

    /// Positions a step may append without growing the window (the model steps by this many:
    /// `maxStepTokens`); their rows are part of the budget.
    public static let stepTokens = 64

    /// The model appends at most `stepTokens` positions per step, so the cache stays in its budget.
    public var maxStepTokens: Int? { Self.stepTokens }

    /// Fewest window positions a budget must leave (two blocks: the window then always starts at
    /// or below the last complete block).
    public static let minimumWindow = 2 * KVOffload.blockTokens

    /// RAM of a cache that does not depend on its window (sink, summaries, checksums, centres,
    /// read and staging buffers), and RAM per window position.
    static func ramCost(
        layers: Int, kvHeads: Int, headDim: Int, capacity: Int, type: RowType, blocks: Int
    ) throws -> (fixed: Int, perToken: Int) {
        let rowBytes = try type.rowBytes(headDim)
        let recordStride = (2 * B * rowBytes + 4095) / 4096 * 4096
        let words = (headDim + 63) / 64
        let maxBlocks = max(0, (capacity - S) / B)
        let sinkBytes = try CheckedSize.product(2 * layers, kvHeads, S, rowBytes, what: "KV sink")
        let summaryBytes = try CheckedSize.product(
            layers, kvHeads, maxBlocks, Self.levels * (words * 8 + 4) + 4, what: "KV summaries")
        let readBytes = try CheckedSize.product(kvHeads, blocks, recordStride, what: "KV read buffer")
        let centres = try CheckedSize.product(layers, kvHeads, headDim, 4, what: "KV centres")
        let perToken = 2 * layers * kvHeads * rowBytes
        let step = try CheckedSize.product(stepTokens, perToken, what: "KV step rows")
        return (sinkBytes + summaryBytes + readBytes + recordStride + centres + step, perToken)
    }

    /// The smallest budget (bytes) a cache of these dimensions accepts: its fixed RAM and a window
    /// of `minimumWindow` positions.
    public static func minimumBudget(
        layers: Int, kvHeads: Int, headDim: Int, capacity: Int, type: RowType, blocks: Int
    ) throws -> Int {
        let c = try ramCost(
            layers: layers, kvHeads: kvHeads, headDim: headDim, capacity: capacity, type: type, blocks: blocks)
        return c.fixed + minimumWindow * c.perToken
    }

    deinit { readBuffer?.deallocate() }

    /// Bytes of RAM the cache holds: sink, window, summaries, checksums, centres, buffers.
    public var memoryBytes: Int { baseBytes + windowRows * perTokenBytes }

    /// First window position for a query that sees `filled` positions.
    public func windowStart(for filled: Int) -> Int {
        let over = filled - Self.S - windowTokens
        return over <= 0 ? Self.S : Self.S + Self.B * ((over + Self.B - 1) / Self.B)
    }

    /// Drops positions from `newLength` on (those the next step reads from RAM must still be there).
    public func trim(to newLength: Int) throws {
        try require(newLength >= 0 && newLength <= length, "cannot trim a cache of \(length) positions to \(newLength)")
        try require(
            windowStart(for: newLength + 1) >= windowStart,
            "cannot trim an offloaded KV cache to \(newLength) positions: positions below \(windowStart) are on disk")
        length = newLength
        let complete = newLength >= Self.S ? (newLength - Self.S) / Self.B : 0
        for l in 0..<layers { written[l] = min(written[l], complete) }
    }

    /// Marks positions ..< newLength as filled and moves the RAM window past stored blocks.
    public func advance(to newLength: Int) throws {
        try require(newLength >= length && newLength <= capacity, "cannot advance to \(newLength) of \(capacity)")
        length = newLength
        let newStart = windowStart(for: newLength + 1)
        if newStart > windowStart {
            let shift = newStart - windowStart
            let keep = max(0, newLength - newStart)
            for l in 0..<layers {
                try require(Self.S + Self.B * written[l] >= newStart, "layer \(l) was not appended before advance")
                for h in 0..<kvHeads {
                    let base = h * windowRows * rowBytes
                    for arr in 0..<2 {
                        func move(_ a: inout [UInt8]) {
                            a.withUnsafeMutableBytes { p in
                                (p.baseAddress! + base).copyMemory(
                                    from: p.baseAddress! + base + shift * rowBytes, byteCount: keep * rowBytes)
                            }
                        }
                        if arr == 0 { move(&windowKeys[l]) } else { move(&windowValues[l]) }
                    }
                }
            }
            windowStart = newStart
        }
        // A prompt step grew the window; give the memory back once its rows are stored.
        let inUse = max(0, newLength - windowStart)
        let base = max(Self.B, min(windowTokens + Self.stepTokens, capacity))
        if windowRows > base && inUse <= base { try resizeWindow(base) }
    }

    /// Reallocates the window to `rows` rows per head, keeping the rows in use.
    private func resizeWindow(_ rows: Int) throws {
        let keep = min(rows, windowRows) * rowBytes
        let wb = try CheckedSize.product(kvHeads, rows, rowBytes, what: "KV window")
        let (newStride, oldStride) = (rows * rowBytes, windowRows * rowBytes)
        for l in 0..<layers {
            for arr in 0..<2 {
                let old = arr == 0 ? windowKeys[l] : windowValues[l]
                var a = [UInt8](repeating: 0, count: wb)
                a.withUnsafeMutableBytes { dst in
                    old.withUnsafeBytes { src in
                        for h in 0..<kvHeads {
                            (dst.baseAddress! + h * newStride).copyMemory(
                                from: src.baseAddress! + h * oldStride, byteCount: keep)
                        }
                    }
                }
                if arr == 0 { windowKeys[l] = a } else { windowValues[l] = a }
            }
        }
        windowRows = rows
        peakMemoryBytes = max(peakMemoryBytes, memoryBytes)
    }

    /// Stores token-major keys and values (count x kvHeads x headDim) of one layer at positions
    /// start ..< start + count, and writes the blocks they complete to the file.
    public func append(layer l: Int, keys k: [Float], values v: [Float], at start: Int, count: Int) throws {
        let (S, B, hd) = (Self.S, Self.B, headDim)
        try require(l >= 0 && l < layers, "layer \(l) out of range")
        try require(
            start >= 0 && count >= 0 && start + count <= capacity,
            "positions \(start)..<\(start + count) exceed \(capacity)")
        try require(
            max(start, S) >= max(windowStart, S + B * written[l]),
            "positions \(start)..<\(start + count) of layer \(l) are already stored on disk (trim first)")
        try require(k.count >= count * kvHeads * hd && v.count >= count * kvHeads * hd, "too few key/value values")
        if start + count - windowStart > windowRows {
            try resizeWindow((start + count - windowStart + B - 1) / B * B)
        }
        let quantize = kernels.qmatmulTable.pointee.quantize!
        let (rb, c, wr, ws) = (rowBytes, type.c, windowRows, windowStart)
        k.withUnsafeBufferPointer { kp in
            v.withUnsafeBufferPointer { vp in
                for t in 0..<count {
                    let pos = start + t
                    for h in 0..<kvHeads {
                        let src = (t * kvHeads + h) * hd
                        func put(_ a: inout [UInt8], _ x: UnsafePointer<Float>, _ row: Int) {
                            a.withUnsafeMutableBytes { quantize(c, x, hd, $0.baseAddress! + row * rb) }
                        }
                        if pos < S {
                            put(&sinkKeys[l], kp.baseAddress! + src, h * S + pos)
                            put(&sinkValues[l], vp.baseAddress! + src, h * S + pos)
                        } else {
                            put(&windowKeys[l], kp.baseAddress! + src, h * wr + pos - ws)
                            put(&windowValues[l], vp.baseAddress! + src, h * wr + pos - ws)
                        }
                    }
                }
            }
        }
        let complete = start + count >= S ? (start + count - S) / B : 0
        while written[l] < complete {
            try writeBlock(layer: l, block: written[l])
            written[l] += 1
        }
    }

    /// File offset of block b of layer l, head h.
    func recordOffset(block b: Int, layer l: Int, head h: Int) -> Int {
        ((b * layers + l) * kvHeads + h) * recordStride
    }

    /// Writes block b of layer l (positions S + 64 b ..< S + 64 (b + 1), in the RAM window) and
    /// records its checksum and summary.
    private func writeBlock(layer l: Int, block b: Int) throws {
        let (S, B, hd, rb) = (Self.S, Self.B, headDim, rowBytes)
        let pos0 = S + B * b
        let dequantize = kernels.qmatmulTable.pointee.dequantize!
        var rows = [Float](repeating: 0, count: B * hd)
        for h in 0..<kvHeads {
            let from = (h * windowRows + pos0 - windowStart) * rb
            windowKeys[l].withUnsafeBytes { kw in
                windowValues[l].withUnsafeBytes { vw in
                    staging.withUnsafeMutableBytes { st in
                        st.baseAddress!.copyMemory(from: kw.baseAddress! + from, byteCount: B * rb)
                        (st.baseAddress! + B * rb).copyMemory(from: vw.baseAddress! + from, byteCount: B * rb)
                    }
                    rows.withUnsafeMutableBufferPointer { r in
                        for t in 0..<B {
                            dequantize(type.c, kw.baseAddress! + from + t * rb, hd, r.baseAddress! + t * hd)
                        }
                    }
                }
            }
            let crc = staging.withUnsafeBytes { kernels.crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<recordBytes])) }
            try staging.withUnsafeBytes { st in
                try file.write(st.baseAddress!, recordBytes, at: recordOffset(block: b, layer: l, head: h))
            }
            bytesWritten += recordBytes
            checksums[l][h * maxBlocks + b] = crc
            var mean = [Double](repeating: 0, count: hd)
            for t in 0..<B { for i in 0..<hd { mean[i] += Double(rows[t * hd + i]) } }
            if b == 0 { for i in 0..<hd { centres[l][h * hd + i] = Float(mean[i] / Double(B)) } }
            var r = (0..<hd).map { Float(mean[$0] / Double(B)) - centres[l][h * hd + $0] }
            let base = (h * maxBlocks + b) * Self.levels
            summaries[l].withUnsafeMutableBufferPointer { sp in
                summaryScales[l].withUnsafeMutableBufferPointer { cp in
                    Self.binarize(
                        &r, levels: Self.levels, words: words, codes: sp.baseAddress! + base * words,
                        scales: cp.baseAddress! + base)
                }
            }
        }
    }

    /// Residual binarization levels of summaries and queries.
    static let levels = 3

    /// Residual binarization of x (consumed): for k < levels, scale_k = mean |r_k| and code bit
    /// c = r_k[c] > 0 (sign +1, else -1), r_{k+1} = r_k - scale_k * sign_k, from r_0 = x; so
    /// x ~ sum_k scale_k * sign_k. Bits past x.count stay 0.
    static func binarize(
        _ x: inout [Float], levels: Int, words: Int, codes: UnsafeMutablePointer<UInt64>,
        scales: UnsafeMutablePointer<Float>
    ) {
        let n = x.count
        for k in 0..<levels {
            var a = 0.0
            for c in 0..<n { a += Double(abs(x[c])) }
            let scale = Float(a / Double(n))
            scales[k] = scale
            let code = codes + k * words
            for w in 0..<words { code[w] = 0 }
            for c in 0..<n {
                if x[c] > 0 {
                    code[c / 64] |= 1 << UInt64(c % 64)
                    x[c] -= scale
                } else {
                    x[c] += scale
                }
            }
        }
    }

    /// The stored blocks (below `end` blocks) that the g queries of one KV head select, ascending.
    ///
    /// Both sides are residual-binarized (`binarize`): the query q_j ~ sum_l a_jl t_jl and the
    /// summary m_b - centre ~ sum_k s_bk u_bk with sign vectors t, u. Their dot product is then
    /// sum_l sum_k a_jl s_bk (d - 2 popcount(t_jl ^ u_bk)), the popcounts from the Hamming kernel
    /// (L x K per query and block); est(b) = sum over the g queries estimates q . (mean key -
    /// centre), which ranks blocks as q . mean key does. The `blocks` highest are selected (ties:
    /// the earlier block).
    func selectBlocks(layer l: Int, head h: Int, queries: UnsafePointer<Float>, g: Int, end: Int) throws -> [Int] {
        if end <= blocksPerStep { return Array(0..<end) }
        let (hd, L) = (headDim, Self.levels)
        var codes = [UInt64](repeating: 0, count: g * L * words)
        var qs = [Float](repeating: 0, count: g * L)
        codes.withUnsafeMutableBufferPointer { cp in
            qs.withUnsafeMutableBufferPointer { sp in
                for j in 0..<g {
                    var x = (0..<hd).map { queries[j * hd + $0] }
                    Self.binarize(
                        &x, levels: L, words: words, codes: cp.baseAddress! + j * L * words,
                        scales: sp.baseAddress! + j * L)
                }
            }
        }
        let rows = g * L
        let cols = end * L
        var dist = [UInt32](repeating: 0, count: rows * cols)
        let base = h * maxBlocks * L * words
        try codes.withUnsafeBufferPointer { q in
            try summaries[l].withUnsafeBufferPointer { s in
                try dist.withUnsafeMutableBufferPointer { d in
                    try kernels.hammingDistances(
                        queries: q, codes: UnsafeBufferPointer(rebasing: s[base..<(base + cols * words)]),
                        bits: words * 64, into: d)
                }
            }
        }
        let sb = h * maxBlocks * L
        var est = [Float](repeating: 0, count: end)
        for b in 0..<end {
            var t: Float = 0
            for r in 0..<rows {
                for k in 0..<L {
                    let dot = Float(hd) - 2 * Float(dist[r * cols + b * L + k])
                    t += qs[r] * summaryScales[l][sb + b * L + k] * dot
                }
            }
            est[b] = t
        }
        let order = (0..<end).sorted { est[$0] != est[$1] ? est[$0] > est[$1] : $0 < $1 }
        return order.prefix(blocksPerStep).sorted()
    }

    /// Causal attention of the queries of positions start ..< start + count over the sink, the
    /// selected stored blocks and the window.
    public func attend(
        layer l: Int, shape: AttentionShape, score: ScoreFunction, q: UnsafeBufferPointer<Float>, start: Int,
        count: Int, into out: UnsafeMutableBufferPointer<Float>, kernels k: Kernels
    ) throws {
        if case .powerPolynomial = score {
            throw EngineError.invalidArgument("the polynomial Power-Softmax evaluation needs an f32 KV cache")
        }
        var p = try score.params(scale: shape.defaultScale)
        let (h, kvh, d, g) = (shape.heads, shape.kvHeads, shape.headDim, shape.group)
        let (S, B, rb) = (Self.S, Self.B, rowBytes)
        try require(kvh == kvHeads && d == headDim, "attention shape does not match the cache")
        try require(q.count >= count * h * d && out.count >= count * h * d, "q/out hold fewer than \(count) rows")
        try require(start >= 0 && start + count <= capacity, "positions out of range")
        try requireFinite(UnsafeBufferPointer(rebasing: q[0..<(count * h * d)]), "q")
        let table = k.attentionTable
        let scratchBytes = ck_attention_decode_scratch_bytes(max(S, B, windowRows), g, d)
        let maxParts = blocksPerStep + 2
        var po = [Float](repeating: 0, count: kvh * maxParts * g * d)
        var pm = [Float](repeating: 0, count: kvh * maxParts * g)
        var pl = pm
        var status = [ck_status](repeating: CK_OK, count: kvh * maxParts)
        for i in 0..<count {
            let filled = start + i + 1
            let ws = windowStart(for: filled)
            try require(ws >= windowStart, "position \(filled - 1) needs rows no longer in RAM")
            let stored = (ws - S) / B
            try require(stored <= written[l], "the layer's keys were not appended before attention")
            let qrow = q.baseAddress! + i * h * d
            // Select, then read every selected block not in RAM in one batch.
            var selected: [[Int]] = []
            var extents: [(head: Int, block: Int)] = []
            var firstRecord: [Int] = [] // each head's first entry in `extents`
            for head in 0..<kvh {
                let sel = try selectBlocks(layer: l, head: head, queries: qrow + head * g * d, g: g, end: stored)
                selected.append(sel)
                firstRecord.append(extents.count)
                for b in sel where S + B * b < windowStart { extents.append((head, b)) }
            }
            // records read, in the order of `extents` (head by head, ascending blocks)
            let records = try readBlocks(layer: l, extents)
            // Partial attention per head over sink, blocks and window; merge.
            try sinkKeys[l].withUnsafeBytes { sk in
                try sinkValues[l].withUnsafeBytes { sv in
                    try windowKeys[l].withUnsafeBytes { wk in
                        try windowValues[l].withUnsafeBytes { wv in
                            try po.withUnsafeMutableBufferPointer { pob in
                                try pm.withUnsafeMutableBufferPointer { pmb in
                                    try pl.withUnsafeMutableBufferPointer { plb in
                                        try status.withUnsafeMutableBufferPointer { stb in
                                            let (ob, mb, lb) = (pob.baseAddress!, pmb.baseAddress!, plb.baseAddress!)
                                            let threads = filled * kvh * d >= 1 << 15 ? k.threads : 1
                                            let params = p
                                            let wr = windowRows
                                            let curStart = windowStart
                                            Threads.parallelFor(kvh, threads: threads) { head in
                                                var pp = params
                                                let qh = qrow + head * g * d
                                                let sel = selected[head]
                                                var next = firstRecord[head]
                                                ThreadScratch.with(slot: 1, bytes: scratchBytes) { scratch in
                                                    var part = 0
                                                    func run(_ kp: UnsafeRawPointer, _ vp: UnsafeRawPointer, _ n: Int) {
                                                        let w = head * maxParts + part
                                                        stb[w] = ck_attention_decode_partial(
                                                            table, &pp, qh, g, d, self.type.c, kp, rb, self.type.c, vp,
                                                            rb,
                                                            n, self.int8Scores, scratch, ob + w * g * d, mb + w * g,
                                                            lb + w * g)
                                                        part += 1
                                                    }
                                                    let sinkOff = head * S * rb
                                                    run(
                                                        sk.baseAddress! + sinkOff, sv.baseAddress! + sinkOff,
                                                        min(S, filled))
                                                    for b in sel {
                                                        let pos0 = S + B * b
                                                        if pos0 >= curStart {
                                                            let off = (head * wr + pos0 - curStart) * rb
                                                            run(wk.baseAddress! + off, wv.baseAddress! + off, B)
                                                        } else {
                                                            let rec = records[next]
                                                            next += 1
                                                            run(rec, rec + B * rb, B)
                                                        }
                                                    }
                                                    let w0 = max(ws, S)
                                                    let off = (head * wr + w0 - curStart) * rb
                                                    run(
                                                        wk.baseAddress! + off, wv.baseAddress! + off,
                                                        max(0, filled - w0))
                                                }
                                            }
                                            if let bad = stb.first(where: { $0 != CK_OK }) {
                                                try EngineError.check(bad, "offloaded KV attention arguments")
                                            }
                                            for head in 0..<kvh {
                                                let parts = selected[head].count + 2
                                                let w = head * maxParts
                                                ck_attention_merge(
                                                    &p, g, d, parts, ob + w * g * d, mb + w * g, lb + w * g,
                                                    out.baseAddress! + i * h * d + head * g * d)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reads the records of `extents` (head, block) of layer l, checks their checksums, and
    /// returns where each is (valid until the next read).
    private func readBlocks(layer l: Int, _ extents: [(head: Int, block: Int)]) throws -> [UnsafeRawPointer] {
        if extents.isEmpty { return [] }
        let ranges = extents.map {
            FileExtent(offset: recordOffset(block: $0.block, layer: l, head: $0.head), length: recordBytes)
        }
        var records: [UnsafeRawPointer] = []
        if let uring, !uring.reader.broken {
            try uring.prepare(ranges)
            for n in ranges.indices { records.append(try uring.bytes(n)) }
        } else {
            guard let readBuffer else {
                throw EngineError.io("\(path): io_uring failed earlier; KV blocks cannot be read")
            }
            // at most blocksPerStep records per KV head: the buffer holds that many
            try require(extents.count <= blocksPerStep * kvHeads, "KV read batch larger than its buffer")
            for (n, r) in ranges.enumerated() {
                try file.read(readBuffer + n * recordStride, r.length, at: r.offset)
                records.append(UnsafeRawPointer(readBuffer + n * recordStride))
            }
        }
        bytesRead += extents.count * recordBytes
        for (n, e) in extents.enumerated() {
            let crc = kernels.crc32c(UnsafeRawBufferPointer(start: records[n], count: recordBytes))
            guard crc == checksums[l][e.head * maxBlocks + e.block] else {
                throw EngineError.invalidFile(
                    "\(path): KV block \(e.block) of layer \(l), head \(e.head) failed its checksum "
                        + "(the offload file was modified or is corrupt)")
            }
        }
        return records
    }
}

private func mib(_ bytes: Int) -> String { String(format: "%.2f", Double(bytes) / 1_048_576) }
