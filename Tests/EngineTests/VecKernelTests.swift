import CKernels
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

    /// f32 to half bit patterns at every level equal Swift's own Float16 conversion (round to
    /// nearest even): random values over the whole half range, ties, subnormals, the overflow
    /// boundary, infinities, signed zeros; NaN stays NaN. Lengths not a multiple of 8.
    func testFloat16Conversion() throws {
        var rng = SeededRandom(seed: 21)
        var x: [Float] = (0..<997).map { _ in
            let e = Float(Int(rng.next() % 48) - 30)
            return (rng.next() & 1 == 0 ? 1 : -1) * Float(rng.next() % 1_000_000) / 1_000_000 * powf(2, e)
        }
        let halfUlpTies: [Float] = [1 + 1.0 / 2048, 1 + 3.0 / 2048, 2049, 2051] // exactly between two halves
        x +=
            halfUlpTies + [
                0, -0, 65504, 65519, 65520, -65520, 1e-8, 3e-8, 6e-8, 5.96e-8, 6.1e-5, .infinity, -.infinity,
            ]
        for isa in allLevels {
            let out = try kernels(isa).float16Bits(x)
            for (i, v) in x.enumerated() {
                XCTAssertEqual(out[i], Float16(v).bitPattern, "\(isa): \(v)")
            }
            let nan = try kernels(isa).float16Bits([.nan, -.nan])
            XCTAssertTrue(nan.allSatisfy { Float16(bitPattern: $0).isNaN }, "\(isa)")
        }
    }

    /// x - half(h) at every level equals the subtraction after Swift's own exact Float16 to Float
    /// conversion, bit for bit: random halves (normal, subnormal), signed zeros, infinities, the
    /// largest half; lengths around the 8-value blocks.
    func testSubtractFloat16() throws {
        var rng = SeededRandom(seed: 22)
        for n in [1, 7, 8, 9, 31, 384, 785] {
            let x = rng.uniform(n)
            var h: [UInt16] = (0..<n).map { _ in UInt16(truncatingIfNeeded: rng.next()) & 0x7BFF } // finite
            let specials: [UInt16] = [0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00]
            for (i, v) in specials.enumerated() where i < n { h[n - 1 - i] = v }
            let want = (0..<n).map { x[$0] - Float(Float16(bitPattern: h[$0])) }
            for isa in allLevels {
                let sub = ck_vec_kernels_for(ck_isa(rawValue: UInt32(isa.rawValue)))!.pointee.sub_f16!
                var out = [Float](repeating: .nan, count: n)
                x.withUnsafeBufferPointer { xp in
                    h.withUnsafeBufferPointer { hp in
                        out.withUnsafeMutableBufferPointer { sub(xp.baseAddress!, hp.baseAddress!, $0.baseAddress!, n) }
                    }
                }
                XCTAssertEqual(out.map(\.bitPattern), want.map(\.bitPattern), "\(isa) n=\(n)")
            }
        }
    }

    /// half to f32 at every level equals Swift's own Float16 to Float conversion, bit for bit, for
    /// every one of the 65,536 bit patterns except NaNs, which must stay NaN (the hardware sets the
    /// quiet bit of a signalling NaN); lengths around the 8-value blocks.
    func testFromFloat16() throws {
        let all = (0...0xFFFF).map { UInt16($0) }
        for isa in allLevels {
            let from = ck_vec_kernels_for(ck_isa(rawValue: UInt32(isa.rawValue)))!.pointee.from_f16!
            for n in [1, 7, 8, 9, 65_536] {
                let h = n == all.count ? all : Array(all[12_345..<(12_345 + n)])
                var out = [Float](repeating: 1, count: n)
                h.withUnsafeBufferPointer { hp in
                    out.withUnsafeMutableBufferPointer { from(hp.baseAddress!, $0.baseAddress!, n) }
                }
                for i in 0..<n {
                    let want = Float(Float16(bitPattern: h[i]))
                    if want.isNaN {
                        XCTAssertTrue(out[i].isNaN, "\(isa) 0x\(String(h[i], radix: 16)) must stay NaN")
                    } else {
                        XCTAssertEqual(out[i].bitPattern, want.bitPattern, "\(isa) 0x\(String(h[i], radix: 16)) n=\(n)")
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
        // lengths around the SIMD levels' three-stream blocks (3 x 1 KiB) against a bitwise CRC
        // restated here, at every offset alignment
        func bitwise(_ b: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = 0xFFFF_FFFF
            for x in b {
                c ^= UInt32(x)
                for _ in 0..<8 { c = c & 1 == 1 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
            }
            return ~c
        }
        let long = (0..<40_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for n in [0, 1, 7, 8, 3071, 3072, 3073, 3080, 6143, 6144, 6151, 9216 + 13, 33_000] {
            for offset in [0, 3] {
                let slice = long[offset..<(offset + n)]
                let want = bitwise(slice)
                for isa in allLevels {
                    let k = try kernels(isa)
                    XCTAssertEqual(slice.withUnsafeBytes { k.crc32c($0) }, want, "\(isa) n=\(n) offset \(offset)")
                }
            }
        }
    }
}
