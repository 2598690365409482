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
}
