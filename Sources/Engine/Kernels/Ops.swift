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
    ) throws {
        try require(d > 0 && x.count % d == 0, "\(x.count) values are not whole rows of \(d)")
        try require(
            gamma.count == d && beta.count == d, "gamma and beta need \(d) values, got \(gamma.count) and \(beta.count)"
        )
        guard x.count > 0 else { return }
        opsTable.pointee.layernorm(x.baseAddress!, x.count / d, d, gamma.baseAddress!, beta.baseAddress!, eps)
    }
}
