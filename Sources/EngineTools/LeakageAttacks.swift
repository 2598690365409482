import Engine
import Foundation

/// Attacks on equivariant encryption, used to measure what it leaks (docs/threat-model.md).
/// Each takes what an attacker would hold plus the true key material, used only to score.
public enum LeakageAttacks {
    /// (a) Token-frequency analysis: the attacker ranks the encrypted ids it observes by count and
    /// maps the k-th most frequent to the k-th most frequent id of a public reference corpus
    /// (plain ids). Returns the fraction of observed tokens decrypted correctly, and the fraction
    /// of distinct observed ids decrypted correctly.
    public static func frequencyAnalysis(reference: [Int], observed: [Int], permutation p: [Int]) -> (
        tokens: Double, distinct: Double
    ) {
        func ranked(_ ids: [Int]) -> [Int] {
            var c: [Int: Int] = [:]
            for t in ids { c[t, default: 0] += 1 }
            return c.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map(\.key)
        }
        let ref = ranked(reference)
        let obs = ranked(observed)
        var inverse = [Int](repeating: 0, count: p.count)
        for (t, e) in p.enumerated() { inverse[e] = t }
        var guess: [Int: Int] = [:]
        for (i, e) in obs.enumerated() where i < ref.count { guess[e] = ref[i] }
        let right = observed.filter { guess[$0] == inverse[$0] }.count
        let distinct = obs.filter { guess[$0] == inverse[$0] }.count
        return (Double(right) / Double(max(observed.count, 1)), Double(distinct) / Double(max(obs.count, 1)))
    }

    /// Orthogonal Procrustes: the orthogonal R minimising |A R - B|_F for n x d row pairs
    /// (R = U V^T from the SVD of A^T B). Row-major d x d.
    public static func procrustes(_ a: [Float], _ b: [Float], rows n: Int, dim d: Int) throws -> [Float] {
        var at = [Float](repeating: 0, count: n * d)
        for i in 0..<n { for j in 0..<d { at[j * n + i] = a[i * d + j] } }
        let m = try LinearAlgebra.matmul(at, b, m: d, k: n, n: d)
        let (u, _, vt) = try LinearAlgebra.svd(m, rows: d, cols: d)
        return try LinearAlgebra.matmul(u, vt, m: d, k: d, n: d)
    }

    /// (b) Matching the rows of an encrypted embedding (or output) matrix E' = P E Q to the
    /// public base model's E. Row norms survive Q: each encrypted row is first matched to the
    /// plain row of nearest norm ("norms only"). The `anchors` matches with the largest norm gap
    /// to their second candidate then give Q by Procrustes; every encrypted row is finally
    /// matched among the `candidates` plain rows nearest in norm by distance after rotating back,
    /// with one refit on all matches. Returns the fractions of P recovered by norms alone and by
    /// the full attack.
    public static func embeddingMatching(
        plain e: [Float], encrypted f: [Float], rows n: Int, dim d: Int, permutation p: [Int],
        anchors: Int? = nil, candidates: Int = 64
    ) throws -> (norms: Double, full: Double) {
        func norms(_ m: [Float]) -> [Double] {
            (0..<n).map { r in
                var s = 0.0
                for j in 0..<d { s += Double(m[r * d + j]) * Double(m[r * d + j]) }
                return s.squareRoot()
            }
        }
        let ne = norms(e)
        let nf = norms(f)
        let order = (0..<n).sorted { ne[$0] < ne[$1] }
        let sortedNorms = order.map { ne[$0] }
        func lowerBound(_ x: Double) -> Int {
            var lo = 0
            var hi = n
            while lo < hi {
                let mid = (lo + hi) / 2
                if sortedNorms[mid] < x { lo = mid + 1 } else { hi = mid }
            }
            return lo
        }
        /// Plain rows nearest in norm to encrypted row r, closest first.
        func nearest(_ r: Int, _ k: Int) -> [Int] {
            let i = lowerBound(nf[r])
            var lo = i - 1
            var hi = i
            var out: [Int] = []
            while out.count < k && (lo >= 0 || hi < n) {
                if hi >= n || (lo >= 0 && nf[r] - sortedNorms[lo] <= sortedNorms[hi] - nf[r]) {
                    out.append(order[lo])
                    lo -= 1
                } else {
                    out.append(order[hi])
                    hi += 1
                }
            }
            return out
        }
        // truth: encrypted row p[t] holds plain row t
        var truth = [Int](repeating: 0, count: n)
        for (t, e) in p.enumerated() { truth[e] = t }
        var normHits = 0
        var confident: [(gap: Double, enc: Int, plain: Int)] = []
        for r in 0..<n {
            let c = nearest(r, 2)
            if c[0] == truth[r] { normHits += 1 }
            let gap = abs(ne[c[1]] - nf[r]) - abs(ne[c[0]] - nf[r])
            confident.append((gap / max(nf[r], 1e-12), r, c[0]))
        }
        confident.sort { $0.gap > $1.gap }
        let k = min(n, anchors ?? 2 * d)
        func fit(_ pairs: [(Int, Int)]) throws -> [Float] { // pairs (enc, plain): plain Q = enc
            var a: [Float] = []
            var b: [Float] = []
            for (en, pl) in pairs {
                a += e[(pl * d)..<((pl + 1) * d)]
                b += f[(en * d)..<((en + 1) * d)]
            }
            return try procrustes(a, b, rows: pairs.count, dim: d)
        }
        var q = try fit(confident.prefix(k).map { ($0.enc, $0.plain) })
        var matches: [Int] = []
        for round in 0..<2 {
            // rotate every encrypted row back: f Q^T
            var back = [Float](repeating: 0, count: n * d)
            var qt = [Float](repeating: 0, count: d * d)
            for i in 0..<d { for j in 0..<d { qt[j * d + i] = q[i * d + j] } }
            back = try LinearAlgebra.matmul(f, qt, m: n, k: d, n: d)
            matches = (0..<n).map { r in
                var best = -1
                var bestD = Double.infinity
                for c in nearest(r, candidates) {
                    var s = 0.0
                    for j in 0..<d {
                        let x = Double(back[r * d + j] - e[c * d + j])
                        s += x * x
                    }
                    if s < bestD {
                        bestD = s
                        best = c
                    }
                }
                return best
            }
            if round == 0 { q = try fit(matches.enumerated().map { ($0.offset, $0.element) }) }
        }
        let full = zip(matches, truth).filter { $0 == $1 }.count
        return (Double(normHits) / Double(n), Double(full) / Double(n))
    }

    /// (c) Known-plaintext recovery of Q from n pairs (x, x Q): Procrustes on the first n rows.
    /// Returns |Q^ - Q|_F / |Q|_F and the median relative error of decrypting held-out rows
    /// (y Q^T vs x) with the estimate.
    public static func knownPlaintext(
        plain x: [Float], encrypted y: [Float], rows: Int, heldOut: Int, dim d: Int,
        rotation q: [Double]
    ) throws -> (matrixError: Double, decryptError: Double) {
        try EngineError.require(
            rows + heldOut <= x.count / d && x.count == y.count, "need \(rows) + \(heldOut) rows of pairs")
        let qh = try procrustes(Array(x[0..<(rows * d)]), Array(y[0..<(rows * d)]), rows: rows, dim: d)
        var num = 0.0
        for i in 0..<(d * d) {
            let t = Double(qh[i]) - q[i]
            num += t * t
        }
        var errs: [Double] = []
        for r in rows..<(rows + heldOut) {
            var s = 0.0
            var nx = 0.0
            for i in 0..<d {
                var acc = 0.0 // (y Q^T)_i = sum_j y_j Q^[i][j]
                for j in 0..<d { acc += Double(y[r * d + j]) * Double(qh[i * d + j]) }
                let t = acc - Double(x[r * d + i])
                s += t * t
                nx += Double(x[r * d + i]) * Double(x[r * d + i])
            }
            errs.append((s / nx).squareRoot())
        }
        errs.sort()
        return ((num / Double(d)).squareRoot(), errs[errs.count / 2])
    }

    /// (d) Ciphertext-only recovery of Q from second-order statistics: the covariance of the
    /// server's states is Q^T C Q, so its eigenvectors are the public model's (computed on public
    /// text) rotated by Q, up to sign (fixed by the mean, which is also rotated) and up to mixing
    /// inside near-equal eigenvalues. `plain`: states of the public model on public text;
    /// `encrypted`: observed server states of other text; `testPlain`/`testEncrypted`: held-out
    /// pairs used only to score. Returns |Q^ - Q|_F/|Q|_F, the median relative error of
    /// decrypting held-out states, and the fraction of their energy on the top `top` directions
    /// and the median relative error of the held-out states' components on the `top` leading
    /// public directions (where most of the energy is).
    public static func covarianceMatching(
        plain x: [Float], encrypted y: [Float], testPlain tx: [Float], testEncrypted ty: [Float],
        dim d: Int, rotation q: [Double], top: Int = 8
    ) throws -> (matrixError: Double, decryptError: Double, topError: Double) {
        func stats(_ a: [Float]) throws -> (mean: [Double], vecs: [Float]) {
            let n = a.count / d
            var mean = [Double](repeating: 0, count: d)
            for r in 0..<n { for j in 0..<d { mean[j] += Double(a[r * d + j]) } }
            for j in 0..<d { mean[j] /= Double(n) }
            var c = [Double](repeating: 0, count: d * d)
            var row = [Double](repeating: 0, count: d)
            for r in 0..<n {
                for j in 0..<d { row[j] = Double(a[r * d + j]) - mean[j] }
                for i in 0..<d where row[i] != 0 {
                    let ri = row[i]
                    for j in i..<d { c[i * d + j] += ri * row[j] }
                }
            }
            var cf = [Float](repeating: 0, count: d * d)
            for i in 0..<d {
                for j in i..<d {
                    cf[i * d + j] = Float(c[i * d + j] / Double(n))
                    cf[j * d + i] = cf[i * d + j]
                }
            }
            return (mean, try LinearAlgebra.svd(cf, rows: d, cols: d).u) // columns: eigenvectors, descending
        }
        let (mp, up) = try stats(x)
        let (me, ue) = try stats(y)
        var qh = [Float](repeating: 0, count: d * d)
        for k in 0..<d {
            var a = 0.0
            var b = 0.0
            for j in 0..<d {
                a += mp[j] * Double(up[j * d + k])
                b += me[j] * Double(ue[j * d + k])
            }
            let s: Float = a * b >= 0 ? 1 : -1
            for i in 0..<d {
                let pi = up[i * d + k] * s
                for j in 0..<d { qh[i * d + j] += pi * ue[j * d + k] }
            }
        }
        var num = 0.0
        for i in 0..<(d * d) {
            let t = Double(qh[i]) - q[i]
            num += t * t
        }
        let n = tx.count / d
        var errs: [Double] = []
        var topErrs: [Double] = []
        for r in 0..<n {
            var xh = [Double](repeating: 0, count: d)
            for i in 0..<d {
                var acc = 0.0
                for j in 0..<d { acc += Double(ty[r * d + j]) * Double(qh[i * d + j]) }
                xh[i] = acc
            }
            var s = 0.0
            var nx = 0.0
            for i in 0..<d {
                let t = xh[i] - Double(tx[r * d + i])
                s += t * t
                nx += Double(tx[r * d + i] * tx[r * d + i])
            }
            errs.append((s / nx).squareRoot())
            // error within the top public directions: project both onto up[:, 0..<top]
            var st = 0.0
            var nt = 0.0
            for k in 0..<top {
                var a = 0.0
                var b = 0.0
                for i in 0..<d {
                    a += xh[i] * Double(up[i * d + k])
                    b += Double(tx[r * d + i]) * Double(up[i * d + k])
                }
                st += (a - b) * (a - b)
                nt += b * b
            }
            topErrs.append((st / max(nt, 1e-30)).squareRoot())
        }
        errs.sort()
        topErrs.sort()
        return ((num / Double(d)).squareRoot(), errs[n / 2], topErrs[n / 2])
    }
}
