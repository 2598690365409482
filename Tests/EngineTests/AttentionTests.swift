import XCTest
import Foundation
import Engine

/// Naive O(T^2) attention in double precision: the independent reference.
/// q: T x H x d, k/v: (start+T) x KVH x d. Returns T x H x d.
func referenceAttention(
    q: [Float], k: [Float], v: [Float], T: Int, start: Int, heads: Int, kvHeads: Int, d: Int,
    score: ScoreFunction
) -> [Double] {
    let g = heads / kvHeads
    let scale = 1 / Double(d).squareRoot()
    var out = [Double](repeating: 0, count: T * heads * d)
    for i in 0..<T {
        for h in 0..<heads {
            let kv = h / g
            let n = start + i + 1
            var s = [Double](repeating: 0, count: n)
            for t in 0..<n {
                var dot = 0.0
                for c in 0..<d { dot += Double(q[(i * heads + h) * d + c]) * Double(k[(t * kvHeads + kv) * d + c]) }
                s[t] = dot * scale
            }
            var w = [Double](repeating: 0, count: n)
            switch score {
            case .softmax:
                let m = s.max()!
                for t in 0..<n { w[t] = Foundation.exp(s[t] - m) }
                let z = w.reduce(0, +)
                for t in 0..<n { w[t] /= z }
            case .power(let p, let eps, let delta):
                let m = s.map { abs($0) }.max()!
                for t in 0..<n { w[t] = Foundation.pow(s[t] / (m + Double(delta)), Double(p)) }
                let z = Double(eps) + w.reduce(0, +)
                for t in 0..<n { w[t] /= z }
            case .powerPolynomial(let p, let eps, let bound, _): // the converged polynomial form
                for t in 0..<n { w[t] = Foundation.pow(s[t] / Double(bound), Double(p)) }
                let z = Double(eps) + w.reduce(0, +)
                for t in 0..<n { w[t] /= z }
            }
            for t in 0..<n {
                for c in 0..<d { out[(i * heads + h) * d + c] += w[t] * Double(v[(t * kvHeads + kv) * d + c]) }
            }
        }
    }
    return out
}

/// Token-major (T x H x d) to head-major (H x T x d), the decode cache layout.
func headMajor(_ x: [Float], T: Int, heads: Int, d: Int) -> [Float] {
    var out = [Float](repeating: 0, count: x.count)
    for t in 0..<T { for h in 0..<heads { for c in 0..<d { out[(h * T + t) * d + c] = x[(t * heads + h) * d + c] } } }
    return out
}

final class AttentionTests: XCTestCase {
    /// f32 attention tolerance: scores carry (d + 2) u relative error of |q||k| (< 1 for these
    /// inputs), exp adds 2 ulp, the sums over T add T u; the output is a convex combination of
    /// rows of v, so the absolute error is bounded by max|v| times the relative weight error.
    /// 8x headroom over that first-order estimate.
    func attentionTolerance(T: Int, d: Int, maxAbsV: Double) -> Double { 8 * Double(T + d + 4) * u32 * maxAbsV }

    let scores: [ScoreFunction] = [.softmax, .power(p: 4, eps: 1e-6, delta: 1e-6), .power(p: 2, eps: 1e-3, delta: 0.5)]

    func testPrefillMatchesReference() throws {
        var rng = SeededRandom(seed: 20)
        for (T, start, h, kvh, d) in [(37, 0, 6, 2, 64), (70, 5, 4, 4, 40), (1, 9, 3, 1, 32)] {
            let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
            let q = rng.uniform(T * h * d)
            let k = rng.uniform((start + T) * kvh * d)
            let v = rng.uniform((start + T) * kvh * d)
            for score in scores {
                let ref = referenceAttention(
                    q: q, k: k, v: v, T: T, start: start, heads: h, kvHeads: kvh, d: d, score: score)
                for isa in allLevels {
                    for threads in [1, 2] {
                        let kern = try kernels(isa, threads: threads)
                        var out = [Float](repeating: .nan, count: T * h * d)
                        try q.withUnsafeBufferPointer { qp in
                            try k.withUnsafeBufferPointer { kp in
                                try v.withUnsafeBufferPointer { vp in
                                    try out.withUnsafeMutableBufferPointer {
                                        try kern.attentionPrefill(
                                            shape: shape, score: score, q: qp, k: kp, v: vp, start: start, into: $0)
                                    }
                                }
                            }
                        }
                        let tol = attentionTolerance(T: start + T, d: d, maxAbsV: 1)
                        let err = zip(out, ref).map { abs(Double($0) - $1) }.max()!
                        XCTAssertLessThanOrEqual(
                            err, tol, "\(isa) threads=\(threads) \(score) T=\(T) start=\(start) d=\(d)")
                    }
                }
            }
        }
    }

    /// Decoding position t against a cache of t+1 positions must equal prefill row t.
    func testPrefillEqualsTokenByTokenDecode() throws {
        var rng = SeededRandom(seed: 21)
        let (T, h, kvh, d) = (45, 6, 2, 64)
        let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
        let q = rng.uniform(T * h * d)
        let k = rng.uniform(T * kvh * d)
        let v = rng.uniform(T * kvh * d)
        let kh = headMajor(k, T: T, heads: kvh, d: d)
        let vh = headMajor(v, T: T, heads: kvh, d: d)
        for score in scores {
            for isa in allLevels {
                let kern = try kernels(isa)
                var pre = [Float](repeating: 0, count: T * h * d)
                try q.withUnsafeBufferPointer { qp in
                    try k.withUnsafeBufferPointer { kp in
                        try v.withUnsafeBufferPointer { vp in
                            try pre.withUnsafeMutableBufferPointer {
                                try kern.attentionPrefill(shape: shape, score: score, q: qp, k: kp, v: vp, into: $0)
                            }
                        }
                    }
                }
                for t in 0..<T {
                    var dec = [Float](repeating: 0, count: h * d)
                    try q.withUnsafeBufferPointer { qp in
                        try kh.withUnsafeBytes { kb in
                            try vh.withUnsafeBytes { vb in
                                try dec.withUnsafeMutableBufferPointer {
                                    try kern.attentionDecode(
                                        shape: shape, score: score,
                                        q: UnsafeBufferPointer(rebasing: qp[(t * h * d)..<((t + 1) * h * d)]),
                                        keys: kb, keyType: .f32, values: vb, valueType: .f32, length: t + 1,
                                        capacity: T, into: $0)
                                }
                            }
                        }
                    }
                    let err = (0..<(h * d)).map { abs(dec[$0] - pre[t * h * d + $0]) }.max()!
                    XCTAssertLessThanOrEqual(
                        Double(err), 2 * attentionTolerance(T: T, d: d, maxAbsV: 1), "\(isa) \(score) t=\(t)")
                }
            }
        }
    }

    /// Quantized caches: scoring with f32 queries must equal f32 attention over the dequantized
    /// cache (same values, only rounding differs); int8 scores within the query-rounding bound.
    func testQuantizedCacheDecode() throws {
        var rng = SeededRandom(seed: 22)
        let (T, h, kvh, d) = (300, 4, 2, 64)
        let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
        let q = rng.uniform(h * d, -2, 2)
        let k = rng.uniform(T * kvh * d)
        let v = rng.uniform(T * kvh * d)
        for kt in [RowType.f16, .q8_0, .q4_1, .q2_1] {
            let ref = try kernels(.scalar)
            let kq = try QuantizedMatrix(
                quantizing: headMajor(k, T: T, heads: kvh, d: d), rows: T * kvh, cols: d, type: kt, kernels: ref)
            let vq = try QuantizedMatrix(
                quantizing: headMajor(v, T: T, heads: kvh, d: d), rows: T * kvh, cols: d, type: kt, kernels: ref)
            // back to token-major for the reference
            let kd = headMajor(kq.dequantized(kernels: ref), T: kvh, heads: T, d: d)
            let vd = headMajor(vq.dequantized(kernels: ref), T: kvh, heads: T, d: d)
            let expect = referenceAttention(
                q: q, k: kd, v: vd, T: 1, start: T - 1, heads: h, kvHeads: kvh, d: d, score: .softmax)
            // Query rounding to int8: |score error| <= scale * sum_j |k_j| * d_q / 2 with
            // d_q = max|q| / 127 per block; the output moves by at most 2 * max|v| * that.
            let maxQ = Double(q.map { abs($0) }.max()!)
            let maxK = Double(kd.map { abs($0) }.max()!)
            let scoreErr = Double(d) * maxK * (maxQ / 127) / 2 / Double(d).squareRoot()
            let int8Tol = 2 * scoreErr * Double(vd.map { abs($0) }.max()!) * 1.1
            for isa in allLevels {
                for int8 in kt.isQuantized ? [false, true] : [false] {
                    let kern = try kernels(isa)
                    var out = [Float](repeating: 0, count: h * d)
                    try q.withUnsafeBufferPointer { qp in
                        try kq.bytes.withUnsafeBytes { kb in
                            try vq.bytes.withUnsafeBytes { vb in
                                try out.withUnsafeMutableBufferPointer {
                                    try kern.attentionDecode(
                                        shape: shape, q: qp, keys: kb, keyType: kt, values: vb, valueType: kt,
                                        length: T, int8Scores: int8, into: $0)
                                }
                            }
                        }
                    }
                    let err = zip(out, expect).map { abs(Double($0) - $1) }.max()!
                    let tol = attentionTolerance(T: T, d: d, maxAbsV: 1) + (int8 ? int8Tol : 0)
                    XCTAssertLessThanOrEqual(err, tol, "\(isa) \(kt) int8=\(int8)")
                }
            }
        }
    }

    /// The split of a long context across threads (partial states merged) changes only rounding.
    func testLongContextSplitMatchesSingleThread() throws {
        var rng = SeededRandom(seed: 23)
        let (T, h, kvh, d) = (5000, 4, 1, 64)
        let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
        let q = rng.uniform(h * d, -3, 3)
        let k = rng.uniform(T * kvh * d)
        let v = rng.uniform(T * kvh * d)
        for score in scores {
            var outs: [[Float]] = []
            for threads in [1, 2] {
                let kern = try kernels(ISA.detected, threads: threads)
                var out = [Float](repeating: 0, count: h * d)
                try q.withUnsafeBufferPointer { qp in
                    try k.withUnsafeBytes { kb in
                        try v.withUnsafeBytes { vb in
                            try out.withUnsafeMutableBufferPointer {
                                try kern.attentionDecode(
                                    shape: shape, score: score, q: qp, keys: kb, keyType: .f32, values: vb,
                                    valueType: .f32, length: T, into: $0)
                            }
                        }
                    }
                }
                outs.append(out)
            }
            let ref = referenceAttention(
                q: q, k: k, v: v, T: 1, start: T - 1, heads: h, kvHeads: kvh, d: d, score: score)
            for o in outs {
                XCTAssertLessThanOrEqual(
                    zip(o, ref).map { abs(Double($0) - $1) }.max()!, attentionTolerance(T: T, d: d, maxAbsV: 1),
                    "\(score)")
            }
        }
    }

    func testBadInputThrows() throws {
        let k = try Kernels.selected()
        assertThrowsEngineError(isInvalidArgument, "heads not multiple") {
            _ = try AttentionShape(heads: 5, kvHeads: 2, headDim: 8)
        }
        assertThrowsEngineError(isInvalidArgument, "zero dim") {
            _ = try AttentionShape(heads: 2, kvHeads: 1, headDim: 0)
        }
        let shape = try AttentionShape(heads: 2, kvHeads: 1, headDim: 32)
        let q = [Float](repeating: 0.1, count: 64)
        let kv = [Float](repeating: 0.1, count: 3 * 32)
        var out = [Float](repeating: 0, count: 64)
        try q.withUnsafeBufferPointer { qp in
            try kv.withUnsafeBufferPointer { kp in
                try out.withUnsafeMutableBufferPointer { op in
                    assertThrowsEngineError(isInvalidArgument, "odd power") {
                        try k.attentionPrefill(
                            shape: shape, score: .power(p: 3), q: qp, k: kp, v: kp, start: 2, into: op)
                    }
                    assertThrowsEngineError(isInvalidArgument, "kv rows") {
                        try k.attentionPrefill(shape: shape, q: qp, k: kp, v: kp, start: 0, into: op)
                    }
                    let nan = [Float](repeating: .nan, count: 64)
                    try nan.withUnsafeBufferPointer { np in
                        assertThrowsEngineError(isNonFinite, "NaN q") {
                            try k.attentionPrefill(shape: shape, q: np, k: kp, v: kp, start: 2, into: op)
                        }
                    }
                    try kv.withUnsafeBytes { kb in
                        assertThrowsEngineError(isInvalidArgument, "empty cache") {
                            try k.attentionDecode(
                                shape: shape, q: qp, keys: kb, keyType: .f32, values: kb, valueType: .f32, length: 0,
                                into: op)
                        }
                        assertThrowsEngineError(isInvalidArgument, "cache too short") {
                            try k.attentionDecode(
                                shape: shape, q: qp, keys: kb, keyType: .f32, values: kb, valueType: .f32, length: 4,
                                into: op)
                        }
                        assertThrowsEngineError(isInvalidArgument, "int8 on f32 keys") {
                            try k.attentionDecode(
                                shape: shape, q: qp, keys: kb, keyType: .f32, values: kb, valueType: .f32, length: 3,
                                int8Scores: true, into: op)
                        }
                    }
                }
            }
        }
    }
}
