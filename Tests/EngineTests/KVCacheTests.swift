import CKernels
import Foundation
import XCTest

import Engine

/// The KV cache types against dequantize-then-attend in double precision. The references
/// restate each format from its documentation (ck_attention.h, docs/kv-cache.md): KIVI keys are
/// quantized here per channel over groups of 32 tokens in the test's own code; value rows use
/// the Q4_1 / Q2_1 / Q8_0 / Q4_0 row formats, dequantized by the serial kernels that
/// QMatmulTests checks against GGUF's own reader.
final class KVCacheTests: XCTestCase {
    /// Same bound as AttentionTests (convex combination of value rows, f32 sums over T + d
    /// terms), with 16x headroom instead of 8x: KIVI scores add q.min to sum (q * scale) * code,
    /// two terms up to twice |q.k| each.
    func tolerance(T: Int, d: Int, maxAbsV: Double) -> Double { 16 * Double(T + d + 4) * u32 * maxAbsV }

    /// KIVI key quantization restated: per channel min and max over the 32 tokens, min and
    /// scale = (max - min) / (2^b - 1) rounded to half, codes rounded to nearest, clamped.
    static func kiviKeys(_ rows: [Float], d: Int, bits: Int) -> [Float] {
        let top = Float((1 << bits) - 1)
        var out = rows
        for c in 0..<d {
            let col = (0..<32).map { rows[$0 * d + c] }
            let mq = Float(Float16(col.min()!))
            let sq = Float(Float16((col.max()! - mq) / top))
            let inv: Float = sq > 0 ? 1 / sq : 0
            for t in 0..<32 {
                let code = min(max(((col[t] - mq) * inv).rounded(.toNearestOrEven), 0), top)
                out[t * d + c] = sq * code + mq
            }
        }
        return out
    }

    /// What position t (of `filled`) holds in a KIVI cache with window R: quantized below
    /// q(filled) = 32 * floor((filled - R) / 32), f16 above. Tokens enter the cache in f16 and
    /// are quantized from there.
    static func kiviView(
        k: [Float], v: [Float], filled: Int, kvHeads: Int, d: Int, bits: Int, window: Int
    ) throws -> (k: [Float], v: [Float]) {
        let qEnd = filled < window ? 0 : 32 * ((filled - window) / 32)
        var kk = [Float](repeating: 0, count: filled * kvHeads * d)
        var vv = kk
        let ref = try kernels(.scalar)
        let k = k.map { Float(Float16($0)) }
        let v = v.map { Float(Float16($0)) }
        for h in 0..<kvHeads {
            for g in 0..<(qEnd / 32) {
                var rows = [Float](repeating: 0, count: 32 * d)
                for t in 0..<32 { for c in 0..<d { rows[t * d + c] = k[((g * 32 + t) * kvHeads + h) * d + c] } }
                let kq = kiviKeys(rows, d: d, bits: bits)
                for t in 0..<32 { for c in 0..<d { kk[((g * 32 + t) * kvHeads + h) * d + c] = kq[t * d + c] } }
            }
            for t in 0..<filled {
                let row = Array(v[((t * kvHeads + h) * d)..<((t * kvHeads + h + 1) * d)])
                let base = (t * kvHeads + h) * d
                if t < qEnd {
                    let vq = try QuantizedMatrix(
                        quantizing: row, rows: 1, cols: d, type: bits == 4 ? .q4_1 : .q2_1, kernels: ref)
                    let deq = vq.dequantized(kernels: ref)
                    for c in 0..<d { vv[base + c] = deq[c] }
                } else {
                    for c in 0..<d {
                        kk[base + c] = Float(Float16(k[base + c]))
                        vv[base + c] = Float(Float16(row[c]))
                    }
                }
            }
        }
        return (kk, vv)
    }

    /// Appends T positions in steps of `steps` and attends each step's rows; returns all rows'
    /// outputs (T x heads x d).
    static func run(
        cache: any KVCache, shape: AttentionShape, q: [Float], k: [Float], v: [Float], T: Int, steps: [Int],
        kernels kern: Kernels
    ) throws -> [Float] {
        let (h, kvh, d) = (shape.heads, shape.kvHeads, shape.headDim)
        var out = [Float](repeating: 0, count: T * h * d)
        var pos = 0
        for n in steps {
            let ks = Array(k[(pos * kvh * d)..<((pos + n) * kvh * d)])
            let vs = Array(v[(pos * kvh * d)..<((pos + n) * kvh * d)])
            try cache.append(layer: 0, keys: ks, values: vs, at: pos, count: n)
            try q.withUnsafeBufferPointer { qp in
                try out.withUnsafeMutableBufferPointer { op in
                    try cache.attend(
                        layer: 0, shape: shape, score: .softmax,
                        q: UnsafeBufferPointer(rebasing: qp[(pos * h * d)..<((pos + n) * h * d)]), start: pos, count: n,
                        into: UnsafeMutableBufferPointer(rebasing: op[(pos * h * d)..<((pos + n) * h * d)]),
                        kernels: kern)
                }
            }
            try cache.advance(to: pos + n)
            pos += n
        }
        return out
    }

    /// Every KIVI configuration and ISA level: each query row (decoded alone or in a prompt
    /// chunk) equals attention over the documented view of the cache, in double.
    func testKIVIAttentionMatchesDequantizedReference() throws {
        var rng = SeededRandom(seed: 41)
        for (d, h, kvh, T, window) in [(64, 6, 2, 229, 40), (96, 4, 4, 101, 0), (32, 8, 1, 140, 64)] {
            let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
            let q = rng.uniform(T * h * d, -2, 2)
            let k = rng.uniform(T * kvh * d, -1.5, 1)
            let v = rng.uniform(T * kvh * d)
            for bits in [4, 2] {
                // the reference: row i attends the view at filled = i + 1
                var expect = [Double](repeating: 0, count: T * h * d)
                for i in 0..<T {
                    let view = try Self.kiviView(
                        k: k, v: v, filled: i + 1, kvHeads: kvh, d: d, bits: bits, window: window)
                    let r = referenceAttention(
                        q: Array(q[(i * h * d)..<((i + 1) * h * d)]), k: view.k, v: view.v, T: 1, start: i, heads: h,
                        kvHeads: kvh, d: d, score: .softmax)
                    for j in 0..<(h * d) { expect[i * h * d + j] = r[j] }
                }
                for isa in allLevels {
                    for steps in [[Int](repeating: 1, count: T), [T / 3, 1, 1, T / 3, T - 2 * (T / 3) - 2]] {
                        let kern = try kernels(isa, threads: 2)
                        let cache = try KIVIKVCache(
                            layers: 1, kvHeads: kvh, headDim: d, capacity: T,
                            config: KVCacheConfig(type: bits == 4 ? .q4 : .q2, window: window), kernels: kern)
                        let out = try Self.run(
                            cache: cache, shape: shape, q: q, k: k, v: v, T: T, steps: steps, kernels: kern)
                        let err = zip(out, expect).map { abs(Double($0) - $1) }.max()!
                        XCTAssertLessThanOrEqual(
                            err, tolerance(T: T, d: d, maxAbsV: 1),
                            "d=\(d) q\(bits) R=\(window) \(isa) steps \(steps.count)")
                    }
                }
            }
        }
    }

    /// A long prompt step grows the f16 window; once its rows are quantized the memory goes
    /// back, and later steps still equal a token-by-token cache exactly.
    func testKIVIWindowShrinksAfterLongStep() throws {
        var rng = SeededRandom(seed: 53)
        let (d, h, kvh, T) = (64, 3, 1, 700)
        let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
        let q = rng.uniform(T * h * d, -2, 2)
        let k = rng.uniform(T * kvh * d)
        let v = rng.uniform(T * kvh * d)
        let kern = try kernels(.avx2 <= ISA.detected ? .avx2 : .scalar)
        let config = KVCacheConfig(type: .q4, window: 16)
        let big = try KIVIKVCache(layers: 1, kvHeads: kvh, headDim: d, capacity: T, config: config, kernels: kern)
        let before = big.memoryBytes
        let a = try Self.run(cache: big, shape: shape, q: q, k: k, v: v, T: T, steps: [600, 1, 99], kernels: kern)
        XCTAssertEqual(big.memoryBytes, before, "the window is back to its base size")
        let small = try KIVIKVCache(layers: 1, kvHeads: kvh, headDim: d, capacity: T, config: config, kernels: kern)
        let b = try Self.run(
            cache: small, shape: shape, q: q, k: k, v: v, T: T, steps: [Int](repeating: 1, count: T), kernels: kern)
        XCTAssertEqual(a, b)
    }

    /// f16 / q8_0 / q4_0 row caches: attention over the dequantized rows, every level, decode
    /// and prompt chunks.
    func testRowCachesMatchDequantizedReference() throws {
        var rng = SeededRandom(seed: 43)
        let (d, h, kvh, T) = (64, 6, 3, 150)
        let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
        let q = rng.uniform(T * h * d, -2, 2)
        let k = rng.uniform(T * kvh * d)
        let v = rng.uniform(T * kvh * d)
        let ref = try kernels(.scalar)
        for type in [RowType.f16, .q8_0, .q4_0] {
            let kd = try QuantizedMatrix(quantizing: k, rows: T * kvh, cols: d, type: type, kernels: ref)
                .dequantized(kernels: ref)
            let vd = try QuantizedMatrix(quantizing: v, rows: T * kvh, cols: d, type: type, kernels: ref)
                .dequantized(kernels: ref)
            let expect = referenceAttention(
                q: q, k: kd, v: vd, T: T, start: 0, heads: h, kvHeads: kvh, d: d, score: .softmax)
            // int8 queries (AttentionTests' bound): each score moves by at most
            // scale * sum_j |k_j| * (max|q| / 127) / 2; the output by twice that times max|v|.
            let maxK = Double(kd.map { abs($0) }.max()!)
            let scoreErr = Double(d) * maxK * (2.0 / 127) / 2 / Double(d).squareRoot()
            let int8Tol = 2 * scoreErr * Double(vd.map { abs($0) }.max()!) * 1.1
            for isa in allLevels {
                for steps in [[Int](repeating: 1, count: T), [64, 1, T - 65]] {
                    for int8 in type.isQuantized ? [false, true] : [false] {
                        let kern = try kernels(isa, threads: 2)
                        let cache = try RowKVCache(
                            layers: 1, kvHeads: kvh, headDim: d, capacity: T, type: type, int8Scores: int8,
                            kernels: kern)
                        let out = try Self.run(
                            cache: cache, shape: shape, q: q, k: k, v: v, T: T, steps: steps, kernels: kern)
                        let err = zip(out, expect).map { abs(Double($0) - $1) }.max()!
                        let tol = tolerance(T: T, d: d, maxAbsV: 1) + (int8 ? int8Tol : 0)
                        XCTAssertLessThanOrEqual(err, tol, "\(type) \(isa) \(steps.count) int8 \(int8)")
                    }
                }
            }
        }
    }

    /// The KIVI score kernel of every level against the serial one on a group with extreme
    /// channels (constant, wide, tiny).
    func testKIVIScoreKernelLevelsAgree() throws {
        var rng = SeededRandom(seed: 47)
        for bits in [Int32(4), 2] {
            for (d, g) in [(32, 1), (64, 3), (128, 5)] {
                var keys = rng.uniform(32 * d, -3, 3)
                for t in 0..<32 { keys[t * d] = 0.25 } // constant channel: scale 0
                for t in 0..<32 { keys[t * d + 1] = Float(t) * 1e-4 } // tiny range
                var group = [UInt8](repeating: 0, count: ck_kivi_group_bytes(bits, d))
                XCTAssertEqual(ck_kivi_quantize_keys(bits, d, keys, d, &group), CK_OK)
                var deq = [Float](repeating: 0, count: 32 * d)
                XCTAssertEqual(ck_kivi_dequantize_keys(bits, d, group, &deq), CK_OK)
                XCTAssertEqual(deq[5 * d], 0.25)
                let qs = rng.uniform(g * d, -1, 1)
                var expect = [Double](repeating: 0, count: g * 32)
                for j in 0..<g {
                    for t in 0..<32 {
                        expect[j * 32 + t] = (0..<d).reduce(0.0) {
                            $0 + Double(qs[j * d + $1]) * Double(deq[t * d + $1])
                        }
                    }
                }
                let bound = (0..<g).map { j in (0..<d).reduce(0.0) { $0 + abs(Double(qs[j * d + $1])) } }.max()! * 3
                for isa in allLevels {
                    let table = ck_attention_kernels_for(ck_isa(rawValue: UInt32(isa.rawValue)))!
                    var qp = [Float](repeating: 0, count: g * d)
                    var s = [Float](repeating: 0, count: g * 40)
                    table.pointee.kivi_scores(bits, d, group, qs, g, &qp, &s, 40)
                    for j in 0..<g {
                        for t in 0..<32 {
                            XCTAssertEqual(
                                Double(s[j * 40 + t]), expect[j * 32 + t], accuracy: 4 * Double(d + 2) * u32 * bound,
                                "\(isa) b=\(bits) d=\(d) q\(j) t\(t)")
                        }
                    }
                }
            }
        }
    }

    /// The integer KIVI score kernel of every level against the operations restated in double:
    /// per query qp = qs * scale (f32, the stored half scale), step = max|qp| / 127, int8
    /// qi = qp * (127 / max|qp|) rounded to nearest even; score = step * sum qi * code + qs . min.
    /// The integer sum is exact, so only the f32 rounding of the base and the final product
    /// remain (the f32 kernel's bound). Also: the int8 scores stay within the quantization bound
    /// of the exact scores, step / 2 * sum of the codes.
    func testKIVIInt8ScoreKernelMatchesRestatement() throws {
        var rng = SeededRandom(seed: 59)
        for bits in [Int32(4), 2] {
            let top = Double((1 << bits) - 1)
            for (d, g) in [(32, 1), (64, 3), (128, 5)] {
                var keys = rng.uniform(32 * d, -3, 3)
                for t in 0..<32 { keys[t * d + 2] = -0.5 } // constant channel: scale 0
                for t in 0..<32 { keys[t * d + 7] = Float(t) * 20 } // outlier channel
                var group = [UInt8](repeating: 0, count: ck_kivi_group_bytes(bits, d))
                XCTAssertEqual(ck_kivi_quantize_keys(bits, d, keys, d, &group), CK_OK)
                var deq = [Float](repeating: 0, count: 32 * d)
                XCTAssertEqual(ck_kivi_dequantize_keys(bits, d, group, &deq), CK_OK)
                // the documented header: half scales, then half minimums
                let halves = group.withUnsafeBytes { raw in
                    (0..<(2 * d)).map { raw.load(fromByteOffset: 2 * $0, as: UInt16.self) }
                }
                let scale = (0..<d).map { Float(Float16(bitPattern: halves[$0])) }
                let mins = (0..<d).map { Float(Float16(bitPattern: halves[d + $0])) }
                let code: [Double] = (0..<(32 * d)).map { i in
                    let c = i % d
                    return scale[c] > 0 ? ((Double(deq[i]) - Double(mins[c])) / Double(scale[c])).rounded() : 0
                }
                var qs = rng.uniform(g * d, -1, 1)
                qs[0] = 0.75
                var expect = [Double](repeating: 0, count: g * 32)
                var exact = expect
                var quantErr = [Double](repeating: 0, count: g)
                for j in 0..<g {
                    let qp = (0..<d).map { qs[j * d + $0] * scale[$0] }
                    let amax = qp.map { abs($0) }.max()!
                    let inv: Float = amax > 0 ? 127 / amax : 0
                    let qi = qp.map { Double(($0 * inv).rounded(.toNearestOrEven)) }
                    let step = Double(amax / 127)
                    let base = (0..<d).reduce(0.0) { $0 + Double(qs[j * d + $1]) * Double(mins[$1]) }
                    for t in 0..<32 {
                        let acc = (0..<d).reduce(0.0) { $0 + qi[$1] * code[t * d + $1] }
                        expect[j * 32 + t] = step * acc + base
                        exact[j * 32 + t] = (0..<d).reduce(0.0) {
                            $0 + Double(qs[j * d + $1]) * Double(deq[t * d + $1])
                        }
                    }
                    quantErr[j] = step / 2 * top * Double(d)
                }
                // |score| and |base| are at most sum |qs| * max |k| (and max |min|)
                let maxK = Double((deq + mins).map { abs($0) }.max()!)
                let bound = (0..<g).map { j in (0..<d).reduce(0.0) { $0 + abs(Double(qs[j * d + $1])) } }.max()! * maxK
                for isa in allLevels {
                    let table = ck_attention_kernels_for(ck_isa(rawValue: UInt32(isa.rawValue)))!
                    var scratch = [Float](repeating: 0, count: 2 * g * d)
                    var s = [Float](repeating: 0, count: g * 40)
                    table.pointee.kivi_scores_i8(bits, d, group, qs, g, &scratch, &s, 40)
                    for j in 0..<g {
                        for t in 0..<32 {
                            let got = Double(s[j * 40 + t])
                            XCTAssertEqual(
                                got, expect[j * 32 + t], accuracy: 4 * Double(d + 2) * u32 * bound,
                                "\(isa) b=\(bits) d=\(d) q\(j) t\(t)")
                            XCTAssertEqual(
                                got, exact[j * 32 + t], accuracy: quantErr[j] + 4 * Double(d + 2) * u32 * bound)
                        }
                    }
                }
            }
        }
    }

    /// Bad options and misuse: a clear error each.
    func testBadOptionsThrow() throws {
        let kern = try kernels(.scalar)
        assertThrowsEngineError(isInvalidArgument, "unknown type") { _ = try KVCacheType.named("q3") }
        XCTAssertEqual(try KVCacheType.named("Q8_0"), .q8_0)
        assertThrowsEngineError(isInvalidArgument, "window above the context") {
            try KVCacheConfig(type: .q4, window: 101).validate(context: 100, headDim: 64)
        }
        XCTAssertNoThrow(try KVCacheConfig(type: .q4, window: 100).validate(context: 100, headDim: 64))
        assertThrowsEngineError(isInvalidArgument, "int8 scores on an f32 cache") {
            try KVCacheConfig(type: .f32, scores: .int8).validate(context: 100, headDim: 64)
        }
        XCTAssertNoThrow(try KVCacheConfig(type: .q2, scores: .int8).validate(context: 1000, headDim: 64))
        assertThrowsEngineError(isInvalidArgument, "head size") {
            _ = try KIVIKVCache(
                layers: 1, kvHeads: 1, headDim: 48, capacity: 100, config: KVCacheConfig(type: .q2), kernels: kern)
        }
        assertThrowsEngineError(isInvalidArgument, "negative window") {
            _ = try KIVIKVCache(
                layers: 1, kvHeads: 1, headDim: 64, capacity: 100, config: KVCacheConfig(type: .q4, window: -1),
                kernels: kern)
        }
        // keys beyond the half range cannot be stored
        let cache = try KIVIKVCache(
            layers: 1, kvHeads: 1, headDim: 32, capacity: 64, config: KVCacheConfig(type: .q4, window: 0), kernels: kern
        )
        var k = [Float](repeating: 1, count: 32 * 32)
        k[5] = 1e6
        XCTAssertThrowsError(try cache.append(layer: 0, keys: k, values: k, at: 0, count: 32))
        // trimming below the f16 window is refused, above it works
        let c2 = try KIVIKVCache(
            layers: 1, kvHeads: 1, headDim: 32, capacity: 128, config: KVCacheConfig(type: .q4, window: 8),
            kernels: kern)
        let x = [Float](repeating: 0.5, count: 100 * 32)
        try c2.append(layer: 0, keys: x, values: x, at: 0, count: 100)
        try c2.advance(to: 100)
        assertThrowsEngineError(isInvalidArgument, "trim below the window") { try c2.trim(to: 20) }
        XCTAssertNoThrow(try c2.trim(to: 90))
    }
}
