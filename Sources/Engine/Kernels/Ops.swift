import CKernels

extension Kernels {
    /// x <- GELU(x) = 0.5 x (1 + erf(x / sqrt 2)) in place (|error| <= ~1e-7 |x| at SIMD levels).
    public func geluErf(_ x: UnsafeMutableBufferPointer<Float>) {
        guard let b = x.baseAddress, x.count > 0 else { return }
        opsTable.pointee.gelu_erf(b, x.count)
    }

    /// LayerNorm of each row of `d` values in place: (x - mean) / sqrt(var + eps) * g + b.
    public func layerNorm(
        _ x: UnsafeMutableBufferPointer<Float>, d: Int, gamma: UnsafeBufferPointer<Float>,
        beta: UnsafeBufferPointer<Float>, eps: Float
    ) throws(EngineError) {
        try require(d > 0 && x.count % d == 0, "\(x.count) values are not whole rows of \(d)")
        try require(
            gamma.count == d && beta.count == d, "gamma and beta need \(d) values, got \(gamma.count) and \(beta.count)"
        )
        guard x.count > 0 else { return }
        opsTable.pointee.layernorm(x.baseAddress!, x.count / d, d, gamma.baseAddress!, beta.baseAddress!, eps)
    }
}

extension Kernels {
    /// RMSNorm of each row of `d` values: y = x / sqrt(mean(x²) + eps) * gamma (x and y distinct).
    public func rmsNorm(
        _ x: UnsafeBufferPointer<Float>, into y: UnsafeMutableBufferPointer<Float>, d: Int,
        gamma: UnsafeBufferPointer<Float>, eps: Float
    ) throws(EngineError) {
        try require(d > 0 && x.count % d == 0, "\(x.count) values are not whole rows of \(d)")
        try require(y.count >= x.count, "output holds \(y.count) values, need \(x.count)")
        try require(gamma.count == d, "gamma needs \(d) values, got \(gamma.count)")
        guard x.count > 0 else { return }
        opsTable.pointee.rmsnorm(x.baseAddress!, y.baseAddress!, x.count / d, d, gamma.baseAddress!, eps)
    }

    /// Rotary position embedding in place on adjacent pairs of every head of `rows` rows (each
    /// `rowStride` values apart): pair i of row r turns by the angle whose cosine and sine are
    /// cos[r * headDim / 2 + i], sin[...].
    public func rope(
        _ x: UnsafeMutableBufferPointer<Float>, rows: Int, heads: Int, headDim: Int, rowStride: Int,
        cos: UnsafeBufferPointer<Float>, sin: UnsafeBufferPointer<Float>
    ) throws(EngineError) {
        try require(headDim > 0 && headDim % 2 == 0, "head dimension must be even, got \(headDim)")
        try require(heads * headDim <= rowStride, "\(heads) heads of \(headDim) do not fit rows of \(rowStride)")
        try require(rows == 0 || x.count >= (rows - 1) * rowStride + heads * headDim, "x holds too few values")
        try require(cos.count >= rows * headDim / 2 && sin.count >= rows * headDim / 2, "angle tables too short")
        guard rows > 0 else { return }
        opsTable.pointee.rope(
            x.baseAddress!, rows, heads, headDim, rowStride, cos.baseAddress!, sin.baseAddress!)
    }

    /// SwiGLU's gate in place: g = g / (1 + exp(-g)) * u.
    public func siluMul(_ g: UnsafeMutableBufferPointer<Float>, _ u: UnsafeBufferPointer<Float>) throws(EngineError) {
        try require(u.count >= g.count, "u holds \(u.count) values, need \(g.count)")
        guard g.count > 0 else { return }
        opsTable.pointee.silu_mul(g.baseAddress!, u.baseAddress!, g.count)
    }
}
