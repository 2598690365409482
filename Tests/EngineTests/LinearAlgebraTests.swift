import XCTest
import Engine

final class LinearAlgebraTests: XCTestCase {
    func testQRReconstructsAndIsOrthonormal() throws {
        var rng = SeededRandom(seed: 40)
        let (m, n) = (9, 5)
        let a = (0..<(m * n)).map { _ in Double(rng.nextGaussian()) }
        let (q, r) = try LinearAlgebra.qr(a, rows: m, cols: n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for t in 0..<n { s += q[i * n + t] * r[t * n + j] }
                XCTAssertEqual(s, a[i * n + j], accuracy: 1e-12) // double: ~n * 1e-16 * |A|
            }
        }
        for i in 0..<n {
            for j in 0..<n {
                var s = 0.0
                for t in 0..<m { s += q[t * n + i] * q[t * n + j] }
                XCTAssertEqual(s, i == j ? 1 : 0, accuracy: 1e-12)
            }
        }
        for i in 0..<n { for j in 0..<i { XCTAssertEqual(r[i * n + j], 0) } }
    }

    func testRandomOrthogonal() throws {
        var rng = SeededRandom(seed: 41)
        let n = 16
        let q = try LinearAlgebra.randomOrthogonal(n, rng: &rng)
        for i in 0..<n {
            for j in 0..<n {
                var s = 0.0
                for t in 0..<n { s += q[i * n + t] * q[j * n + t] }
                XCTAssertEqual(s, i == j ? 1 : 0, accuracy: 1e-12)
            }
        }
        var rng2 = SeededRandom(seed: 41)
        XCTAssertEqual(try LinearAlgebra.randomOrthogonal(n, rng: &rng2), q, "same seed, same matrix")
    }

    func testSVDReconstructs() throws {
        var rng = SeededRandom(seed: 42)
        let (m, n) = (7, 11)
        let a = rng.uniform(m * n)
        let (u, s, vt) = try LinearAlgebra.svd(a, rows: m, cols: n)
        XCTAssertEqual(s, s.sorted(by: >))
        for i in 0..<m {
            for j in 0..<n {
                var x: Float = 0
                for t in 0..<m { x += u[i * m + t] * s[t] * vt[t * n + j] }
                XCTAssertEqual(x, a[i * n + j], accuracy: 1e-5) // f32 LAPACK: ~k * 1e-7 * |A| headroom 10x
            }
        }
        assertThrowsEngineError(isInvalidArgument, "size") { _ = try LinearAlgebra.svd([1, 2, 3], rows: 2, cols: 2) }
        assertThrowsEngineError(isNonFinite, "NaN") { _ = try LinearAlgebra.svd([1, .nan, 3, 4], rows: 2, cols: 2) }
        assertThrowsEngineError(isInvalidArgument, "QR shape") { _ = try LinearAlgebra.qr([1, 2], rows: 1, cols: 2) }
    }

    func testMatmulAgainstNaive() throws {
        var rng = SeededRandom(seed: 43)
        let (m, k, n) = (5, 7, 3)
        let a = rng.uniform(m * k)
        let b = rng.uniform(k * n)
        let c = try LinearAlgebra.matmul(a, b, m: m, k: k, n: n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for t in 0..<k { s += Double(a[i * k + t]) * Double(b[t * n + j]) }
                XCTAssertEqual(Double(c[i * n + j]), s, accuracy: Double(k + 1) * 0x1p-24 * Double(k))
            }
        }
    }
}
