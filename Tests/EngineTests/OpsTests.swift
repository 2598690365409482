import XCTest
import CKernels
import Engine

final class OpsTests: XCTestCase {
    /// GELU: SIMD levels use a polynomial erf (|error| <= 1.5e-7), the reference libm erff; the
    /// difference is bounded by 0.5 |x| (1.5e-7 + 2 ulp of erf) + 2 ulp of the result.
    func testGeluAgainstSerial() throws {
        var rng = SeededRandom(seed: 70)
        let x = rng.uniform(1003, -9, 9) + [0, -0.0, 1e-30, -1e-30, 20, -20]
        var ref = x
        try ref.withUnsafeMutableBufferPointer { try kernels(.scalar).geluErf($0) }
        for isa in allLevels {
            var y = x
            try y.withUnsafeMutableBufferPointer { try kernels(isa).geluErf($0) }
            for i in x.indices {
                let tol = 0.5 * abs(Double(x[i])) * (1.5e-7 + 2.4e-7) + 2.4e-7 * abs(Double(ref[i]))
                XCTAssertLessThanOrEqual(abs(Double(y[i]) - Double(ref[i])), tol, "\(isa) x=\(x[i])")
            }
        }
    }

    /// LayerNorm: the same f32 formula summed in another order: 4 d u relative to |x - mean| / sd.
    func testLayerNormAgainstSerial() throws {
        var rng = SeededRandom(seed: 71)
        for d in [7, 8, 384, 385] {
            let rows = 5
            let x = rng.uniform(rows * d, -4, 6)
            let g = rng.uniform(d, 0.5, 1.5)
            let b = rng.uniform(d)
            var ref = x
            try ref.withUnsafeMutableBufferPointer { r in
                try g.withUnsafeBufferPointer { gp in
                    try b.withUnsafeBufferPointer { bp in
                        try kernels(.scalar).layerNorm(r, d: d, gamma: gp, beta: bp, eps: 1e-12)
                    }
                }
            }
            for isa in allLevels {
                var y = x
                try y.withUnsafeMutableBufferPointer { r in
                    try g.withUnsafeBufferPointer { gp in
                        try b.withUnsafeBufferPointer { bp in
                            try kernels(isa).layerNorm(r, d: d, gamma: gp, beta: bp, eps: 1e-12)
                        }
                    }
                }
                for i in x.indices {
                    XCTAssertEqual(y[i], ref[i], accuracy: Float(4 * d) * 0x1p-24 * (4 + abs(ref[i])), "\(isa) d=\(d)")
                }
            }
        }
        var z = [Float](repeating: 0, count: 10)
        let g = [Float](repeating: 1, count: 4)
        try z.withUnsafeMutableBufferPointer { zp in
            try g.withUnsafeBufferPointer { gp in
                assertThrowsEngineError(isInvalidArgument) {
                    try Kernels.selected().layerNorm(zp, d: 4, gamma: gp, beta: gp, eps: 1e-5)
                }
            }
        }
    }

    /// RMSNorm: serial against a double-precision reference (d u relative, the f32 sum of squares)
    /// and every level against serial on odd sizes (tails), 2 d u relative to |y|.
    func testRMSNormAgainstSerialAndDouble() throws {
        var rng = SeededRandom(seed: 72)
        for d in [7, 8, 9, 576, 577] {
            let rows = 3
            let x = rng.uniform(rows * d, -4, 6)
            let g = rng.uniform(d, 0.5, 1.5)
            var ref = [Float](repeating: 0, count: x.count)
            try kernels(.scalar).rmsNorm(x, g, eps: 1e-5, into: &ref, dim: d)
            let u = 0x1p-24
            for r in 0..<rows {
                let ss = (0..<d).reduce(0.0) { $0 + Double(x[r * d + $1]) * Double(x[r * d + $1]) }
                let inv = 1 / (ss / Double(d) + 1e-5).squareRoot()
                for j in 0..<d {
                    let exact = Double(x[r * d + j]) * inv * Double(g[j])
                    XCTAssertEqual(Double(ref[r * d + j]), exact, accuracy: Double(d + 4) * u * abs(exact) + 1e-30)
                }
            }
            for isa in allLevels {
                var y = [Float](repeating: 0, count: x.count)
                try kernels(isa).rmsNorm(x, g, eps: 1e-5, into: &y, dim: d)
                for i in x.indices {
                    XCTAssertEqual(y[i], ref[i], accuracy: Float(2 * (d + 4)) * 0x1p-24 * abs(ref[i]), "\(isa) d=\(d)")
                }
            }
        }
    }

    /// RoPE: serial against a double-precision rotation (each output is x0 c - x1 s with f32
    /// products: 2 u of |x0| + |x1|), and every level against serial (fused multiply-adds: 2 u).
    func testRoPEAgainstSerialAndDouble() throws {
        var rng = SeededRandom(seed: 73)
        for (heads, hd) in [(3, 64), (2, 6), (5, 10)] {
            let rows = 4
            let x = rng.uniform(rows * heads * hd, -3, 3)
            let angles = (0..<(rows * hd / 2)).map { _ in Double(rng.uniform(1, -100, 100)[0]) }
            let c = angles.map { Float(Foundation.cos($0)) }
            let s = angles.map { Float(Foundation.sin($0)) }
            func run(_ k: Kernels) throws -> [Float] {
                var y = x
                try y.withUnsafeMutableBufferPointer { yp in
                    try c.withUnsafeBufferPointer { cp in
                        try s.withUnsafeBufferPointer { sp in
                            try k.rope(
                                yp, rows: rows, heads: heads, headDim: hd, rowStride: heads * hd, cos: cp, sin: sp)
                        }
                    }
                }
                return y
            }
            let ref = try run(kernels(.scalar))
            for r in 0..<rows {
                for h in 0..<heads {
                    for i in 0..<(hd / 2) {
                        let j = r * heads * hd + h * hd + 2 * i
                        let (x0, x1) = (Double(x[j]), Double(x[j + 1]))
                        let (cc, ss) = (Double(c[r * hd / 2 + i]), Double(s[r * hd / 2 + i]))
                        let tol = 2 * 0x1p-24 * (abs(x0) + abs(x1))
                        XCTAssertEqual(Double(ref[j]), x0 * cc - x1 * ss, accuracy: tol)
                        XCTAssertEqual(Double(ref[j + 1]), x0 * ss + x1 * cc, accuracy: tol)
                    }
                }
            }
            for isa in allLevels {
                let y = try run(kernels(isa))
                for i in x.indices {
                    let pair = i - i % 2
                    let tol = Float(4 * 0x1p-24) * (abs(x[pair]) + abs(x[pair + 1]))
                    XCTAssertEqual(y[i], ref[i], accuracy: tol, "\(isa) heads \(heads) hd \(hd)")
                }
            }
        }
    }

    /// SiLU-gate: serial (libm expf) against double, and every level (vectorised exp, < 2 ulp)
    /// against serial: 8 u relative to |silu(g) u| covers exp, the division and the product.
    func testSiLUMulAgainstSerialAndDouble() throws {
        var rng = SeededRandom(seed: 74)
        let g = rng.uniform(1001, -30, 30) + [0, -0.0, 100, -100, -90]
        let u = rng.uniform(g.count, -2, 2)
        func run(_ k: Kernels) throws -> [Float] {
            var y = g
            try y.withUnsafeMutableBufferPointer { yp in try u.withUnsafeBufferPointer { try k.siluMul(yp, $0) } }
            return y
        }
        let ref = try run(kernels(.scalar))
        for i in g.indices {
            let exact = Double(g[i]) / (1 + Foundation.exp(-Double(g[i]))) * Double(u[i])
            XCTAssertEqual(Double(ref[i]), exact, accuracy: 4 * 0x1p-24 * abs(exact) + 1e-37, "g=\(g[i])")
        }
        for isa in allLevels {
            let y = try run(kernels(isa))
            for i in g.indices {
                XCTAssertEqual(y[i], ref[i], accuracy: 8 * 0x1p-24 * abs(ref[i]) + 1e-37, "\(isa) g=\(g[i])")
            }
        }
    }
}
