import Foundation

/// Attacks on equivariant encryption, used to measure what it leaks (docs/threat-model.md).
/// Each takes what an attacker would hold plus the true key material, used only to score.
public enum LeakageAttacks {
    /// (a) Token-frequency analysis: the attacker ranks the encrypted ids it observes by count and
    /// maps the k-th most frequent to the k-th most frequent id of a public reference corpus
    /// (plain ids). Returns the fraction of observed tokens decrypted correctly, and the fraction
    /// of distinct observed ids decrypted correctly.
    public static func frequencyAnalysis(reference: [Int], observed: [Int], permutation p: [Int]) -> (tokens: Double, distinct: Double) {
        func ranked(_ ids: [Int]) -> [Int] {
            var c: [Int: Int] = [:]
            for t in ids { c[t, default: 0] += 1 }
            return c.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.map(\.key)
        }
        let ref = ranked(reference), obs = ranked(observed)
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
    public static func embeddingMatching(plain e: [Float], encrypted f: [Float], rows n: Int, dim d: Int, permutation p: [Int],
                                         anchors: Int? = nil, candidates: Int = 64) throws -> (norms: Double, full: Double) {
        func norms(_ m: [Float]) -> [Double] {
            (0..<n).map { r in var s = 0.0; for j in 0..<d { s += Double(m[r * d + j]) * Double(m[r * d + j]) }; return s.squareRoot() }
        }
        let ne = norms(e), nf = norms(f)
        let order = (0..<n).sorted { ne[$0] < ne[$1] }
        let sortedNorms = order.map { ne[$0] }
        func lowerBound(_ x: Double) -> Int {
            var lo = 0, hi = n
            while lo < hi { let mid = (lo + hi) / 2; if sortedNorms[mid] < x { lo = mid + 1 } else { hi = mid } }
            return lo
        }
        /// Plain rows nearest in norm to encrypted row r, closest first.
        func nearest(_ r: Int, _ k: Int) -> [Int] {
            let i = lowerBound(nf[r])
            var lo = i - 1, hi = i, out: [Int] = []
            while out.count < k && (lo >= 0 || hi < n) {
                if hi >= n || (lo >= 0 && nf[r] - sortedNorms[lo] <= sortedNorms[hi] - nf[r]) { out.append(order[lo]); lo -= 1 } else { out.append(order[hi]); hi += 1 }
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
            var a: [Float] = [], b: [Float] = []
            for (en, pl) in pairs { a += e[(pl * d)..<((pl + 1) * d)]; b += f[(en * d)..<((en + 1) * d)] }
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
                var best = -1, bestD = Double.infinity
                for c in nearest(r, candidates) {
                    var s = 0.0
                    for j in 0..<d { let x = Double(back[r * d + j] - e[c * d + j]); s += x * x }
                    if s < bestD { bestD = s; best = c }
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
    public static func knownPlaintext(plain x: [Float], encrypted y: [Float], rows: Int, heldOut: Int, dim d: Int,
                                      rotation q: [Double]) throws -> (matrixError: Double, decryptError: Double) {
        try require(rows + heldOut <= x.count / d && x.count == y.count, "need \(rows) + \(heldOut) rows of pairs")
        let qh = try procrustes(Array(x[0..<(rows * d)]), Array(y[0..<(rows * d)]), rows: rows, dim: d)
        var num = 0.0
        for i in 0..<(d * d) { let t = Double(qh[i]) - q[i]; num += t * t }
        var errs: [Double] = []
        for r in rows..<(rows + heldOut) {
            var s = 0.0, nx = 0.0
            for i in 0..<d {
                var acc = 0.0 // (y Q^T)_i = sum_j y_j Q^[i][j]
                for j in 0..<d { acc += Double(y[r * d + j]) * Double(qh[i * d + j]) }
                let t = acc - Double(x[r * d + i]); s += t * t; nx += Double(x[r * d + i]) * Double(x[r * d + i])
            }
            errs.append((s / nx).squareRoot())
        }
        errs.sort()
        return ((num / Double(d)).squareRoot(), errs[errs.count / 2])
    }
}
