import XCTest
import CKernels
import Engine

/// Unit roundoff of f32.
let u32: Double = 0x1p-24

private func table(_ isa: ISA) -> ck_qmatmul_kernels {
    ck_qmatmul_kernels_for(ck_isa(rawValue: UInt32(isa.rawValue)))!.pointee
}

private func quantize(_ t: RowType, _ x: [Float], rows: Int, cols: Int) throws -> [UInt8] {
    try QuantizedMatrix(quantizing: x, rows: rows, cols: cols, type: t, kernels: kernels(.scalar)).bytes
}

/// Dequantize with the scalar reference (itself checked against gguf-py in GGUFCompatTests).
private func dequantize(_ t: RowType, _ bytes: [UInt8], rows: Int, cols: Int) throws -> [Float] {
    try QuantizedMatrix(type: t, rows: rows, cols: cols, bytes: bytes).dequantized(kernels: kernels(.scalar))
}

/// Per-block scale and minimum as stored, to size the error bounds of the integer path.
private func blockParams(_ t: RowType, _ bytes: [UInt8], block: Int) -> (d: Double, m: Double) {
    func h(_ off: Int) -> Double {
        Double(Float(Float16(bitPattern: UInt16(bytes[off]) | UInt16(bytes[off + 1]) << 8)))
    }
    switch t {
    case .q8_0: return (h(block * 34), 0)
    case .q4_0: return (h(block * 18), 0)
    case .q4_1: return (h(block * 20), h(block * 20 + 2))
    case .q2_1: return (h(block * 12), h(block * 12 + 2))
    default: return (0, 0)
    }
}

/// An int8-activation row dot `got` against double sums over the dequantized row r of `wd` and
/// the activations as quantized (`act(j)`: value j and its block's scale): within (nb + 8) u times
/// the magnitudes involved (the integer block dots are exact; the float part rounds the scale
/// products, the block sums and the running sums), and against the f32 activations
/// `x[xOffset...]` within the activation rounding, at most |w| d_a / 2 per value, on top.
private func checkInt8RowDot(
    _ got: Float, _ t: RowType, wb: [UInt8], wd: [Float], row r: Int, n: Int, x: [Float], xOffset: Int,
    _ message: String, file: StaticString = #filePath, line: UInt = #line, act: (Int) -> (Double, Double)
) {
    let nb = n / 32
    var exact = 0.0
    var mag = 0.0
    var exactF32 = 0.0
    var absW = 0.0
    for j in 0..<n {
        let (av, da) = act(j)
        let w = Double(wd[r * n + j])
        let (d, m) = blockParams(t, wb, block: r * nb + j / 32)
        exact += w * av
        mag += (abs(w) + abs(m) + 8 * abs(d)) * abs(av)
        exactF32 += w * Double(x[xOffset + j])
        absW += abs(w) * da / 2
    }
    let tol = Double(nb + 8) * u32 * mag
    XCTAssertLessThanOrEqual(abs(Double(got) - exact), tol, message, file: file, line: line)
    XCTAssertLessThanOrEqual(abs(Double(got) - exactF32), absW + tol, message + " vs f32", file: file, line: line)
}

final class QMatmulTests: XCTestCase {
    let dims = [32, 96, 160, 4128] // block counts 1, 3, 5, 129
    let denseDims = [1, 7, 16, 37, 64, 101, 128, 4099] // tails, and the full-vector fast paths

    func testRoundTripErrorWithinHalfStep() throws {
        var rng = SeededRandom(seed: 10)
        let n = 4096
        let x = rng.uniform(n, -3, 3)
        for t in RowType.allCases {
            let back = try dequantize(t, try quantize(t, x, rows: 1, cols: n), rows: 1, cols: n)
            for b in 0..<(n / 32) {
                let blk = x[(b * 32)..<((b + 1) * 32)]
                let lo = Double(blk.min()!)
                let hi = Double(blk.max()!)
                let amax = Double(blk.map { abs($0) }.max()!)
                // Half a quantization step per element, plus the fp16 rounding of the stored scale
                // (relative 2^-11) times the largest code, and of the stored minimum.
                let step: Double
                switch t {
                case .f32: step = 0
                case .f16: step = amax * 0x1p-10
                case .q8_0: step = amax / 127
                case .q4_0: step = amax / 8 * 2
                case .q4_1: step = (hi - lo) / 15
                case .q2_1: step = (hi - lo) / 3
                }
                let tol = step / 2 + amax * 0x1p-11 * 2 + abs(lo) * 0x1p-11 + 1e-7
                for j in blk.indices {
                    XCTAssertLessThanOrEqual(abs(Double(back[j]) - Double(x[j])), tol, "\(t) block \(b) elem \(j)")
                }
            }
        }
    }

    /// dot_rows_f32 (exact activations) for every level against dequantize-then-dot in double.
    func testExactActivationDotAgainstDouble() throws {
        var rng = SeededRandom(seed: 11)
        for t in RowType.allCases {
            for n in (t.isQuantized ? dims : denseDims) {
                let rows = 5
                let nq = 9 // nq > 8 crosses the query-group boundary of the SIMD body
                let w = rng.uniform(rows * n)
                let x = rng.uniform(nq * n)
                let wb = try quantize(t, w, rows: rows, cols: n)
                let wd = try dequantize(t, wb, rows: rows, cols: n)
                let stride = wb.count / rows
                for isa in allLevels {
                    var y = [Float](repeating: .nan, count: nq * rows)
                    wb.withUnsafeBytes { wp in
                        x.withUnsafeBufferPointer { xp in
                            y.withUnsafeMutableBufferPointer { yp in
                                table(isa).dot_rows_f32(
                                    ck_rtype(rawValue: UInt32(t.rawValue)), wp.baseAddress!, rows, n, stride,
                                    xp.baseAddress!, nq, yp.baseAddress!, rows)
                            }
                        }
                    }
                    for q in 0..<nq {
                        for r in 0..<rows {
                            var exact = 0.0
                            var mag = 0.0
                            for j in 0..<n {
                                let p = Double(wd[r * n + j]) * Double(x[q * n + j])
                                exact += p
                                mag += abs(p)
                            }
                            // A-priori bound of f32 summation in any order: (n + 1) u sum|terms|.
                            let tol = Double(n + 1) * u32 * mag
                            XCTAssertLessThanOrEqual(
                                abs(Double(y[q * rows + r]) - exact), tol, "\(isa) \(t) n=\(n) q=\(q) r=\(r)")
                        }
                    }
                }
            }
        }
    }

    /// dot_rows_q8a (int8 activations) for every level against dequantize(w) . dequantize(a) in double.
    func testInt8ActivationDotAgainstDouble() throws {
        var rng = SeededRandom(seed: 12)
        for t in RowType.allCases where t.isQuantized {
            // nq 1 (GEMV, incl. the two-block VNNI path for 4-bit rows), 2-4 (GQA-specialised),
            // 9 (generic groups); odd block counts exercise the single-block tails.
            for (n, nq) in [(32, 1), (96, 1), (160, 2), (96, 3), (4128, 1), (160, 4), (4128, 9)] {
                let rows = 3
                let nb = n / 32
                let w = rng.uniform(rows * n)
                let x = rng.uniform(nq * n, -2, 2)
                let wb = try quantize(t, w, rows: rows, cols: n)
                let wd = try dequantize(t, wb, rows: rows, cols: n)
                let stride = wb.count / rows
                for isa in allLevels {
                    // Activation blocks from this level's quantizer; they must equal the scalar ones.
                    var a = [ck_block_q8a](repeating: ck_block_q8a(), count: nq * nb)
                    var aRef = a
                    x.withUnsafeBufferPointer { xp in
                        a.withUnsafeMutableBufferPointer {
                            table(isa).quantize_q8a(xp.baseAddress!, nq * n, $0.baseAddress!)
                        }
                        aRef.withUnsafeMutableBufferPointer {
                            table(.scalar).quantize_q8a(xp.baseAddress!, nq * n, $0.baseAddress!)
                        }
                    }
                    for i in 0..<a.count {
                        XCTAssertEqual(a[i].d, aRef[i].d)
                        // d x (sum of the codes): the codes are equal, the product rounded the same way
                        XCTAssertEqual(a[i].dsum, aRef[i].dsum)
                        let codeSum = withUnsafeBytes(of: a[i].qs) { $0.reduce(0) { $0 + Int(Int8(bitPattern: $1)) } }
                        XCTAssertEqual(a[i].dsum, a[i].d * Float(codeSum))
                        XCTAssertTrue(
                            withUnsafeBytes(of: a[i].qs) { p in
                                withUnsafeBytes(of: aRef[i].qs) { Array(p) == Array($0) }
                            }, "\(isa) q8a block \(i)")
                    }
                    var y = [Float](repeating: .nan, count: nq * rows)
                    wb.withUnsafeBytes { wp in
                        a.withUnsafeBufferPointer { ap in
                            y.withUnsafeMutableBufferPointer { yp in
                                table(isa).dot_rows_q8a(
                                    ck_rtype(rawValue: UInt32(t.rawValue)), wp.baseAddress!, rows, n, stride,
                                    ap.baseAddress!, nq, yp.baseAddress!, rows)
                            }
                        }
                    }
                    for q in 0..<nq {
                        for r in 0..<rows {
                            checkInt8RowDot(
                                y[q * rows + r], t, wb: wb, wd: wd, row: r, n: n, x: x, xOffset: q * n,
                                "\(isa) \(t) n=\(n) q=\(q) r=\(r)"
                            ) { j in
                                let blk = a[q * nb + j / 32]
                                let qa = withUnsafeBytes(of: blk.qs) { Int8(bitPattern: $0[j % 32]) }
                                return (Double(blk.d) * Double(qa), Double(blk.d))
                            }
                        }
                    }
                }
            }
        }
    }

    func testWeightedRowSumAgainstDouble() throws {
        var rng = SeededRandom(seed: 13)
        for t in RowType.allCases {
            for n in (t.isQuantized ? [32, 160] : [37, 48, 128, 136]) {
                for (rows, nq) in [(19, 3), (70, 1), (5, 2), (33, 4), (21, 5)] {
                    let w = rng.uniform(rows * n)
                    let p = rng.uniform(nq * rows, 0, 1)
                    let wb = try quantize(t, w, rows: rows, cols: n)
                    let wd = try dequantize(t, wb, rows: rows, cols: n)
                    for isa in allLevels {
                        let start = rng.uniform(nq * n)
                        var out = start
                        wb.withUnsafeBytes { wp in
                            p.withUnsafeBufferPointer { pp in
                                out.withUnsafeMutableBufferPointer { op in
                                    table(isa).wsum_rows(
                                        ck_rtype(rawValue: UInt32(t.rawValue)), wp.baseAddress!, rows, n,
                                        wb.count / rows,
                                        pp.baseAddress!, rows, nq, op.baseAddress!)
                                }
                            }
                        }
                        for q in 0..<nq {
                            for j in 0..<n {
                                var exact = Double(start[q * n + j])
                                var mag = abs(exact)
                                for r in 0..<rows {
                                    let v = Double(p[q * rows + r]) * Double(wd[r * n + j])
                                    exact += v
                                    // Block types may sum p (d code) and p m apart (the SIMD
                                    // kernels fold the scale into the weight): each piece is at
                                    // most |w| plus twice the block's largest |w| (|m| is at most
                                    // that: Q4_0's m is -8 d, Q4_1 / Q2_1's the block minimum).
                                    let b = r * n + (j / 32) * 32
                                    let blockMax = t.isQuantized ? wd[b..<(b + 32)].map { abs($0) }.max()! : 0
                                    mag += Double(p[q * rows + r]) * (abs(Double(wd[r * n + j])) + 2 * Double(blockMax))
                                }
                                // rows FMAs in sequence, plus the offset sum added once: (rows + 2) u mag.
                                XCTAssertLessThanOrEqual(
                                    abs(Double(out[q * n + j]) - exact), Double(rows + 2) * u32 * mag,
                                    "\(isa) \(t) rows \(rows) nq \(nq)")
                            }
                        }
                    }
                }
            }
        }
    }

    func testGemvThreadsAndNumerics() throws {
        var rng = SeededRandom(seed: 14)
        let rows = 1000
        let cols = 256
        let w = rng.uniform(rows * cols)
        let x = rng.uniform(cols)
        for t in [RowType.q8_0, .q4_1] {
            let m = try QuantizedMatrix(quantizing: w, rows: rows, cols: cols, type: t, kernels: kernels(.scalar))
            let one = try kernels(ISA.detected, threads: 1)
            let two = try kernels(ISA.detected, threads: 2)
            var y1 = [Float](repeating: 0, count: rows)
            var y2 = y1
            try x.withUnsafeBufferPointer { xp in
                try y1.withUnsafeMutableBufferPointer { try one.gemv(m, x: xp, into: $0, numerics: .int8) }
                try y2.withUnsafeMutableBufferPointer { try two.gemv(m, x: xp, into: $0, numerics: .int8) }
            }
            // Rows are independent: the split over threads must not change a single bit.
            XCTAssertEqual(y1, y2)
        }
    }

    func testBadInputThrows() throws {
        let k = try Kernels.selected()
        assertThrowsEngineError(isInvalidArgument, "cols not multiple of 32") {
            _ = try QuantizedMatrix(
                quantizing: [Float](repeating: 1, count: 40), rows: 1, cols: 40, type: .q4_0, kernels: k)
        }
        assertThrowsEngineError(isInvalidArgument, "count mismatch") {
            _ = try QuantizedMatrix(
                quantizing: [Float](repeating: 1, count: 63), rows: 2, cols: 32, type: .q8_0, kernels: k)
        }
        assertThrowsEngineError(isNonFinite, "NaN weight") {
            _ = try QuantizedMatrix(
                quantizing: [Float](repeating: .nan, count: 32), rows: 1, cols: 32, type: .q8_0, kernels: k)
        }
        assertThrowsEngineError(isInvalidArgument, "byte count") {
            _ = try QuantizedMatrix(type: .q4_1, rows: 2, cols: 32, bytes: [UInt8](repeating: 0, count: 39))
        }
        assertThrowsEngineError(isInvalidArgument, "zero rows") {
            _ = try QuantizedMatrix(type: .q4_1, rows: 0, cols: 32, bytes: [])
        }
        let m = try QuantizedMatrix(
            quantizing: [Float](repeating: 1, count: 64), rows: 2, cols: 32, type: .q8_0, kernels: k)
        var y = [Float](repeating: 0, count: 2)
        let bad = [Float](repeating: 0, count: 31)
        let nan = [Float](repeating: .nan, count: 32)
        try y.withUnsafeMutableBufferPointer { yp in
            assertThrowsEngineError(isInvalidArgument, "x length") {
                try bad.withUnsafeBufferPointer { try k.gemv(m, x: $0, into: yp) }
            }
            assertThrowsEngineError(isNonFinite, "NaN x") {
                try nan.withUnsafeBufferPointer { try k.gemv(m, x: $0, into: yp) }
            }
        }
    }
}

/// Interleaved 4-bit rows (the decode layout, `ck_qmatmul_x8_pack`).
final class InterleavedRowsTests: XCTestCase {
    private func pack(_ t: RowType, _ wb: [UInt8], rows: Int, cols: Int) -> [UInt8] {
        let gb = ck_qmatmul_x8_group_bytes(ck_rtype(rawValue: UInt32(t.rawValue)), cols)
        var out = [UInt8](repeating: 0, count: rows / 8 * gb)
        let st = wb.withUnsafeBytes { w in
            out.withUnsafeMutableBytes { o in
                ck_qmatmul_x8_pack(
                    ck_rtype(rawValue: UInt32(t.rawValue)), w.baseAddress, rows, cols, wb.count / rows, o.baseAddress)
            }
        }
        XCTAssertEqual(st, CK_OK)
        return out
    }

    /// The packed bytes are a permutation of the rows' bytes: every row comes back unchanged, and
    /// the nibble bytes sit where the header's layout says.
    func testPackIsAPermutation() throws {
        var rng = SeededRandom(seed: 40)
        for t in [RowType.q4_0, .q4_1] {
            for (rows, cols) in [(8, 32), (24, 96), (16, 576)] {
                let wb = try quantize(t, rng.uniform(rows * cols), rows: rows, cols: cols)
                let p = pack(t, wb, rows: rows, cols: cols)
                XCTAssertEqual(p.count, wb.count)
                let rb = wb.count / rows
                let hb = t == .q4_1 ? 32 : 16
                let bsz = t == .q4_1 ? 20 : 18
                let gb = p.count / (rows / 8)
                for r in 0..<rows {
                    var back = [UInt8](repeating: 0, count: rb)
                    let st = p.withUnsafeBytes { pp in
                        back.withUnsafeMutableBytes {
                            ck_qmatmul_x8_unpack_row(
                                ck_rtype(rawValue: UInt32(t.rawValue)), pp.baseAddress, cols, r, $0.baseAddress)
                        }
                    }
                    XCTAssertEqual(st, CK_OK)
                    XCTAssertEqual(back, Array(wb[(r * rb)..<((r + 1) * rb)]), "\(t) row \(r)")
                    for b in 0..<(cols / 32) {
                        for c in 0..<4 {
                            for k in 0..<4 {
                                let packed = p[(r / 8) * gb + b * (hb + 128) + hb + 32 * c + 4 * (r % 8) + k]
                                XCTAssertEqual(packed, wb[r * rb + b * bsz + (bsz - 16) + 4 * c + k])
                            }
                        }
                    }
                }
            }
        }
        // refused: 7 rows, a type without an interleaved layout, a short stride
        var out = [UInt8](repeating: 0, count: 4096)
        let w = [UInt8](repeating: 0, count: 4096)
        w.withUnsafeBytes { wp in
            out.withUnsafeMutableBytes { o in
                XCTAssertEqual(
                    ck_qmatmul_x8_pack(CK_RT_Q4_0, wp.baseAddress, 7, 32, 18, o.baseAddress), CK_ERR_ARGUMENT)
                XCTAssertEqual(
                    ck_qmatmul_x8_pack(CK_RT_Q8_0, wp.baseAddress, 8, 32, 34, o.baseAddress), CK_ERR_ARGUMENT)
                XCTAssertEqual(
                    ck_qmatmul_x8_pack(CK_RT_Q4_1, wp.baseAddress, 8, 32, 19, o.baseAddress), CK_ERR_ARGUMENT)
                XCTAssertEqual(
                    ck_qmatmul_x8_pack(CK_RT_Q4_1, wp.baseAddress, 8, 48, 20, o.baseAddress), CK_ERR_ARGUMENT)
            }
        }
    }

    /// Half-block activation quantization: identical bytes at every level, codes within half a
    /// step of x / d, dsum as the header defines it.
    func testHalfBlockActivationsEveryLevel() throws {
        var rng = SeededRandom(seed: 43)
        let n = 4096
        var x = rng.uniform(n, -3, 3)
        for i in stride(from: 0, to: n, by: 97) { x[i] *= 40 } // outliers in some halves
        for i in 64..<80 { x[i] = 0 } // an all-zero half
        let ref = q8h(.scalar, x)
        for isa in allLevels {
            let got = q8h(isa, x)
            for b in 0..<(n / 32) {
                XCTAssertEqual(got[b].d.0, ref[b].d.0)
                XCTAssertEqual(got[b].d.1, ref[b].d.1)
                XCTAssertEqual(got[b].dsum, ref[b].dsum)
                XCTAssertEqual(codes(got[b]), codes(ref[b]), "\(isa) block \(b)")
            }
        }
        for b in 0..<(n / 32) {
            let c = codes(ref[b])
            let d = [ref[b].d.0, ref[b].d.1]
            for j in 0..<32 {
                let v = Double(x[b * 32 + j])
                XCTAssertLessThanOrEqual(abs(Double(d[j / 16]) * Double(c[j]) - v), Double(d[j / 16]) / 2 * (1 + 1e-5))
            }
            let s0 = c[0..<16].reduce(0, +)
            let s1 = c[16..<32].reduce(0, +)
            XCTAssertEqual(ref[b].dsum, d[0] * Float(s0) + d[1] * Float(s1))
        }
        XCTAssertEqual(ref[2].d.0, 0)
        XCTAssertEqual(codes(ref[2])[0..<16].filter { $0 != 0 }.count, 0)
    }

    private func q8h(_ isa: ISA, _ x: [Float]) -> [ck_block_q8h] {
        var a = [ck_block_q8h](repeating: ck_block_q8h(), count: x.count / 32)
        x.withUnsafeBufferPointer { xp in
            a.withUnsafeMutableBufferPointer { table(isa).quantize_q8h(xp.baseAddress!, x.count, $0.baseAddress!) }
        }
        return a
    }

    private func codes(_ b: ck_block_q8h) -> [Int] {
        withUnsafeBytes(of: b.qs) { $0.map { Int(Int8(bitPattern: $0)) } }
    }

    /// Every level computes the same floats as the scalar reference, bit for bit (the header fixes
    /// the arithmetic), and the result is the dot of the plain rows with the half-block
    /// activations: against the double sum over the dequantized weights and activations,
    /// (nb + 8) u times the magnitudes, as for the plain kernels (the integer dots are exact; the
    /// scale products, the two running sums and the final add round); against the f32
    /// activations, the activation rounding, at most |w| d_a / 2 per value, on top.
    func testEveryLevelBitExactAndAgainstDouble() throws {
        var rng = SeededRandom(seed: 41)
        for t in [RowType.q4_0, .q4_1] {
            let ct = ck_rtype(rawValue: UInt32(t.rawValue))
            // token counts of 2 and more also take the AVX-512 level's paired-token path (up to
            // 6 pairs per chunk): 8, 9 and 13 tokens are 4 and 6 pairs (+ 1), 4096 columns fit 2
            // pairs per stack chunk and 12 groups per tile (13 groups: a partial tile), 12,032
            // columns no pair (single-token path)
            for (rows, n, nq) in [
                (8, 32, 1), (16, 96, 2), (24, 576, 3), (8, 4096, 5), (40, 160, 1), (16, 576, 8), (24, 64, 9),
                (16, 128, 13),
                (104, 4096, 7), (8, 12_032, 3),
            ] {
                let nb = n / 32
                let wb = try quantize(t, rng.uniform(rows * n), rows: rows, cols: n)
                let wd = try dequantize(t, wb, rows: rows, cols: n)
                let p = pack(t, wb, rows: rows, cols: n)
                let x = rng.uniform(nq * n, -2, 2)
                let a = q8h(.scalar, x)
                func run(_ isa: ISA) -> [Float] {
                    var y = [Float](repeating: .nan, count: nq * rows)
                    p.withUnsafeBytes { pp in
                        a.withUnsafeBufferPointer { ap in
                            y.withUnsafeMutableBufferPointer { yp in
                                table(isa).dot_x8_q8h(
                                    ct, pp.baseAddress!, rows / 8, n, ap.baseAddress!, nq, yp.baseAddress!, rows)
                            }
                        }
                    }
                    return y
                }
                let ref = run(.scalar)
                for isa in allLevels {
                    XCTAssertEqual(
                        run(isa).map(\.bitPattern), ref.map(\.bitPattern), "\(isa) \(t) \(rows)x\(n) nq \(nq)")
                }
                for q in 0..<nq {
                    for r in 0..<rows {
                        checkInt8RowDot(
                            ref[q * rows + r], t, wb: wb, wd: wd, row: r, n: n, x: x, xOffset: q * n,
                            "\(t) \(rows)x\(n) q=\(q) r=\(r)"
                        ) { j in
                            let blk = a[q * nb + j / 32]
                            let da = Double(j % 32 < 16 ? blk.d.0 : blk.d.1)
                            return (da * Double(codes(blk)[j % 32]), da)
                        }
                    }
                }
            }
        }
    }

    /// `interleaved()` through `linear` and `gemv`: a batch of tokens gives each token's
    /// single-token result bit for bit, two threads give one thread's, every level the scalar
    /// level's, and the f32-activation product agrees within the activation rounding (half a
    /// step of each half block times |w|) plus (nb + 8) u times the magnitudes.
    func testLinearOnInterleavedRows() throws {
        var rng = SeededRandom(seed: 42)
        let (rows, cols, tokens) = (264, 256, 5)
        let nb = cols / 32
        let w = rng.uniform(rows * cols)
        let x = rng.uniform(tokens * cols, -2, 2)
        for t in [RowType.q4_0, .q4_1] {
            let plain = try QuantizedMatrix(quantizing: w, rows: rows, cols: cols, type: t, kernels: kernels(.scalar))
            let packed = plain.interleaved()
            XCTAssertTrue(packed.isInterleaved)
            XCTAssertFalse(plain.isInterleaved)
            XCTAssertEqual(packed.bytes, plain.bytes) // the original rows are kept for lookups
            let wd = plain.dequantized(kernels: try kernels(.scalar))
            func linear(_ k: Kernels, _ m: QuantizedMatrix, _ xs: [Float], _ n: Int, _ num: Numerics) throws -> [Float]
            {
                var y = [Float](repeating: .nan, count: n * rows)
                try xs.withUnsafeBufferPointer { xp in
                    try y.withUnsafeMutableBufferPointer { try k.linear(m, x: xp, tokens: n, into: $0, numerics: num) }
                }
                return y
            }
            let scalar = try linear(try kernels(.scalar), packed, x, tokens, .int8)
            let f32 = try linear(try kernels(.scalar), plain, x, tokens, .exact)
            for isa in allLevels {
                let one = try kernels(isa, threads: 1)
                let two = try kernels(isa, threads: 2)
                let batch = try linear(one, packed, x, tokens, .int8)
                XCTAssertEqual(batch, scalar, "\(isa) against the scalar level")
                XCTAssertEqual(try linear(two, packed, x, tokens, .int8), batch, "\(isa) threads")
                for q in 0..<tokens {
                    let xq = Array(x[(q * cols)..<((q + 1) * cols)])
                    XCTAssertEqual(try linear(one, packed, xq, 1, .int8), Array(batch[(q * rows)..<((q + 1) * rows)]))
                    var g = [Float](repeating: .nan, count: rows)
                    try xq.withUnsafeBufferPointer { xp in
                        try g.withUnsafeMutableBufferPointer { try two.gemv(packed, x: xp, into: $0, numerics: .int8) }
                    }
                    XCTAssertEqual(g, Array(batch[(q * rows)..<((q + 1) * rows)]), "\(isa) gemv")
                }
            }
            for q in 0..<tokens {
                let a = q8h(.scalar, Array(x[(q * cols)..<((q + 1) * cols)]))
                for r in 0..<rows {
                    var mag = 0.0
                    var absW = 0.0
                    for j in 0..<cols {
                        let blk = a[j / 32]
                        let da = Double(j % 32 < 16 ? blk.d.0 : blk.d.1)
                        let (d, m) = blockParams(t, plain.bytes, block: r * nb + j / 32)
                        mag += (abs(Double(wd[r * cols + j])) + abs(m) + 8 * abs(d)) * abs(Double(x[q * cols + j]))
                        absW += abs(Double(wd[r * cols + j])) * da / 2
                    }
                    XCTAssertLessThanOrEqual(
                        abs(Double(scalar[q * rows + r]) - Double(f32[q * rows + r])),
                        absW + 2 * Double(nb + 8) * u32 * mag, "\(t) token \(q) row \(r)")
                }
            }
        }
        // left as they are: other types, and row counts that are not a multiple of 8
        let q8 = try QuantizedMatrix(quantizing: w, rows: rows, cols: cols, type: .q8_0, kernels: kernels(.scalar))
        XCTAssertFalse(q8.interleaved().isInterleaved)
        let odd = try QuantizedMatrix(
            quantizing: Array(w[0..<(12 * cols)]), rows: 12, cols: cols, type: .q4_0, kernels: kernels(.scalar))
        XCTAssertFalse(odd.interleaved().isInterleaved)
    }
}
