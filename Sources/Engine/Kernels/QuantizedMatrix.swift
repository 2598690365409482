import CKernels

/// Element type of a matrix row: dense f32/f16, or 32-value blocks (GGUF Q8_0, Q4_0, Q4_1 layouts;
/// Q2_1 is Engine's 2-bit KV format). See `ck_qmatmul.h` for the bit layouts.
public enum RowType: Int, CaseIterable, Sendable, CustomStringConvertible {
    case f32 = 0
    case f16, q8_0, q4_0, q4_1, q2_1

    var c: ck_rtype { ck_rtype(rawValue: UInt32(rawValue)) }

    /// Whether rows are blocks of 32 quantized values.
    public var isQuantized: Bool { self.rawValue >= RowType.q8_0.rawValue }

    /// The type's name (as in GGUF).
    public var description: String { ["f32", "f16", "q8_0", "q4_0", "q4_1", "q2_1"][rawValue] }

    /// Bytes taken by one row of `n` values; throws if `n` is not a multiple of 32 for block types.
    public func rowBytes(_ n: Int) throws(EngineError) -> Int {
        try require(n > 0, "row length must be positive, got \(n)")
        try require(!isQuantized || n % 32 == 0, "\(self) rows need a multiple of 32 values, got \(n)")
        return ck_qmatmul_row_bytes(c, n)
    }
}

/// How activations meet quantized weights in a matrix-vector product.
public enum Numerics: Sendable, Equatable {
    /// f32 activations times weights dequantized in registers: equals dequantize-then-dot up to
    /// float rounding.
    case exact
    /// Activations quantized to int8 (as llama.cpp does), integer dot products. Faster; error
    /// bounded by the activation quantization step. Plain rows take one scale per 32 values;
    /// interleaved 4-bit rows (`QuantizedMatrix.interleaved()`, what `LlamaModel` uses) one per
    /// 16, which halves the step where one large activation sits among small ones.
    case int8
}

/// Where a matrix's bytes live: an array it owns, or a read-only range of a mapped file (a GGUF
/// tensor used in place; the mapping lives as long as the matrix).
final class MatrixStorage: @unchecked Sendable {
    private let owned: [UInt8]?
    private let mapped: UnsafeRawBufferPointer?
    // keeps the mapping alive
    private let owner: AnyObject?

    init(_ bytes: [UInt8]) {
        owned = bytes
        mapped = nil
        owner = nil
    }

    init(mapped: UnsafeRawBufferPointer, owner: AnyObject) {
        owned = nil
        self.mapped = mapped
        self.owner = owner
    }

    var count: Int { owned?.count ?? mapped!.count }
    var isMapped: Bool { mapped != nil }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws(EngineError) -> R) rethrows -> R {
        if let owned { return try owned.withUnsafeBytes(body) }
        return try body(mapped!)
    }
}

/// A row-major matrix whose rows are stored in a `RowType` (immutable value type).
public struct QuantizedMatrix: Sendable {
    /// How rows are stored.
    public let type: RowType
    /// Rows.
    public let rows: Int
    /// Values per row.
    public let cols: Int
    let storage: MatrixStorage
    /// The same rows interleaved in groups of 8 (`ck_qmatmul_x8_pack`), the layout the `.int8`
    /// products of Q4_0/Q4_1 weights read fastest; nil unless built by `interleaved()`.
    var packed: MatrixStorage?

    /// Raw row bytes, `rows * type.rowBytes(cols)` (a copy when the matrix is used in place from
    /// a mapped file; kernels read `withUnsafeBytes` instead).
    public var bytes: [UInt8] { storage.withUnsafeBytes { Array($0) } }

    /// Whether the bytes are read in place from a memory-mapped file rather than held in RAM.
    public var isMapped: Bool { storage.isMapped }

    /// Calls `body` with the raw row bytes (do not let the pointer escape).
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws(EngineError) -> R) rethrows -> R {
        try storage.withUnsafeBytes(body)
    }

    /// Bytes per row.
    public var rowStride: Int { storage.count / max(rows, 1) }

    /// Wraps bytes of a mapped file in place; `owner` keeps the mapping alive. Validates the size.
    init(type: RowType, rows: Int, cols: Int, mapped: UnsafeRawBufferPointer, owner: AnyObject) throws(EngineError) {
        try require(rows > 0, "matrix needs at least one row")
        let rb = try type.rowBytes(cols)
        let need = try CheckedSize.product(rows, rb, what: "\(type) matrix \(rows)x\(cols)")
        try require(mapped.count == need, "\(type) matrix \(rows)x\(cols) needs \(need) bytes, got \(mapped.count)")
        self.type = type
        self.rows = rows
        self.cols = cols
        storage = MatrixStorage(mapped: mapped, owner: owner)
    }

    /// Wraps existing row bytes (for instance read from a GGUF file); validates the size.
    public init(type: RowType, rows: Int, cols: Int, bytes: [UInt8]) throws(EngineError) {
        try require(rows > 0, "matrix needs at least one row")
        let rb = try type.rowBytes(cols)
        try require(
            bytes.count == rows * rb, "\(type) matrix \(rows)x\(cols) needs \(rows * rb) bytes, got \(bytes.count)")
        self.type = type
        self.rows = rows
        self.cols = cols
        storage = MatrixStorage(bytes)
    }

    /// Quantizes a row-major f32 matrix. Throws on size mismatch or non-finite values.
    public init(quantizing values: [Float], rows: Int, cols: Int, type: RowType, kernels: Kernels) throws(EngineError) {
        try require(rows > 0, "matrix needs at least one row")
        try require(
            values.count == rows * cols, "expected \(rows)x\(cols) = \(rows * cols) values, got \(values.count)")
        try requireFinite(values, "matrix")
        let rb = try type.rowBytes(cols)
        var out = [UInt8](repeating: 0, count: rows * rb)
        values.withUnsafeBufferPointer { v in
            out.withUnsafeMutableBytes { o in
                for r in 0..<rows {
                    kernels.qmatmulTable.pointee.quantize!(
                        type.c, v.baseAddress! + r * cols, cols, o.baseAddress! + r * rb)
                }
            }
        }
        self.type = type
        self.rows = rows
        self.cols = cols
        storage = MatrixStorage(out)
    }

    /// Whether the rows are also held in the interleaved decode layout (see `interleaved()`).
    public var isInterleaved: Bool { packed != nil }

    /// This matrix with its rows also held interleaved in groups of 8 (one SIMD lane per row,
    /// the idea of llama.cpp's CPU repacking), which the `.int8` products of Q4_0 and Q4_1
    /// weights read at close to the memory bandwidth, with an activation scale per 16 values
    /// (`ck_block_q8h`) instead of 32. The copy is held in RAM (as many bytes as the matrix); row
    /// lookups and `.exact` products keep reading the original rows. Other types and row counts
    /// that are not a multiple of 8 are returned unchanged. Results are the same for every batch
    /// size, thread count and ISA level.
    public func interleaved() -> QuantizedMatrix {
        guard type == .q4_0 || type == .q4_1, rows % 8 == 0, packed == nil else { return self }
        let gb = ck_qmatmul_x8_group_bytes(type.c, cols)
        guard gb > 0 else { return self }
        var out = [UInt8](repeating: 0, count: rows / 8 * gb)
        let st = withUnsafeBytes { b in
            out.withUnsafeMutableBytes { o in
                ck_qmatmul_x8_pack(type.c, b.baseAddress, rows, cols, rowStride, o.baseAddress)
            }
        }
        guard st == CK_OK else { return self }
        var m = self
        m.packed = MatrixStorage(out)
        return m
    }

    /// The matrix as f32 values (row-major).
    public func dequantized(kernels: Kernels) -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        let rb = rowStride
        withUnsafeBytes { b in
            out.withUnsafeMutableBufferPointer { o in
                for r in 0..<rows {
                    kernels.qmatmulTable.pointee.dequantize!(
                        type.c, b.baseAddress! + r * rb, cols, o.baseAddress! + r * cols)
                }
            }
        }
        return out
    }
}

extension Kernels {
    /// Bytes of int8 activation blocks for `n` values (scratch for `.int8` numerics).
    public static func activationBytes(_ n: Int) -> Int { n / 32 * MemoryLayout<ck_block_q8a>.stride }

    /// y = W x for a quantized (or dense) matrix; rows are split across `threads`.
    public func gemv(
        _ w: QuantizedMatrix, x: UnsafeBufferPointer<Float>, into y: UnsafeMutableBufferPointer<Float>,
        numerics: Numerics = .exact
    ) throws(EngineError) {
        try require(x.count == w.cols, "x has \(x.count) values, matrix has \(w.cols) columns")
        try require(y.count >= w.rows, "y holds \(y.count) values, matrix has \(w.rows) rows")
        try requireFinite(x, "x")
        let useInt8 = numerics == .int8 && w.type.isQuantized
        let t = qmatmulTable.pointee
        let rows = w.rows
        let cols = w.cols
        let stride = w.rowStride
        let parts = productParts(multiplyAdds: rows * cols, units: rows / 64)
        w.withUnsafeBytes { wb in
            let base = wb.baseAddress!
            if useInt8 && w.packed != nil {
                interleavedProducts([w], x: x.baseAddress!, tokens: 1, into: [y.baseAddress!])
            } else if useInt8 {
                ThreadScratch.with(slot: 0, bytes: cols / 32 * MemoryLayout<ck_block_q8a>.stride) { raw in
                    let a = raw.assumingMemoryBound(to: ck_block_q8a.self)
                    t.quantize_q8a!(x.baseAddress!, cols, a)
                    Threads.parallelFor(parts, threads: threads) { p in
                        let r = Threads.range(rows, parts: parts, index: p)
                        t.dot_rows_q8a!(
                            w.type.c, base + r.lowerBound * stride, r.count, cols, stride, a, 1,
                            y.baseAddress! + r.lowerBound, rows)
                    }
                }
            } else {
                Threads.parallelFor(parts, threads: threads) { p in
                    let r = Threads.range(rows, parts: parts, index: p)
                    t.dot_rows_f32!(
                        w.type.c, base + r.lowerBound * stride, r.count, cols, stride, x.baseAddress!, 1,
                        y.baseAddress! + r.lowerBound, rows)
                }
            }
        }
    }

    /// Quantizes `x` (count a multiple of 32, finite) into int8 activation blocks and returns
    /// them dequantized: the exact values the `.int8` numerics multiply by.
    public func int8Activations(_ x: [Float]) throws(EngineError) -> [Float] {
        try require(
            x.count > 0 && x.count % 32 == 0, "activation length must be a positive multiple of 32, got \(x.count)")
        try requireFinite(x, "activations")
        var blocks = [ck_block_q8a](repeating: ck_block_q8a(), count: x.count / 32)
        x.withUnsafeBufferPointer { xp in
            blocks.withUnsafeMutableBufferPointer {
                qmatmulTable.pointee.quantize_q8a!(xp.baseAddress!, x.count, $0.baseAddress!)
            }
        }
        var out = [Float](repeating: 0, count: x.count)
        for (b, blk) in blocks.enumerated() {
            withUnsafeBytes(of: blk.qs) { q in
                for j in 0..<32 { out[b * 32 + j] = blk.d * Float(Int8(bitPattern: q[j])) }
            }
        }
        return out
    }
}

extension QuantizedMatrix {
    /// A dense f32 matrix (row-major), stored as f32 rows.
    public init(f32 values: [Float], rows: Int, cols: Int) throws(EngineError) {
        try require(
            values.count == rows * cols, "expected \(rows)x\(cols) = \(rows * cols) values, got \(values.count)")
        let bytes = values.withUnsafeBytes { Array($0) }
        try self.init(type: .f32, rows: rows, cols: cols, bytes: bytes)
    }
}

extension Kernels {
    /// Y = X W^T for `tokens` rows of X (tokens x cols, row-major) and W (rows x cols):
    /// Y is tokens x rows. Dense f32 weights use OpenBLAS sgemm when tokens > 1 (unless
    /// `useBLAS` is false: the row kernels win for a few dozen tokens); quantized
    /// weights use the row kernels with `numerics`, every weight row read once for all tokens.
    /// Output rows are split across `threads`.
    public func linear(
        _ w: QuantizedMatrix, x: UnsafeBufferPointer<Float>, tokens: Int,
        into y: UnsafeMutableBufferPointer<Float>, numerics: Numerics = .exact, useBLAS: Bool = true
    ) throws(EngineError) {
        try require(tokens > 0, "linear needs at least one token")
        try require(x.count == tokens * w.cols, "x has \(x.count) values, expected \(tokens) x \(w.cols)")
        try require(y.count >= tokens * w.rows, "y holds \(y.count) values, expected \(tokens) x \(w.rows)")
        let rows = w.rows
        let cols = w.cols
        let stride = w.rowStride
        let t = qmatmulTable.pointee
        w.withUnsafeBytes { wb in
            let base = wb.baseAddress!
            if w.type == .f32 && tokens > 1 && useBLAS {
                ck_blas_sgemm(
                    false, true, tokens, rows, cols, 1, x.baseAddress, cols,
                    base.assumingMemoryBound(to: Float.self), cols, 0, y.baseAddress, rows)
                return
            }
            let parts = productParts(multiplyAdds: tokens * rows * cols, units: rows / 64)
            if numerics == .int8 && w.packed != nil {
                interleavedProducts([w], x: x.baseAddress!, tokens: tokens, into: [y.baseAddress!])
            } else if numerics == .int8 && w.type.isQuantized {
                let nb = cols / 32
                ThreadScratch.with(slot: 0, bytes: tokens * nb * MemoryLayout<ck_block_q8a>.stride) { raw in
                    let a = raw.assumingMemoryBound(to: ck_block_q8a.self)
                    t.quantize_q8a!(x.baseAddress!, tokens * cols, a)
                    Threads.parallelFor(parts, threads: threads) { p in
                        let r = Threads.range(rows, parts: parts, index: p)
                        t.dot_rows_q8a!(
                            w.type.c, base + r.lowerBound * stride, r.count, cols, stride, a, tokens,
                            y.baseAddress! + r.lowerBound, rows)
                    }
                }
            } else {
                Threads.parallelFor(parts, threads: threads) { p in
                    let r = Threads.range(rows, parts: parts, index: p)
                    t.dot_rows_f32!(
                        w.type.c, base + r.lowerBound * stride, r.count, cols, stride, x.baseAddress!, tokens,
                        y.baseAddress! + r.lowerBound, rows)
                }
            }
        }
    }

    /// Y_i = X W_i^T for matrices that read the same input (a layer's q/k/v, or gate/up): when
    /// all are interleaved and `numerics` is `.int8`, X is quantized once and one parallel pass
    /// covers the groups of all of them (one hand-off to the threads instead of one per
    /// matrix); otherwise `linear` per matrix. Each output equals `linear`'s bit for bit.
    func linearSharingInput(
        _ ws: [QuantizedMatrix], x: UnsafeBufferPointer<Float>, tokens: Int,
        into ys: [UnsafeMutableBufferPointer<Float>], numerics: Numerics
    ) throws(EngineError) {
        let cols = ws.first?.cols ?? 0
        guard numerics == .int8, ws.allSatisfy({ $0.packed != nil && $0.cols == cols }), ws.count == ys.count
        else {
            for (w, y) in zip(ws, ys) { try linear(w, x: x, tokens: tokens, into: y, numerics: numerics) }
            return
        }
        try require(tokens > 0, "linear needs at least one token")
        try require(x.count == tokens * cols, "x has \(x.count) values, expected \(tokens) x \(cols)")
        for (w, y) in zip(ws, ys) {
            try require(y.count >= tokens * w.rows, "y holds \(y.count) values, expected \(tokens) x \(w.rows)")
        }
        interleavedProducts(ws, x: x.baseAddress!, tokens: tokens, into: ys.map { $0.baseAddress! })
    }

    /// How many parts a product of `multiplyAdds` is split into, each at least one of `units`
    /// (64 rows). One below 256k multiply-adds: a hand-off to the spinning pool costs about a
    /// microsecond, a libdispatch wake-up tens, and a 576x576 decode GEMV is ~20 us. Above it,
    /// four parts per thread, taken by whichever thread is free: a thread that starts late or
    /// shares its core finishes fewer instead of holding the others at the join.
    private func productParts(multiplyAdds: Int, units: Int) -> Int {
        guard threads > 1, multiplyAdds >= 1 << 18 else { return 1 }
        return max(1, min(4 * threads, units))
    }

    /// Y_i = X W_i^T (tokens x rows_i, row-major) with int8 activations on the interleaved rows of
    /// each W_i (all with `packed`, the same cols; sizes checked by the caller): X quantized once,
    /// the groups of 8 rows of all the matrices split across `threads` in one parallel pass.
    private func interleavedProducts(
        _ ws: [QuantizedMatrix], x: UnsafePointer<Float>, tokens: Int, into ys: [UnsafeMutablePointer<Float>]
    ) {
        let cols = ws[0].cols
        let t = qmatmulTable.pointee
        let total = ws.reduce(0) { $0 + $1.rows / 8 }
        let multiplyAdds = tokens * total * 8 * cols
        let parts = productParts(multiplyAdds: multiplyAdds, units: total / 8)
        ThreadScratch.with(slot: 0, bytes: tokens * (cols / 32) * MemoryLayout<ck_block_q8h>.stride) { raw in
            let a = raw.assumingMemoryBound(to: ck_block_q8h.self)
            t.quantize_q8h!(x, tokens * cols, a)
            Threads.parallelFor(parts, threads: threads) { p in
                let r = Threads.range(total, parts: parts, index: p)
                var start = 0
                for (i, w) in ws.enumerated() {
                    let lo = max(r.lowerBound, start)
                    let hi = min(r.upperBound, start + w.rows / 8)
                    if lo < hi {
                        let gb = ck_qmatmul_x8_group_bytes(w.type.c, cols)
                        w.packed!.withUnsafeBytes { pb in
                            t.dot_x8_q8h!(
                                w.type.c, pb.baseAddress! + (lo - start) * gb, hi - lo, cols, a, tokens,
                                ys[i] + 8 * (lo - start), w.rows)
                        }
                    }
                    start += w.rows / 8
                }
            }
        }
    }

    /// Row `index` of a matrix, dequantized into `out` (cols values).
    public func row(_ w: QuantizedMatrix, _ index: Int, into out: UnsafeMutableBufferPointer<Float>) throws(EngineError)
    {
        try require(index >= 0 && index < w.rows, "row \(index) out of range 0..<\(w.rows)")
        try require(out.count >= w.cols, "output holds \(out.count), need \(w.cols)")
        w.withUnsafeBytes { wb in
            qmatmulTable.pointee.dequantize!(w.type.c, wb.baseAddress! + index * w.rowStride, w.cols, out.baseAddress!)
        }
    }
}

extension QuantizedMatrix {
    /// Throws `nonFinite` naming `what` if any value could be NaN or infinite: f32/f16 values, or
    /// the f16 scales and minimums of quantized blocks (block codes are integers, always finite).
    public func checkFinite(_ what: @autoclosure () -> String) throws(EngineError) {
        let (scales, blockBytes): (Int, Int)
        switch type {
        case .f32, .f16: (scales, blockBytes) = (0, 0)
        case .q8_0: (scales, blockBytes) = (1, MemoryLayout<ck_block_q8_0>.size)
        case .q4_0: (scales, blockBytes) = (1, MemoryLayout<ck_block_q4_0>.size)
        case .q4_1: (scales, blockBytes) = (2, MemoryLayout<ck_block_q4_1>.size)
        case .q2_1: (scales, blockBytes) = (2, MemoryLayout<ck_block_q2_1>.size)
        }
        let bad: Int? = withUnsafeBytes { b in
            func f16Bad(_ o: Int) -> Bool {
                UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt16.self)) & 0x7C00 == 0x7C00
            }
            switch type {
            case .f32:
                for i in 0..<(b.count / 4) where !b.loadUnaligned(fromByteOffset: 4 * i, as: Float.self).isFinite {
                    return i
                }
            case .f16:
                for i in 0..<(b.count / 2) where f16Bad(2 * i) { return i }
            default:
                for blk in 0..<(b.count / blockBytes) {
                    for s in 0..<scales where f16Bad(blk * blockBytes + 2 * s) { return blk * 32 }
                }
            }
            return nil
        }
        if let bad {
            throw EngineError.nonFinite("\(what()) has a non-finite value (or block scale) at element \(bad)")
        }
    }
}
