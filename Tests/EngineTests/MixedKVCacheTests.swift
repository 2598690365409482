import CKernels
import Foundation
import XCTest

import Engine

/// mikv and h2o caches against their documented behaviour restated in double precision
/// (docs/kv-cache.md, "Mixed precision"): which positions keep a high-precision copy, what each
/// position holds, and the attention over it. The restatement keeps its own accumulated scores
/// in double, its own top-budget selection and its own view of every position: KIVI 2-bit keys
/// per channel (KVCacheTests.kiviKeys, written from the format's documentation), Q2_1 / Q8_0 rows
/// through the serial kernels QMatmulTests checks against GGUF's reader, f16 through Float16.
final class MixedKVCacheTests: XCTestCase {
    /// KVCacheTests' bound: a convex combination of value rows with f32 sums over T + d terms,
    /// 16x headroom for the KIVI scores' two terms and the merge of two partials.
    func tolerance(T: Int, d: Int) -> Double { 16 * Double(T + d + 4) * u32 }

    /// Rounds each row of d values through `type` (quantize, dequantize) with the serial kernels.
    static func roundTrip(_ x: [Float], d: Int, type: RowType) throws -> [Float] {
        let ref = try kernels(.scalar)
        return try QuantizedMatrix(quantizing: x, rows: x.count / d, cols: d, type: type, kernels: ref)
            .dequantized(kernels: ref)
    }

    /// The restatement: outputs of every row (T x heads x d) when rows arrive one at a time.
    static func reference(
        type: KVCacheType, q: [Float], k: [Float], v: [Float], T: Int, heads: Int, kvHeads: Int, d: Int, window: Int,
        important: Double
    ) throws -> [Double] {
        let g = heads / kvHeads
        let cfg = KVCacheConfig(type: type, window: window, important: important)
        // the kept fraction, from docs/kv-cache.md: mikv bytes per position and head are the
        // 2-bit part (key group bytes / 32 + a Q2_1 row) plus `important` slots of two Q8_0 rows
        // and 8 bytes; h2o fits f16 slots (two f16 rows and 8 bytes) in the same bytes
        let low = Double((2 * 2 * d + 32 * d * 2 / 8) / 32 + d / 32 * 12)
        let mikvSlot = Double(2 * (d / 32 * 34) + 8)
        let keep = type == .mikv ? important : min(1, (low + important * mikvSlot) / Double(2 * 2 * d + 8))
        XCTAssertEqual(
            cfg.bytesPerToken(kvHeads: 1, headDim: d), Int((low + important * mikvSlot).rounded(.down)), "bytes")
        let kh = k.map { Float(Float16($0)) }
        let vh = v.map { Float(Float16($0)) }
        // every position's low and high copies, per (position, head) row
        let qEndAll = T < window ? 0 : 32 * ((T - window) / 32)
        let lowView = try KVCacheTests.kiviView(k: k, v: v, filled: T, kvHeads: kvHeads, d: d, bits: 2, window: window)
        let highType: RowType = type == .mikv ? .q8_0 : .f16
        let highK = try roundTrip(kh, d: d, type: highType)
        let highV = try roundTrip(vh, d: d, type: highType)
        var out = [Double](repeating: 0, count: T * heads * d)
        // per head: score of every position still in the window or kept, and the kept set
        var score = [[Int: Double]](repeating: [:], count: kvHeads)
        var kept = [Set<Int>](repeating: [], count: kvHeads)
        var groupsDone = 0
        for i in 0..<T {
            let filled = i + 1
            let qEnd = filled < window ? 0 : 32 * ((filled - window) / 32)
            XCTAssertLessThanOrEqual(qEnd, qEndAll)
            while groupsDone < qEnd / 32 {
                let budget = Int((keep * Double((groupsDone + 1) * 32)).rounded(.down))
                for hh in 0..<kvHeads {
                    let cand = Array(kept[hh]) + (0..<32).map { groupsDone * 32 + $0 }
                    let order = cand.sorted {
                        let (a, b) = (score[hh][$0] ?? 0, score[hh][$1] ?? 0)
                        return a != b ? a > b : $0 < $1
                    }
                    kept[hh] = Set(order.prefix(min(budget, kept[hh].count + 32)))
                    for p in cand where !kept[hh].contains(p) { score[hh][p] = nil }
                }
                groupsDone += 1
            }
            for hh in 0..<kvHeads {
                // positions attended and the rows they are read from
                var pos: [Int] = []
                var rowsK: [ArraySlice<Float>] = []
                var rowsV: [ArraySlice<Float>] = []
                for p in 0..<filled {
                    let r = (p * kvHeads + hh) * d
                    if p >= qEnd {
                        pos.append(p)
                        rowsK.append(kh[r..<(r + d)])
                        rowsV.append(vh[r..<(r + d)])
                    } else if kept[hh].contains(p) {
                        pos.append(p)
                        rowsK.append(highK[r..<(r + d)])
                        rowsV.append(highV[r..<(r + d)])
                    } else if type == .mikv {
                        pos.append(-1) // read in 2-bit, no score kept
                        rowsK.append(lowView.k[r..<(r + d)])
                        rowsV.append(lowView.v[r..<(r + d)])
                    }
                }
                for j in 0..<g {
                    let qo = (i * heads + hh * g + j) * d
                    let s = rowsK.map { kr in
                        zip(kr, q[qo..<(qo + d)]).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } / sqrt(Double(d))
                    }
                    let m = s.max()!
                    let w = s.map { exp($0 - m) }
                    let sum = w.reduce(0, +)
                    for (t, vr) in rowsV.enumerated() {
                        for (c, x) in vr.enumerated() { out[qo + c] += w[t] / sum * Double(x) }
                        if pos[t] >= 0 { score[hh][pos[t], default: 0] += w[t] / sum }
                    }
                }
            }
        }
        return out
    }

    /// Every level, token by token and in prompt steps: the cache equals the restatement.
    func testMixedCachesMatchRestatement() throws {
        var rng = SeededRandom(seed: 77)
        for (d, h, kvh, T, window, important) in [(64, 4, 2, 300, 40, 0.2), (32, 3, 1, 230, 0, 0.1)] {
            let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
            let q = rng.uniform(T * h * d, -2, 2)
            let k = rng.uniform(T * kvh * d, -1.5, 1)
            let v = rng.uniform(T * kvh * d)
            for type in [KVCacheType.mikv, .h2o] {
                let expect = try Self.reference(
                    type: type, q: q, k: k, v: v, T: T, heads: h, kvHeads: kvh, d: d, window: window,
                    important: important)
                var byLevel: [[Float]] = []
                for isa in allLevels {
                    let kern = try kernels(isa, threads: 2)
                    var outs: [[Float]] = []
                    for steps in [[Int](repeating: 1, count: T), [T / 3, 1, 1, T / 3, T - 2 * (T / 3) - 2]] {
                        let cache = try KIVIKVCache(
                            layers: 1, kvHeads: kvh, headDim: d, capacity: T,
                            config: KVCacheConfig(type: type, window: window, important: important), kernels: kern)
                        let out = try KVCacheTests.run(
                            cache: cache, shape: shape, q: q, k: k, v: v, T: T, steps: steps, kernels: kern)
                        let err = zip(out, expect).map { abs(Double($0) - $1) }.max()!
                        XCTAssertLessThanOrEqual(
                            err, tolerance(T: T, d: d), "\(type) d=\(d) \(isa) steps \(steps.count)")
                        outs.append(out)
                    }
                    XCTAssertEqual(outs[0], outs[1], "\(type) \(isa): prompt steps differ from token by token")
                    byLevel.append(outs[0])
                }
                _ = byLevel
            }
        }
    }

    /// mikv with no important positions is the q2 cache; h2o's attention never reads an evicted
    /// position (a huge value there would show).
    func testLimits() throws {
        var rng = SeededRandom(seed: 5)
        let (d, h, kvh, T) = (64, 2, 1, 200)
        let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
        let q = rng.uniform(T * h * d, -2, 2)
        let k = rng.uniform(T * kvh * d, -1.5, 1)
        let v = rng.uniform(T * kvh * d)
        for isa in allLevels {
            let kern = try kernels(isa)
            let steps = [Int](repeating: 1, count: T)
            let mikv = try KIVIKVCache(
                layers: 1, kvHeads: kvh, headDim: d, capacity: T,
                config: KVCacheConfig(type: .mikv, window: 32, important: 0), kernels: kern)
            let q2 = try KIVIKVCache(
                layers: 1, kvHeads: kvh, headDim: d, capacity: T, config: KVCacheConfig(type: .q2, window: 32),
                kernels: kern)
            let a = try KVCacheTests.run(cache: mikv, shape: shape, q: q, k: k, v: v, T: T, steps: steps, kernels: kern)
            let b = try KVCacheTests.run(cache: q2, shape: shape, q: q, k: k, v: v, T: T, steps: steps, kernels: kern)
            let err = zip(a, b).map { abs(Double($0) - Double($1)) }.max()!
            XCTAssertLessThanOrEqual(err, tolerance(T: T, d: d), "\(isa)")
        }
    }

    /// Bad options and misuse: a clear error.
    func testBadOptionsThrow() throws {
        let kern = try kernels(.scalar)
        for bad in [Double.nan, -0.1, 1.5, .infinity] {
            XCTAssertThrowsError(
                try KIVIKVCache(
                    layers: 1, kvHeads: 1, headDim: 64, capacity: 64,
                    config: KVCacheConfig(type: .mikv, important: bad), kernels: kern), "\(bad)")
        }
        XCTAssertThrowsError(
            try KIVIKVCache(
                layers: 1, kvHeads: 1, headDim: 64, capacity: 64, config: KVCacheConfig(type: .h2o, scores: .int8),
                kernels: kern))
        let cache = try KIVIKVCache(
            layers: 1, kvHeads: 1, headDim: 64, capacity: 64, config: KVCacheConfig(type: .mikv, window: 8),
            kernels: kern)
        let shape = try AttentionShape(heads: 1, kvHeads: 1, headDim: 64)
        var out = [Float](repeating: 0, count: 64)
        // attention before the row was appended
        XCTAssertThrowsError(
            try [Float](repeating: 0.1, count: 64).withUnsafeBufferPointer { qp in
                try out.withUnsafeMutableBufferPointer { op in
                    try cache.attend(
                        layer: 0, shape: shape, score: .softmax, q: qp, start: 0, count: 1, into: op, kernels: kern)
                }
            })
        let row = [Float](repeating: 0.5, count: 64)
        for t in 0..<40 {
            try cache.append(layer: 0, keys: row, values: row, at: t, count: 1)
            try row.withUnsafeBufferPointer { qp in
                try out.withUnsafeMutableBufferPointer { op in
                    try cache.attend(
                        layer: 0, shape: shape, score: .softmax, q: qp, start: t, count: 1, into: op, kernels: kern)
                }
            }
            try cache.advance(to: t + 1)
        }
        XCTAssertThrowsError(try cache.trim(to: 20), "a partial trim would keep scores of dropped rows")
        XCTAssertNoThrow(try cache.trim(to: 0))
        XCTAssertEqual(cache.length, 0)
        XCTAssertThrowsError(try KVCacheType.named("mikv3"))
    }
}
