/// A randomized Walsh-Hadamard rotation for sign (binary) codes: x is zero-padded to P = 2^k >=
/// max(64, dim) coordinates, multiplied by random signs D, and transformed by the orthonormal
/// Hadamard matrix H / sqrt(P). Inner products and norms are preserved, and the coordinates of
/// a rotated vector are spread evenly, so the Hamming distance h between the sign codes of two
/// rotated vectors estimates their angle: cos(angle) ~ cos(pi h / P) (random-hyperplane rule).
struct SignRotation: Sendable {
    let dim: Int
    let padded: Int
    /// D, P values of +1 or -1.
    let signs: [Float]
    var words: Int { padded / 64 }

    init(dim: Int, seed: UInt64) {
        var p = 64
        while p < dim { p *= 2 }
        var rng = SeededRandom(seed: seed)
        self.init(dim: dim, signs: (0..<p).map { _ in rng.next() & 1 == 0 ? 1 : -1 })
    }

    init(dim: Int, signs: [Float]) {
        self.dim = dim
        padded = signs.count
        self.signs = signs
    }

    /// z = H D pad(x) / sqrt(P); z holds P floats.
    func rotate(_ x: UnsafePointer<Float>, into z: UnsafeMutablePointer<Float>) {
        signs.withUnsafeBufferPointer { s in
            for j in 0..<dim { z[j] = x[j] * s[j] }
        }
        for j in dim..<padded { z[j] = 0 }
        var h = 1
        while h < padded {
            var i = 0
            while i < padded {
                for j in i..<(i + h) {
                    let a = z[j]
                    let b = z[j + h]
                    z[j] = a + b
                    z[j + h] = a - b
                }
                i += 2 * h
            }
            h *= 2
        }
        let inv = 1 / Float(padded).squareRoot()
        for j in 0..<padded { z[j] *= inv }
    }

    /// Sign bits of z (bit j of word j / 64 set when z[j] > 0).
    func signBits(_ z: UnsafePointer<Float>, into bits: UnsafeMutablePointer<UInt64>) {
        for w in 0..<words {
            var v: UInt64 = 0
            for b in 0..<64 where z[w * 64 + b] > 0 { v |= 1 << UInt64(b) }
            bits[w] = v
        }
    }
}
