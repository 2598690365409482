import XCTest
import Engine

/// Vector-search primitives: every SIMD level against the serial reference (odd sizes, both
/// metrics, f32 and f16 rows) and CRC-32C against the standard check value.
final class VecKernelTests: XCTestCase {
    func testDistancesMatchSerial() throws {
        var rng = SeededRandom(seed: 21)
        let serial = try kernels(.scalar)
        for d in [1, 7, 16, 33, 128, 784] {
            let n = 37
            let q = rng.gaussian(d)
            let x = rng.gaussian(n * d)
            let x16 = x.map { Float16($0).bitPattern }
            for metric in [Metric.l2, .innerProduct] {
                var ref = [Float](repeating: 0, count: n)
                var ref16 = ref
                try q.withUnsafeBufferPointer { qp in
                    try x.withUnsafeBufferPointer {
                        try serial.distances(
                            metric, query: qp, data: $0, into: ref.withUnsafeMutableBufferPointer { $0 })
                    }
                    try x16.withUnsafeBufferPointer {
                        try serial.distances(
                            metric, query: qp, f16: $0, into: ref16.withUnsafeMutableBufferPointer { $0 })
                    }
                }
                // the f16 rows are the f32 rows rounded: a double-precision check of the reference itself
                for i in 0..<n {
                    var s = 0.0
                    for j in 0..<d {
                        let a = Double(q[j])
                        let b = Double(Float(Float16(bitPattern: x16[i * d + j])))
                        s += metric == .l2 ? (a - b) * (a - b) : -a * b
                    }
                    // f32 accumulation of d terms of size ~|a b| or (a-b)^2: d * 2^-23 * sum|terms|,
                    // sum|terms| <~ 4d here
                    XCTAssertEqual(Double(ref16[i]), s, accuracy: Double(d) * 1.2e-7 * 4 * Double(d) + 1e-5)
                }
                for isa in allLevels where isa != .scalar {
                    let k = try kernels(isa)
                    var out = [Float](repeating: 0, count: n)
                    var out16 = out
                    try q.withUnsafeBufferPointer { qp in
                        try x.withUnsafeBufferPointer {
                            try k.distances(
                                metric, query: qp, data: $0, into: out.withUnsafeMutableBufferPointer { $0 })
                        }
                        try x16.withUnsafeBufferPointer {
                            try k.distances(
                                metric, query: qp, f16: $0, into: out16.withUnsafeMutableBufferPointer { $0 })
                        }
                    }
                    // Same terms summed in another order: within d * 2^-23 * sum |terms| (sum <~ 4d).
                    let tol = Float(d) * 1.2e-7 * 4 * Float(d) + 1e-5
                    for i in 0..<n {
                        XCTAssertEqual(out[i], ref[i], accuracy: tol, "\(isa) \(metric) d=\(d)")
                        XCTAssertEqual(out16[i], ref16[i], accuracy: tol, "\(isa) \(metric) f16 d=\(d)")
                    }
                }
            }
        }
    }

    func testCRC32C() throws {
        let check = Array("123456789".utf8)
        var rng = SeededRandom(seed: 3)
        let big = (0..<10_001).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var results: [UInt32] = []
        for isa in allLevels {
            let k = try kernels(isa)
            XCTAssertEqual(check.withUnsafeBytes { k.crc32c($0) }, 0xE306_9283, "\(isa): the CRC-32C check value")
            let whole = big.withUnsafeBytes { k.crc32c($0) }
            let chained = big[5000...].withUnsafeBytes { b in
                k.crc32c(b, continuing: big[..<5000].withUnsafeBytes { k.crc32c($0) })
            }
            XCTAssertEqual(whole, chained, "\(isa): chaining")
            results.append(whole)
        }
        XCTAssertEqual(Set(results).count, 1, "all levels agree")
    }
}
