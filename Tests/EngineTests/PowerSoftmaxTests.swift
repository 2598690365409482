import XCTest
import Engine

/// Polynomial-only Power-Softmax (public score bound, Goldschmidt reciprocal) against the exact
/// Power-Softmax kernels, on random data and on SmolLM2's real activations.
final class PowerSoftmaxTests: XCTestCase {
    /// Random q/k/v in a head-major cache; exact `.power` (eps 0) vs `.powerPolynomial` (eps 0).
    /// With eps = 0 both are x^p / sum x^p; the polynomial form differs by the Goldschmidt error
    /// (1 - a)^(2^iterations), a = sum (x/B)^p / len, which the test computes per query as its
    /// bound, plus f32 rounding (1e-5: ~d accumulations of unit-size values).
    func testPolynomialMatchesExactKernel() throws {
        let shape = try AttentionShape(heads: 4, kvHeads: 2, headDim: 32)
        let (h, kvh, d, T, cap) = (4, 2, 32, 40, 48)
        var rng = SeededRandom(seed: 11)
        let q = rng.gaussian(T * h * d)
        let keys = rng.gaussian(kvh * cap * d)
        let values = rng.gaussian(kvh * cap * d)
        let scale = shape.defaultScale
        // the largest |score| decides the bound: B = 2 max|x| (a public bound with margin)
        var maxX: Float = 0
        var minA = Float.infinity
        for i in 0..<T {
            for head in 0..<h {
                let kv = head / 2
                var terms: [Float] = []
                for t in 0...i {
                    var dot: Float = 0
                    for j in 0..<d { dot += q[(i * h + head) * d + j] * keys[(kv * cap + t) * d + j] }
                    maxX = max(maxX, abs(dot * scale))
                    terms.append(dot * scale)
                }
                _ = terms
            }
        }
        let bound = 2 * maxX
        for i in 0..<T {
            for head in 0..<h { // smallest a over queries, for the bound
                let kv = head / 2
                var sum: Float = 0
                for t in 0...i {
                    var dot: Float = 0
                    for j in 0..<d { dot += q[(i * h + head) * d + j] * keys[(kv * cap + t) * d + j] }
                    let x = dot * scale / bound
                    sum += x * x * x * x
                }
                minA = min(minA, sum / Float(i + 1))
            }
        }
        let k = try Kernels.selected(threads: 1)
        var exact = [Float](repeating: 0, count: T * h * d)
        try q.withUnsafeBufferPointer { qp in
            try keys.withUnsafeBufferPointer { kp in
                try values.withUnsafeBufferPointer { vp in
                    try exact.withUnsafeMutableBufferPointer { op in
                        try k.attentionPrefillCached(
                            shape: shape, score: .power(p: 4, eps: 0, delta: 1e-6), q: qp, keys: kp, values: vp,
                            capacity: cap, start: 0, into: op)
                    }
                }
            }
        }
        func poly(_ iterations: Int) throws -> Float {
            var out = [Float](repeating: 0, count: T * h * d)
            try q.withUnsafeBufferPointer { qp in
                try keys.withUnsafeBufferPointer { kp in
                    try values.withUnsafeBufferPointer { vp in
                        try out.withUnsafeMutableBufferPointer { op in
                            try k.attentionPolynomial(
                                shape: shape,
                                score: .powerPolynomial(p: 4, eps: 0, bound: bound, iterations: iterations),
                                q: qp, keys: kp, values: vp, capacity: cap, start: 0, into: op)
                        }
                    }
                }
            }
            return zip(out, exact).map { abs($0 - $1) }.max()!
        }
        // iterations for a 1e-7 relative error at the smallest a: (1 - a)^(2^k) <= e^(-a 2^k)
        let its = Int((log2(log(1e7) / Double(minA))).rounded(.up)) + 1
        let predicted = exp(-Double(minA) * pow(2, Double(its))) // relative error of the reciprocal
        let err = try poly(its)
        print(
            """
            Polynomial Power-Softmax: max |poly - exact| = \(err) with \(its) iterations (min a = \(minA), \
            predicted relative error \(predicted))
            """
        )
        XCTAssertLessThan(predicted, 1e-6)
        XCTAssertLessThanOrEqual(Double(err), 3 * predicted + 1e-5) // outputs are O(1): |v| ~ 1, weights sum to 1
        XCTAssertGreaterThan(try poly(2), 1e-2, "two Goldschmidt steps are far from converged: the test can fail")
        assertThrowsEngineError(isInvalidArgument) { _ = try poly(0) }
        assertThrowsEngineError(isInvalidArgument) {
            var out = exact
            try q.withUnsafeBufferPointer { qp in
                try keys.withUnsafeBufferPointer { kp in
                    try values.withUnsafeBufferPointer { vp in
                        try out.withUnsafeMutableBufferPointer { op in
                            try k.attentionPolynomial(
                                shape: shape, score: .power(), q: qp, keys: kp, values: vp, capacity: cap, start: 0,
                                into: op)
                        }
                    }
                }
            }
        }
    }

    /// SmolLM2 with Power-Softmax attention (the model option; SmolLM2 was trained with softmax,
    /// so its outputs are not meaningful text): the option changes the computation, runs on both
    /// the fast kernels and the polynomial path, and is read from GGUF metadata. The polynomial
    /// figure is printed, not asserted: SmolLM2's score maxima range from < 1 to > 100 across
    /// heads, so no single public bound B keeps every head's a = sum (x/B)^p / len above the
    /// ~1e-16 that double-precision Goldschmidt resolves (measured: B = 64: 2.2% of the logit
    /// range, B = 256: 1.4%, B = 128 or 1024: diverged on some head). A model trained with
    /// Power-Softmax has bounded scores; the kernel-level test above checks the bound condition.
    func testModelOptionAndPolynomialEvaluation() throws {
        let k = try Kernels.selected()
        let f = try GGUFFile(path: TestModels.smolLM2)
        let ids = try BPETokenizer(gguf: f).encode("Power-Softmax replaces the exponential by an even power.")
        let exact = try LlamaModel(gguf: f, format: .f32, score: .power(p: 4, eps: 0, delta: 1e-6), kernels: k)
        let poly = try LlamaModel(
            gguf: f, format: .f32, score: .powerPolynomial(p: 4, eps: 0, bound: 256, iterations: 60), kernels: k)
        let a = try exact.forward(ids, cache: exact.makeCache(capacity: 32), allLogits: true)
        let b = try poly.forward(ids, cache: poly.makeCache(capacity: 32), allLogits: true)
        let range = a.max()! - a.min()!
        let diff = zip(a, b).map { abs($0 - $1) }.max()!
        print(
            "SmolLM2 Power-Softmax (B = 256, 60 iterations): max |polynomial - exact| / logit range = \(diff / range)")
        XCTAssertTrue(b.allSatisfy(\.isFinite))
        let softmax = try LlamaModel(gguf: f, format: .f32, kernels: k)
        let c = try softmax.forward(ids, cache: softmax.makeCache(capacity: 32), allLogits: true)
        XCTAssertGreaterThan(
            zip(a, c).map { abs($0 - $1) }.max()!, 1e-2 * range, "the score option changes the computation")
        // from metadata
        var w = try ModelEncryptor.convertLlama(gguf: f, type: .q8_0, kernels: k)
        w.metadata.append(("engine.attention.score", .string("power")))
        w.metadata.append(("engine.attention.power_p", .uint(4)))
        let path = NSTemporaryDirectory() + "engine-power-\(getpid()).gguf"
        defer { unlink(path) }
        try w.write(to: path)
        XCTAssertEqual(try LlamaModel(path: path, kernels: k).score, .power(p: 4, eps: 1e-6, delta: 1e-6))
        w.metadata.append(("engine.attention.score", .string("sigmoid")))
        w.metadata.removeAll { $0.0 == "engine.attention.score" && $0.1 == .string("power") }
        try w.write(to: path)
        XCTAssertThrowsError(try LlamaModel(path: path, kernels: k))
    }
}
