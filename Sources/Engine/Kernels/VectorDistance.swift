import CKernels

/// Element type of stored vectors.
public enum VectorType: String, Sendable, CaseIterable {
    case f32, f16
    /// Bytes per value.
    public var bytes: Int { self == .f32 ? 4 : 2 }
}

extension Kernels {
    /// Distances (smaller is better; `Metric` conventions: squared L2, or negated inner product
    /// for .innerProduct and .cosine) of `query` to `count` rows starting at `rows`, each `dim`
    /// values of `type` at a stride of `stride` elements. No validation: callers check sizes.
    @inline(__always)
    func distancesUnchecked(
        _ metric: Metric, query: UnsafePointer<Float>, rows: UnsafeRawPointer, type: VectorType,
        count: Int, dim: Int, stride: Int, into out: UnsafeMutablePointer<Float>
    ) {
        let t = vecTable.pointee
        switch (metric, type) {
        case (.l2, .f32): t.l2_f32(query, rows.assumingMemoryBound(to: Float.self), count, dim, stride, out)
        case (_, .f32): t.ip_f32(query, rows.assumingMemoryBound(to: Float.self), count, dim, stride, out)
        case (.l2, .f16): t.l2_f16(query, rows.assumingMemoryBound(to: UInt16.self), count, dim, stride, out)
        case (_, .f16): t.ip_f16(query, rows.assumingMemoryBound(to: UInt16.self), count, dim, stride, out)
        }
    }

    /// Distances of `query` (dim values) to the rows of `data` (n x dim f32, row-major).
    public func distances(
        _ metric: Metric, query: UnsafeBufferPointer<Float>, data: UnsafeBufferPointer<Float>,
        into out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        try checkedDistances(
            metric, query: query, rows: UnsafeRawBufferPointer(data), count: data.count, type: .f32, into: out)
    }

    /// Distances to rows of IEEE half floats (bit patterns), n x dim.
    public func distances(
        _ metric: Metric, query: UnsafeBufferPointer<Float>, f16 data: UnsafeBufferPointer<UInt16>,
        into out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        try checkedDistances(
            metric, query: query, rows: UnsafeRawBufferPointer(data), count: data.count, type: .f16, into: out)
    }

    /// Size checks shared by the public entry points; `count` is the number of row elements.
    private func checkedDistances(
        _ metric: Metric, query: UnsafeBufferPointer<Float>, rows: UnsafeRawBufferPointer, count: Int,
        type: VectorType, into out: UnsafeMutableBufferPointer<Float>
    ) throws(EngineError) {
        let d = query.count
        try require(d > 0 && count % d == 0, "data has \(count) values, not a multiple of the query's \(d)")
        let n = count / d
        try require(out.count >= n, "out holds \(out.count) values, expected \(n)")
        if n == 0 { return }
        distancesUnchecked(
            metric, query: query.baseAddress!, rows: rows.baseAddress!, type: type, count: n, dim: d, stride: d,
            into: out.baseAddress!)
    }

    /// out[i] = x[i] - h[i] for the first `count` values, with `h` IEEE half-precision bit
    /// patterns (exact conversion; the same floats at every level).
    func subtractFloat16Unchecked(
        _ x: UnsafePointer<Float>, _ h: UnsafePointer<UInt16>, into out: UnsafeMutablePointer<Float>, count: Int
    ) {
        vecTable.pointee.sub_f16(x, h, out, count)
    }

    /// `count` half-precision bit patterns at `h` as f32, into `out` (exact conversion; the same
    /// floats at every level, as `Float(Float16(bitPattern:))`). No validation: callers check sizes.
    @inline(__always)
    func floatsFromFloat16Unchecked(_ h: UnsafePointer<UInt16>, into out: UnsafeMutablePointer<Float>, count: Int) {
        vecTable.pointee.from_f16(h, out, count)
    }

    /// Half-precision bit patterns as f32 (exact).
    func floats(fromFloat16Bits h: [UInt16]) -> [Float] {
        [Float](unsafeUninitializedCapacity: h.count) { out, n in
            h.withUnsafeBufferPointer { src in
                if let s = src.baseAddress, let d = out.baseAddress {
                    floatsFromFloat16Unchecked(s, into: d, count: src.count)
                }
            }
            n = h.count
        }
    }

    /// `x` as IEEE half-precision bit patterns (round to nearest even), into `out` (x.count values).
    public func float16Bits(_ x: UnsafeBufferPointer<Float>, into out: UnsafeMutableBufferPointer<UInt16>) {
        precondition(out.count >= x.count, "float16Bits: output shorter than input")
        guard let src = x.baseAddress, let dst = out.baseAddress, x.count > 0 else { return }
        vecTable.pointee.to_f16(src, dst, x.count)
    }

    /// `x` as IEEE half-precision bit patterns (round to nearest even).
    public func float16Bits(_ x: [Float]) -> [UInt16] {
        [UInt16](unsafeUninitializedCapacity: x.count) { out, n in
            x.withUnsafeBufferPointer { float16Bits($0, into: out) }
            n = x.count
        }
    }

    /// CRC-32C (Castagnoli) of `bytes`, continuing from `crc` (0 for a fresh checksum).
    public func crc32c(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return vecTable.pointee.crc32c(crc, base, bytes.count)
    }
}
