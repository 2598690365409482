import CKernels

/// One layer's importance-selected positions of a mikv or h2o cache (see `KIVIKVCache`), per KV
/// head: `count` slots, each a key and a value row of `type` (Q8_0 for mikv, f16 for h2o), the
/// position and the attention it has accumulated; and the accumulated attention of the positions
/// still in the f16 window. Every KV head holds the same number of slots (the budget is a fraction
/// of the positions), each its own positions.
///
/// Accumulated attention (H2O's score): for each position, the sum over every query row that has
/// attended to it (all query heads of the KV head's group) of its softmax probability. When a
/// group of 32 positions leaves the window, the positions kept are the `budget` highest scores
/// among the slots and the group, where budget = floor(fraction * positions outside the window);
/// a position not kept loses its high-precision copy for good (mikv still reads it in 2-bit; h2o
/// no longer attends to it).
final class MixedSet {
    let type: RowType
    let kvHeads: Int
    let headDim: Int
    let rowBytes: Int
    let maxSlots: Int
    private(set) var count = 0
    /// kvHeads x maxSlots x rowBytes
    var keys: [UInt8]
    var values: [UInt8]
    /// kvHeads x maxSlots
    var positions: [UInt32]
    var scores: [Float]
    /// kvHeads x windowCap, indexed by position - windowStart
    var windowScores: [Float]
    /// End of the positions appended so far (attention needs their rows).
    var appendedEnd = 0

    /// Bytes one slot takes: a key and a value row, a 4-byte position and a 4-byte score.
    static func slotBytes(_ t: RowType, headDim: Int) -> Int { 2 * ck_qmatmul_row_bytes(t.c, headDim) + 8 }

    init(type: RowType, kvHeads: Int, headDim: Int, slots: Int, windowCap: Int) throws {
        self.type = type
        self.kvHeads = kvHeads
        self.headDim = headDim
        rowBytes = try type.rowBytes(headDim)
        maxSlots = slots
        let rows = try CheckedSize.product(kvHeads, slots, rowBytes, what: "KV cache important set")
        keys = [UInt8](repeating: 0, count: rows)
        values = keys
        positions = [UInt32](repeating: 0, count: kvHeads * slots)
        scores = [Float](repeating: 0, count: kvHeads * slots)
        windowScores = [Float](repeating: 0, count: try CheckedSize.product(kvHeads, windowCap, 1, what: "window"))
    }

    var memoryBytes: Int { keys.count + values.count + 4 * (positions.count + scores.count + windowScores.count) }

    func reset() {
        count = 0
        appendedEnd = 0
        for i in windowScores.indices { windowScores[i] = 0 }
    }

    /// The window dropped its first `shift` positions and keeps `keep`.
    func shiftWindow(by shift: Int, keep: Int, windowCap: Int) {
        for h in 0..<kvHeads {
            let base = h * windowCap
            for i in 0..<keep { windowScores[base + i] = windowScores[base + shift + i] }
            for i in keep..<windowCap { windowScores[base + i] = 0 }
        }
    }

    /// The window was reallocated from `old` to `new` rows per head.
    func resizeWindow(from old: Int, to new: Int) {
        var a = [Float](repeating: 0, count: kvHeads * new)
        for h in 0..<kvHeads {
            for i in 0..<min(old, new) { a[h * new + i] = windowScores[h * old + i] }
        }
        windowScores = a
    }

    /// Keeps the `budget` best-scored positions among the slots and the 32 positions of `group`
    /// (scores from the window); a new position's row is quantized to `type` from `rowOf`, which
    /// writes the f32 key and value of (head, position) into its two buffers.
    func select(
        group: Int, budget: Int, windowStart: Int, windowCap: Int, kernels: Kernels,
        rowOf: (Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    ) {
        let G = Int(CK_KIVI_G)
        let newCount = min(budget, maxSlots, count + G)
        let quantize = kernels.qmatmulTable.pointee.quantize!
        var k = [Float](repeating: 0, count: headDim)
        var v = [Float](repeating: 0, count: headDim)
        // (score, position, slot or -1 for a window position), reused across heads
        var cand: [(Float, Int, Int)] = []
        cand.reserveCapacity(count + G)
        var kept = [Bool](repeating: false, count: count)
        var incoming: [(Float, Int)] = []
        var free: [Int] = []
        for h in 0..<kvHeads {
            cand.removeAll(keepingCapacity: true)
            incoming.removeAll(keepingCapacity: true)
            free.removeAll(keepingCapacity: true)
            for i in 0..<count { kept[i] = false }
            for i in 0..<count { cand.append((scores[h * maxSlots + i], Int(positions[h * maxSlots + i]), i)) }
            for t in 0..<G {
                let pos = group * G + t
                cand.append((windowScores[h * windowCap + pos - windowStart], pos, -1))
            }
            // Highest score first; ties go to the older position (deterministic).
            cand.sort { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }
            for c in cand.prefix(newCount) {
                if c.2 >= 0 { kept[c.2] = true } else { incoming.append((c.0, c.1)) }
            }
            for i in 0..<count where !kept[i] { free.append(i) }
            free.append(contentsOf: count..<newCount)
            for (slot, item) in zip(free, incoming) {
                rowOf(h, item.1, &k, &v)
                let off = (h * maxSlots + slot) * rowBytes
                keys.withUnsafeMutableBytes { quantize(type.c, k, headDim, $0.baseAddress! + off) }
                values.withUnsafeMutableBytes { quantize(type.c, v, headDim, $0.baseAddress! + off) }
                positions[h * maxSlots + slot] = UInt32(item.1)
                scores[h * maxSlots + slot] = item.0
            }
        }
        count = newCount
    }
}

extension KIVIKVCache {
    /// mikv, h2o: quantizes (mikv) and selects the groups of layer `l` below `target`.
    func quantizeMixed(layer l: Int, groups target: Int) throws {
        let G = Int(CK_KIVI_G)
        let set = mixed[l]
        try require(
            target * G <= set.appendedEnd || target <= quantizedGroups[l],
            "the layer's keys were not appended before attention")
        while quantizedGroups[l] < target {
            let grp = quantizedGroups[l]
            if type == .mikv { try quantizeGroup(layer: l, group: grp) }
            let budget = Int((keptFraction * Double((grp + 1) * G)).rounded(.down))
            let (wc, ws, hd) = (windowCap, windowStart, headDim)
            set.select(group: grp, budget: budget, windowStart: ws, windowCap: wc, kernels: kernels) { h, pos, k, v in
                let w = (h * wc + pos - ws) * hd
                precondition(w >= 0 && w + hd <= windowKeys[l].count, "selected row outside the window")
                windowKeys[l].withUnsafeBufferPointer {
                    kernels.floatsFromFloat16Unchecked($0.baseAddress! + w, into: k, count: hd)
                }
                windowValues[l].withUnsafeBufferPointer {
                    kernels.floatsFromFloat16Unchecked($0.baseAddress! + w, into: v, count: hd)
                }
            }
            quantizedGroups[l] += 1
        }
    }

    /// mikv, h2o: rows one at a time, each after the selection its position calls for, so a
    /// prompt processed at once sees exactly what a token-by-token pass sees; each row's
    /// probabilities are added to the scores of the positions it attended.
    func attendMixed(
        layer l: Int, shape: AttentionShape, score: ScoreFunction, q: UnsafeBufferPointer<Float>, start: Int,
        count: Int, into out: UnsafeMutableBufferPointer<Float>, kernels k: Kernels
    ) throws {
        let p = try score.params(scale: shape.defaultScale)
        let (h, kvh, d, g) = (shape.heads, shape.kvHeads, shape.headDim, shape.group)
        try require(kvh == kvHeads && d == headDim, "attention shape does not match the cache")
        try require(q.count >= count * h * d && out.count >= count * h * d, "q/out hold fewer than \(count) rows")
        try require(start >= windowStart && start + count <= capacity, "positions out of range")
        try require(start + count <= mixed[l].appendedEnd, "the layer's keys were not appended before attention")
        try requireFinite(UnsafeBufferPointer(rebasing: q[0..<(count * h * d)]), "q")
        let G = Int(CK_KIVI_G)
        let maxGroups = capacity / G
        let set = mixed[l]
        let table = k.attentionTable
        let (gb, vrb, bitsC, vt, ht, hrb, slots) = (
            groupBytes, valueRowBytes, bits, valueType.c, set.type.c, set.rowBytes, set.maxSlots
        )
        let lowStore = type == .mikv
        for i in 0..<count {
            let filled = start + i + 1
            let qEnd = quantizedEnd(filled)
            try quantizeMixed(layer: l, groups: qEnd / G)
            var r = MixedRow(
                g: g, d: d, bits: bitsC, vt: vt, ht: ht, hrb: hrb, slots: slots, vrb: vrb, gb: gb,
                maxGroups: maxGroups, capacity: capacity, windowCap: windowCap, qEnd: qEnd, filled: filled,
                window0: windowStart, lowGroups: lowStore ? qEnd / G : 0, nh: set.count)
            let threads = filled * kvh * d >= 1 << 15 ? k.threads : 1
            let qb = q.baseAddress! + i * h * d
            let ob = out.baseAddress! + i * h * d
            let bad: ck_status = keyGroups[l].withUnsafeBytes { kg in
                valueRows[l].withUnsafeBytes { vr in
                    windowKeys[l].withUnsafeBytes { wk in
                        windowValues[l].withUnsafeBytes { wv in
                            set.keys.withUnsafeBytes { hk in
                                set.values.withUnsafeBytes { hv in
                                    set.positions.withUnsafeBufferPointer { hp in
                                        set.scores.withUnsafeMutableBufferPointer { sc in
                                            set.windowScores.withUnsafeMutableBufferPointer { wsc in
                                                r.pointers = (
                                                    kg.baseAddress, vr.baseAddress, wk.baseAddress!, wv.baseAddress!,
                                                    hk.baseAddress!, hv.baseAddress!, hp.baseAddress!,
                                                    sc.baseAddress!, wsc.baseAddress!
                                                )
                                                return r.run(
                                                    table: table, params: p, q: qb, out: ob, kvHeads: kvh,
                                                    threads: threads)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if bad != CK_OK { try EngineError.check(bad, "\(type) attention arguments") }
        }
    }
}

/// One query row of a mixed cache's attention, for every KV head: the mixed partial (2-bit groups
/// and high-precision slots) and the f16 window's partial, merged, and each position's
/// probability added to its accumulated score.
struct MixedRow {
    let g: Int, d: Int, bits: Int32, vt: ck_rtype, ht: ck_rtype, hrb: Int, slots: Int, vrb: Int, gb: Int
    let maxGroups: Int, capacity: Int, windowCap: Int, qEnd: Int, filled: Int, window0: Int
    let lowGroups: Int, nh: Int
    /// key groups, value rows, window keys, window values, slot keys, slot values, slot positions,
    /// slot scores, window scores
    var pointers:
        (
            UnsafeRawPointer?, UnsafeRawPointer?, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer,
            UnsafeRawPointer, UnsafePointer<UInt32>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>
        )?

    func run(
        table: UnsafePointer<ck_attention_kernels>, params: ck_attention_params, q: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>, kvHeads kvh: Int, threads: Int
    ) -> ck_status {
        let perUnit = 2 * g * d + 6 * g // o (2 x g x d), m, l, factors (2 x g each)
        let tw = filled - qEnd
        let aBytes = (ck_attention_mikv_scratch_bytes(lowGroups, nh, g, d) + 63) & ~63
        let scratchBytes = aBytes + ck_attention_decode_scratch_bytes(tw, g, d)
        return ThreadScratch.with(slot: 0, bytes: kvh * perUnit * 4 + kvh * MemoryLayout<ck_status>.stride) { raw in
            let stp = UnsafeMutableBufferPointer(
                start: (raw + kvh * perUnit * 4).bindMemory(to: ck_status.self, capacity: kvh), count: kvh)
            stp.initialize(repeating: CK_OK)
            Threads.parallelFor(kvh, threads: threads) { head in
                let u = (raw + head * perUnit * 4).bindMemory(to: Float.self, capacity: perUnit)
                stp[head] = ThreadScratch.with(slot: 1, bytes: scratchBytes) { scr in
                    self.head(
                        head, table: table, params: params, q: q + head * g * d, out: out + head * g * d,
                        state: u, scratch: scr, windowScratch: scr + aBytes)
                }
            }
            return stp.first(where: { $0 != CK_OK }) ?? CK_OK
        }
    }

    private func head(
        _ head: Int, table: UnsafePointer<ck_attention_kernels>, params: ck_attention_params, q: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>, state u: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawPointer,
        windowScratch: UnsafeMutableRawPointer
    ) -> ck_status {
        let (kg, vr, wk, wv, hk, hv, hp, sc, wsc) = pointers!
        var p = params
        let G = Int(CK_KIVI_G)
        let (uo, um) = (u, u + 2 * g * d)
        let (ul, uf) = (um + 2 * g, um + 4 * g)
        let tw = filled - qEnd
        var s = ck_attention_mikv_partial(
            table, &p, q, g, d, bits, lowGroups > 0 ? kg! + head * maxGroups * gb : nil, lowGroups, vt,
            lowGroups > 0 ? vr! + head * capacity * vrb : nil, vrb, ht, hk + head * slots * hrb,
            hv + head * slots * hrb, hrb, hp + head * slots, nh, scratch, uo, um, ul)
        if s != CK_OK { return s }
        let off = (head * windowCap + qEnd - window0) * d * 2
        s = ck_attention_decode_partial(
            table, &p, q, g, d, RowType.f16.c, wk + off, d * 2, RowType.f16.c, wv + off, d * 2, tw, false,
            windowScratch, uo + g * d, um + g, ul + g)
        if s != CK_OK { return s }
        ck_attention_merge(&p, g, d, 2, uo, um, ul, out)
        ck_attention_weight_factors(&p, g, 2, um, ul, uf)
        // Each position's probability, summed over the group's query heads, joins its score.
        let wh = scratch.assumingMemoryBound(to: Float.self) + g * lowGroups * G
        for t in 0..<nh {
            var a: Float = 0
            for j in 0..<g { a += wh[j * nh + t] * uf[j] }
            sc[head * slots + t] += a
        }
        let ww = windowScratch.assumingMemoryBound(to: Float.self)
        let wbase = head * windowCap + qEnd - window0
        for t in 0..<tw {
            var a: Float = 0
            for j in 0..<g { a += ww[j * tw + t] * uf[g + j] }
            wsc[wbase + t] += a
        }
        return CK_OK
    }
}
