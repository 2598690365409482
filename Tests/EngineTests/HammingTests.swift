import XCTest
import Engine

/// Independent reference: count differing bits one at a time.
private func bitByBit(_ a: ArraySlice<UInt64>, _ b: ArraySlice<UInt64>) -> UInt32 {
    var s: UInt32 = 0
    for (x, y) in zip(a, b) {
        var v = x ^ y
        for _ in 0..<64 {
            s += UInt32(v & 1)
            v >>= 1
        }
    }
    return s
}

final class HammingTests: XCTestCase {
    // Odd code counts exercise the 4-, 8- and 16-code SIMD blocks and their scalar tails; the word
    // counts exercise the 256-bit specialisation and the masked tails of the general path.
    let bitsList = [64, 128, 192, 256, 320, 512, 576, 1024]
    let counts = [1, 3, 7, 8, 9, 31, 33, 257]

    func testOneToManyEqualsBitCounting() throws {
        var rng = SeededRandom(seed: 1)
        for isa in allLevels {
            let k = try kernels(isa)
            for bits in bitsList {
                let w = bits / 64
                for n in counts {
                    let q = rng.words(w)
                    let c = rng.words(n * w)
                    var out = [UInt32](repeating: .max, count: n)
                    try q.withUnsafeBufferPointer { qp in
                        try c.withUnsafeBufferPointer { cp in
                            try out.withUnsafeMutableBufferPointer {
                                try k.hammingDistances(query: qp, codes: cp, bits: bits, into: $0)
                            }
                        }
                    }
                    for i in 0..<n {
                        // Integer-valued: exact equality, no tolerance.
                        XCTAssertEqual(
                            out[i], bitByBit(q[...], c[(i * w)..<((i + 1) * w)]), "\(isa) bits=\(bits) n=\(n) i=\(i)")
                    }
                }
            }
        }
    }

    func testExtremeCodes() throws {
        for isa in allLevels {
            let k = try kernels(isa)
            let w = 4
            let n = 25 // a 16-code block, an 8-code block and a tail at the largest distance
            let q = [UInt64](repeating: 0, count: w)
            let c = [UInt64](repeating: .max, count: n * w)
            var out = [UInt32](repeating: 0, count: n)
            try q.withUnsafeBufferPointer { qp in
                try c.withUnsafeBufferPointer { cp in
                    try out.withUnsafeMutableBufferPointer {
                        try k.hammingDistances(query: qp, codes: cp, bits: 256, into: $0)
                    }
                }
            }
            XCTAssertEqual(out, [UInt32](repeating: 256, count: n), "\(isa)")
        }
    }

    func testManyToManyEqualsOneToMany() throws {
        var rng = SeededRandom(seed: 2)
        for isa in allLevels {
            let k = try kernels(isa, threads: 2)
            for bits in [256, 576] {
                let w = bits / 64
                let m = 5
                let n = 1037
                let q = rng.words(m * w)
                let c = rng.words(n * w)
                var out = [UInt32](repeating: 0, count: m * n)
                try q.withUnsafeBufferPointer { qp in
                    try c.withUnsafeBufferPointer { cp in
                        try out.withUnsafeMutableBufferPointer {
                            try k.hammingDistances(queries: qp, codes: cp, bits: bits, into: $0)
                        }
                    }
                }
                for i in 0..<m {
                    for j in stride(from: 0, to: n, by: 7) {
                        XCTAssertEqual(
                            out[i * n + j], bitByBit(q[(i * w)..<((i + 1) * w)], c[(j * w)..<((j + 1) * w)]),
                            "\(isa) \(i) \(j)")
                    }
                }
            }
        }
    }

    func testWeightedMultiLevel() throws {
        var rng = SeededRandom(seed: 3)
        let weights: [Float] = [1, 0.5, 0.25]
        for isa in allLevels {
            let k = try kernels(isa)
            let w = 2
            let levels = 3
            let n = 21
            let q = rng.words(w * levels)
            let c = rng.words(n * w * levels)
            var out = [Float](repeating: 0, count: n)
            try q.withUnsafeBufferPointer { qp in
                try c.withUnsafeBufferPointer { cp in
                    try out.withUnsafeMutableBufferPointer {
                        try k.weightedHammingDistances(query: qp, codes: cp, bits: 128, weights: weights, into: $0)
                    }
                }
            }
            for i in 0..<n {
                var expect: Float = 0
                for l in 0..<levels {
                    let base = i * w * levels + l * w
                    expect += weights[l] * Float(bitByBit(q[(l * w)..<((l + 1) * w)], c[base..<(base + w)]))
                }
                // Power-of-two weights times integers below 2^24 are exact in float.
                XCTAssertEqual(out[i], expect, "\(isa) \(i)")
            }
        }
    }

    func testTopKMatchesFullSort() throws {
        var rng = SeededRandom(seed: 4)
        for isa in allLevels {
            let k = try kernels(isa)
            let bits = 256
            let w = 4
            let n = 10_000
            let q = rng.words(w)
            let c = rng.words(n * w)
            var all = [UInt32](repeating: 0, count: n)
            try q.withUnsafeBufferPointer { qp in
                try c.withUnsafeBufferPointer { cp in
                    try all.withUnsafeMutableBufferPointer {
                        try k.hammingDistances(query: qp, codes: cp, bits: bits, into: $0)
                    }
                }
            }
            let expected = (0..<n).sorted { (all[$0], $0) < (all[$1], $1) }.prefix(10)
            let got = try q.withUnsafeBufferPointer { qp in
                try c.withUnsafeBufferPointer { cp in
                    try k.hammingTopK(query: qp, codes: cp, bits: bits, k: 10)
                }
            }
            XCTAssertEqual(got.map(\.index), Array(expected), "\(isa)")
            XCTAssertEqual(got.map(\.distance), expected.map { all[$0] })
            // k larger than the collection returns every code, sorted.
            let small = try q.withUnsafeBufferPointer { qp in
                try c.withUnsafeBufferPointer { cp in
                    try k.hammingTopK(
                        query: qp, codes: UnsafeBufferPointer(rebasing: cp[0..<(5 * w)]), bits: bits, k: 50)
                }
            }
            XCTAssertEqual(small.count, 5)
            XCTAssertEqual(small.map(\.distance), small.map(\.distance).sorted())
        }
    }

    func testBadInputThrows() throws {
        let k = try Kernels.selected()
        let q = [UInt64](repeating: 0, count: 4)
        let c = [UInt64](repeating: 0, count: 40)
        var out = [UInt32](repeating: 0, count: 10)
        try q.withUnsafeBufferPointer { qp in
            try c.withUnsafeBufferPointer { cp in
                try out.withUnsafeMutableBufferPointer { op in
                    assertThrowsEngineError(isInvalidArgument, "bits not multiple of 64") {
                        try k.hammingDistances(query: qp, codes: cp, bits: 100, into: op)
                    }
                    assertThrowsEngineError(isInvalidArgument, "zero bits") {
                        try k.hammingDistances(query: qp, codes: cp, bits: 0, into: op)
                    }
                    assertThrowsEngineError(isInvalidArgument, "query size") {
                        try k.hammingDistances(query: qp, codes: cp, bits: 128, into: op)
                    }
                    assertThrowsEngineError(isInvalidArgument, "output too small") {
                        try k.hammingDistances(
                            query: qp, codes: cp, bits: 256, into: UnsafeMutableBufferPointer(rebasing: op[0..<3]))
                    }
                    assertThrowsEngineError(isInvalidArgument, "codes not whole") {
                        try k.hammingDistances(
                            query: qp, codes: UnsafeBufferPointer(rebasing: cp[0..<6]), bits: 256, into: op)
                    }
                    assertThrowsEngineError(isInvalidArgument, "k = 0") {
                        _ = try k.hammingTopK(query: qp, codes: cp, bits: 256, k: 0)
                    }
                }
            }
        }
        var wout = [Float](repeating: 0, count: 10)
        try q.withUnsafeBufferPointer { qp in
            try c.withUnsafeBufferPointer { cp in
                try wout.withUnsafeMutableBufferPointer { op in
                    assertThrowsEngineError(isNonFinite, "NaN weight") {
                        try k.weightedHammingDistances(query: qp, codes: cp, bits: 128, weights: [1, .nan], into: op)
                    }
                }
            }
        }
        // Zero codes is valid and yields nothing.
        XCTAssertEqual(
            try q.withUnsafeBufferPointer { qp in
                try k.hammingTopK(query: qp, codes: UnsafeBufferPointer(start: nil, count: 0), bits: 256, k: 3)
            }.count, 0)
    }
}
