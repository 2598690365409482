import XCTest
import CKernels
import Engine

private func pqTable(_ isa: ISA) -> ck_pq_kernels { ck_pq_kernels_for(ck_isa(rawValue: UInt32(isa.rawValue)))!.pointee }

final class PQTests: XCTestCase {
    /// Tables against double-precision sums over the (M, ksub, dsub) centroids.
    func testDistanceTablesAgainstDouble() throws {
        var rng = SeededRandom(seed: 30)
        for (m, bits, dsub) in [(3, 8, 5), (8, 4, 3), (5, 4, 16)] {
            let ksub = 1 << bits
            let dim = m * dsub
            let pq = try ProductQuantizer(
                dim: dim, subquantizers: m, bits: bits, centroids: rng.uniform(m * ksub * dsub))
            let q = rng.uniform(dim)
            for isa in allLevels {
                for metric in [Metric.l2, .innerProduct] {
                    var t = [Float](repeating: 0, count: m * ksub)
                    try q.withUnsafeBufferPointer { qp in
                        try t.withUnsafeMutableBufferPointer {
                            try pq.distanceTable(query: qp, metric: metric, kernels: kernels(isa), into: $0)
                        }
                    }
                    for s in 0..<m {
                        for j in 0..<ksub {
                            var e = 0.0
                            var mag = 0.0
                            for c in 0..<dsub {
                                let a = Double(q[s * dsub + c])
                                let b = Double(pq.centroids[(s * ksub + j) * dsub + c])
                                let term = metric == .l2 ? (a - b) * (a - b) : -a * b
                                e += term
                                mag += abs(term) + (metric == .l2 ? abs(a) + abs(b) : 0)
                            }
                            // dsub sequential (fused) multiply-adds: (dsub + 2) u sum|terms|.
                            XCTAssertEqual(
                                Double(t[s * ksub + j]), e, accuracy: Double(dsub + 2) * u32 * mag, "\(isa) \(metric)")
                        }
                    }
                }
            }
        }
    }

    func testScan8AgainstDouble() throws {
        var rng = SeededRandom(seed: 31)
        for m in [4, 12, 16, 32] { // 12: not a whole number of 16-wide gathers (fallback path)
            let n = 203
            let table = rng.uniform(m * 256)
            let codes = (0..<(n * m)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            for isa in allLevels {
                var out = [Float](repeating: 0, count: n)
                try codes.withUnsafeBufferPointer { c in
                    try table.withUnsafeBufferPointer { t in
                        try out.withUnsafeMutableBufferPointer {
                            try kernels(isa).pqScan8(codes: c, subquantizers: m, table: t, into: $0)
                        }
                    }
                }
                for i in 0..<n {
                    var e = 0.0
                    var mag = 0.0
                    for s in 0..<m {
                        let v = Double(table[s * 256 + Int(codes[i * m + s])])
                        e += v
                        mag += abs(v)
                    }
                    XCTAssertEqual(Double(out[i]), e, accuracy: Double(m + 1) * u32 * mag, "\(isa) M=\(m) i=\(i)")
                }
            }
        }
    }

    /// uint16 sums are integers: every level must equal the serial reference and a plain
    /// per-vector sum of the quantized table, exactly.
    func testScan4ExactAgainstPlainSum() throws {
        var rng = SeededRandom(seed: 32)
        for m in [1, 7, 8, 15, 16, 33, 256] {
            for n in [1, 31, 33, 100] {
                let codes = (0..<(n * m)).map { _ in UInt8(rng.next() % 16) }
                let table = rng.uniform(m * 16, 0, 10)
                let packed = try PackedPQ4Codes(codes: codes, subquantizers: m)
                let qt = try table.withUnsafeBufferPointer { try QuantizedPQ4Table(table: $0, subquantizers: m) }
                for isa in allLevels {
                    var out = [UInt16](repeating: 0xffff, count: packed.blocks * 32)
                    try out.withUnsafeMutableBufferPointer {
                        try kernels(isa).pqScan4(codes: packed, table: qt, into: $0)
                    }
                    for i in 0..<n {
                        var s = 0
                        for j in 0..<m { s += Int(qt.entries[j * 16 + Int(codes[i * m + j])]) }
                        XCTAssertEqual(Int(out[i]), s, "\(isa) M=\(m) n=\(n) i=\(i)")
                    }
                    for i in n..<(packed.blocks * 32) { // padding vectors have all-zero codes
                        var s = 0
                        for j in 0..<m { s += Int(qt.entries[j * 16]) }
                        XCTAssertEqual(Int(out[i]), s)
                    }
                }
            }
        }
    }

    /// The table quantizer at every level gives the serial function's bytes, scale and bias bit for
    /// bit: random tables for M around the 8/16-value blocks and the padding (odd M), M = 256,
    /// ties at half steps, a constant table (range 0), signed zeros; a non-finite entry anywhere
    /// is refused before anything is written; M = 0 and 257 are refused.
    func testQuantizeTable4AtEveryLevel() throws {
        var rng = SeededRandom(seed: 41)
        for m in [1, 2, 3, 7, 16, 33, 196, 256] {
            var tables = [rng.uniform(m * 16).map { $0 * 40 + 3 }, [Float](repeating: 2.5, count: m * 16)]
            // range 255, so scale 1: entries 16.5 j land on half steps (ties, to even) for odd j
            tables.append((0..<(m * 16)).map { $0 % 16 == 15 ? 255 : Float($0 % 16) * 16.5 })
            tables.append((0..<(m * 16)).map { $0 % 3 == 0 ? -0.0 : 0.0 }) // which zero is the minimum
            for table in tables {
                let pad = ck_pq_padded_m4(m) * 16
                var want = [UInt8](repeating: 0xAA, count: pad)
                var (ws, wb): (Float, Float) = (0, 0)
                XCTAssertEqual(ck_pq_quantize_table4(table, m, &want, &ws, &wb), CK_OK)
                for isa in allLevels {
                    var got = [UInt8](repeating: 0x55, count: pad)
                    var (s, b): (Float, Float) = (0, 0)
                    XCTAssertEqual(pqTable(isa).quantize4(table, m, &got, &s, &b), CK_OK)
                    XCTAssertEqual(got, want, "\(isa) M=\(m)")
                    XCTAssertEqual(s.bitPattern, ws.bitPattern, "\(isa) M=\(m) scale")
                    XCTAssertEqual(b.bitPattern, wb.bitPattern, "\(isa) M=\(m) bias")
                }
            }
        }
        for isa in allLevels {
            for bad in [Float.nan, .infinity, -.infinity] {
                var table = rng.uniform(33 * 16)
                table[17 * 16 + 9] = bad
                var out = [UInt8](repeating: 7, count: ck_pq_padded_m4(33) * 16)
                var (s, b): (Float, Float) = (0, 0)
                XCTAssertEqual(pqTable(isa).quantize4(table, 33, &out, &s, &b), CK_ERR_NAN, "\(isa) \(bad)")
                XCTAssertTrue(out.allSatisfy { $0 == 7 }, "\(isa): nothing written")
            }
            var out = [UInt8](repeating: 0, count: 258 * 16)
            var (s, b): (Float, Float) = (0, 0)
            let table = [Float](repeating: 1, count: 257 * 16)
            XCTAssertEqual(pqTable(isa).quantize4(table, 0, &out, &s, &b), CK_ERR_ARGUMENT)
            XCTAssertEqual(pqTable(isa).quantize4(table, 257, &out, &s, &b), CK_ERR_ARGUMENT)
        }
    }

    /// The fast-scan candidate filter at every level against a plain loop: the same indices in
    /// the same order, for lengths around the SIMD widths (16, 32) and limits at both ends.
    func testBelow4AgainstPlainFilter() throws {
        var rng = SeededRandom(seed: 41)
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 63, 100, 1000] {
            let sums = (0..<n).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
            for limit in [0, 1, 300, 32767, 32768, 40000, 65534, 65535].map(UInt16.init) {
                let want = (0..<n).filter { sums[$0] <= limit }.map(UInt32.init)
                for isa in allLevels {
                    var idx = [UInt32](repeating: 0xdead_beef, count: n + 1)
                    let c = sums.withUnsafeBufferPointer { sp in
                        idx.withUnsafeMutableBufferPointer {
                            pqTable(isa).below4(sp.baseAddress, n, limit, $0.baseAddress)
                        }
                    }
                    XCTAssertEqual(Array(idx.prefix(c)), want, "\(isa) n=\(n) limit=\(limit)")
                    XCTAssertEqual(idx[n], 0xdead_beef, "\(isa): wrote past n")
                }
            }
        }
    }

    /// Fast-scan top-k against exact ADC: each reported distance is within the table
    /// quantization bound of its ADC distance, and the k-th true ADC distance of the returned
    /// set exceeds the true k-th by at most twice that bound.
    func testFastScanTopKAgainstADC() throws {
        var rng = SeededRandom(seed: 33)
        let (n, dim, m, k) = (4000, 32, 16, 10)
        let train = rng.gaussian(n * dim)
        let pq = try train.withUnsafeBufferPointer {
            try ProductQuantizer(training: $0, dim: dim, subquantizers: m, bits: 4, iterations: 8)
        }
        let codes = try train.withUnsafeBufferPointer { try pq.encode($0, kernels: kernels(.scalar)) }
        let packed = try PackedPQ4Codes(codes: codes, subquantizers: m)
        for isa in allLevels {
            let kern = try kernels(isa)
            for _ in 0..<5 {
                let q = rng.gaussian(dim)
                var table = [Float](repeating: 0, count: m * 16)
                try q.withUnsafeBufferPointer { qp in
                    try table.withUnsafeMutableBufferPointer {
                        try pq.distanceTable(query: qp, metric: .l2, kernels: kern, into: $0)
                    }
                }
                let adc = (0..<n).map { i in
                    (0..<m).reduce(0.0) { $0 + Double(table[$1 * 16 + Int(codes[i * m + $1])]) }
                }
                let qt = try table.withUnsafeBufferPointer { try QuantizedPQ4Table(table: $0, subquantizers: m) }
                let got = try kern.pqFastScanTopK(codes: packed, table: qt, k: k)
                XCTAssertEqual(got.count, k)
                let bound = Double(qt.maxError) * 1.001 + 1e-4 // plus float rounding of bias + sum / scale
                for g in got { XCTAssertLessThanOrEqual(abs(Double(g.distance) - adc[g.index]), bound, "\(isa)") }
                let trueKth = adc.sorted()[k - 1]
                let gotKth = got.map { adc[$0.index] }.max()!
                XCTAssertLessThanOrEqual(gotKth, trueKth + 2 * bound, "\(isa)")
            }
        }
    }

    /// Training must beat a trivial quantizer, and k-means assignment must match brute force.
    func testTrainingAndAssignment() throws {
        var rng = SeededRandom(seed: 34)
        let (n, dim) = (3000, 16)
        // 20 well-separated clusters.
        let centers = rng.uniform(20 * dim, -10, 10)
        var data = [Float](repeating: 0, count: n * dim)
        for i in 0..<n {
            let c = i % 20
            for j in 0..<dim { data[i * dim + j] = centers[c * dim + j] + 0.1 * rng.nextGaussian() }
        }
        let cent = try data.withUnsafeBufferPointer { try KMeans.train(data: $0, dim: dim, k: 32, iterations: 10) }
        var labels: [Int32] = []
        var dist: [Float] = []
        try data.withUnsafeBufferPointer { dp in
            try cent.withUnsafeBufferPointer {
                try KMeans.assignNearest(data: dp, dim: dim, centroids: $0, k: 32, labels: &labels, distances: &dist)
            }
        }
        for i in stride(from: 0, to: n, by: 37) {
            let brute = (0..<32).map { j in
                (0..<dim).reduce(0.0) {
                    let d = Double(data[i * dim + $1] - cent[j * dim + $1])
                    return $0 + d * d
                }
            }
            let best = brute.min()!
            // sgemm expansion loses precision only relative to ||x||^2: allow ties within that.
            XCTAssertLessThanOrEqual(brute[Int(labels[i])] - best, 1e-3 * (1 + best))
            XCTAssertEqual(Double(dist[i]), brute[Int(labels[i])], accuracy: 1e-3 * (100 + brute[Int(labels[i])]))
        }
        // Every point is within noise of its centroid: mean squared error ~ dim * 0.01.
        XCTAssertLessThan(dist.reduce(0, +) / Float(n), Float(dim) * 0.01 * 1.5)

        let pq = try data.withUnsafeBufferPointer {
            try ProductQuantizer(training: $0, dim: dim, subquantizers: 4, bits: 8, iterations: 10)
        }
        let codes = try data.withUnsafeBufferPointer { try pq.encode($0, kernels: kernels(ISA.detected)) }
        let rec = try pq.decode(codes)
        let mse = zip(rec, data).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +) / Double(n)
        let variance = data.map { Double($0) * Double($0) }.reduce(0, +) / Double(n)
        XCTAssertLessThan(mse, variance * 0.01, "PQ reconstruction error must be far below the data variance")
    }

    func testBadInputThrows() throws {
        var rng = SeededRandom(seed: 35)
        let data = rng.uniform(300 * 8)
        try data.withUnsafeBufferPointer { d in
            assertThrowsEngineError(isInvalidArgument, "dim % M") {
                _ = try ProductQuantizer(training: d, dim: 8, subquantizers: 3, bits: 8)
            }
            assertThrowsEngineError(isInvalidArgument, "bits") {
                _ = try ProductQuantizer(training: d, dim: 8, subquantizers: 2, bits: 6)
            }
            assertThrowsEngineError(isInvalidArgument, "too few") {
                _ = try ProductQuantizer(
                    training: UnsafeBufferPointer(rebasing: d[0..<(100 * 8)]), dim: 8, subquantizers: 2, bits: 8)
            }
        }
        var bad = data
        bad[17] = .nan
        try bad.withUnsafeBufferPointer { d in
            assertThrowsEngineError(isNonFinite, "NaN training") {
                _ = try ProductQuantizer(training: d, dim: 8, subquantizers: 2, bits: 4)
            }
        }
        assertThrowsEngineError(isInvalidArgument, "4-bit code >= 16") {
            _ = try PackedPQ4Codes(codes: [3, 16], subquantizers: 2)
        }
        let nanTable = [Float](repeating: .nan, count: 32)
        try nanTable.withUnsafeBufferPointer { t in
            assertThrowsEngineError(isNonFinite, "NaN table") { _ = try QuantizedPQ4Table(table: t, subquantizers: 2) }
        }
        let k = try Kernels.selected()
        let packed = try PackedPQ4Codes(codes: [1, 2], subquantizers: 2)
        let qt = try [Float](repeating: 1, count: 32).withUnsafeBufferPointer {
            try QuantizedPQ4Table(table: $0, subquantizers: 2)
        }
        assertThrowsEngineError(isInvalidArgument, "k = 0") { _ = try k.pqFastScanTopK(codes: packed, table: qt, k: 0) }
        XCTAssertEqual(
            try k.pqFastScanTopK(codes: packed, table: qt, k: 5).count, 1, "k larger than the collection returns all")
    }
}
