import XCTest
import Engine
import EngineTools

/// The attack code behind docs/threat-model.md works where it must (and fails where it must):
/// synthetic cases with known answers.
final class LeakageAttackTests: XCTestCase {
    func testProcrustesRecoversRotationFromEnoughPairs() throws {
        let d = 32
        var rng = SeededRandom(seed: 3)
        let key = try EncryptionKey(
            secret: [UInt8](repeating: 1, count: 32),
            shape: ModelShape(vocab: 10, dim: d, layers: 1, heads: 1, kvHeads: 1, headDim: d, hidden: 8),
            modelID: [UInt8](repeating: 2, count: 32))
        let q = try key.residualRotation()
        let n = 200
        let x = rng.gaussian(n * d)
        let y = try LinearAlgebra.matmul(x, q.map { Float($0) }, m: n, k: d, n: d)
        let full = try LeakageAttacks.knownPlaintext(
            plain: x, encrypted: y, rows: 2 * d, heldOut: 50, dim: d, rotation: q)
        XCTAssertLessThan(full.matrixError, 1e-4) // exact up to f32 rounding once n >= d
        let few = try LeakageAttacks.knownPlaintext(
            plain: x, encrypted: y, rows: d / 4, heldOut: 50, dim: d, rotation: q)
        XCTAssertGreaterThan(few.decryptError, 0.3) // d/4 pairs leave 3/4 of the space unknown
    }

    func testFrequencyAnalysisOnZipfStream() {
        var rng = SeededRandom(seed: 5)
        let vocab = 500
        // Zipf(1) sampling by inverse CDF
        let w = (1...vocab).map { 1 / Double($0) }
        let total = w.reduce(0, +)
        var cdf: [Double] = []
        var acc = 0.0
        for x in w {
            acc += x / total
            cdf.append(acc)
        }
        func draw() -> Int {
            let u = Double(rng.next() >> 11) * 0x1p-53
            return cdf.firstIndex { $0 >= u } ?? vocab - 1
        }
        let p = Array(0..<vocab).shuffled(using: &rng)
        let reference = (0..<200_000).map { _ in draw() }
        let observed = (0..<200_000).map { _ in p[draw()] }
        let r = LeakageAttacks.frequencyAnalysis(reference: reference, observed: observed, permutation: p)
        XCTAssertGreaterThan(r.tokens, 0.3) // the head of a Zipf law is recovered by rank
        let none = LeakageAttacks.frequencyAnalysis(
            reference: reference, observed: (0..<1000).map { _ in Int(rng.next() % UInt64(vocab)) }, permutation: p)
        XCTAssertLessThan(none.tokens, 0.1) // uniform traffic carries no rank information
    }

    func testEmbeddingMatchingRecoversPermutation() throws {
        let n = 3000
        let d = 16
        var rng = SeededRandom(seed: 9)
        let e = rng.gaussian(n * d)
        let key = try EncryptionKey(
            secret: [UInt8](repeating: 4, count: 32),
            shape: ModelShape(vocab: n, dim: d, layers: 1, heads: 1, kvHeads: 1, headDim: d, hidden: 8),
            modelID: [UInt8](repeating: 2, count: 32))
        let p = key.vocabularyPermutation
        let rotated = try LinearAlgebra.matmul(e, key.residualRotation().map { Float($0) }, m: n, k: d, n: d)
        var f = [Float](repeating: 0, count: n * d)
        for t in 0..<n { for j in 0..<d { f[p[t] * d + j] = rotated[t * d + j] } }
        let r = try LeakageAttacks.embeddingMatching(plain: e, encrypted: f, rows: n, dim: d, permutation: p)
        XCTAssertGreaterThan(r.full, 0.99)
        // Unrelated rows: nothing is recovered.
        let g = rng.gaussian(n * d)
        XCTAssertLessThan(
            try LeakageAttacks.embeddingMatching(plain: e, encrypted: g, rows: n, dim: d, permutation: p).full, 0.05)
    }
}
