import Crypto
import Engine
import Foundation
import XCTest

/// The on-disk format of a hybrid index, byte for byte: an index built from fixed input and seed
/// must hash to the checked-in values below. They were recorded when the format was last changed
/// on purpose (docs/index-format.md); a refactoring must leave them as they are. The input is
/// integer-valued, well-separated clusters, so every distance comparison the build makes has a
/// margin far above float rounding and the bytes do not depend on the BLAS kernel or CPU (checked
/// by a second build through the CLI with OpenBLAS forced to its Prescott kernels).
final class IndexFormatTests: XCTestCase {
    static let dim = 16

    /// 2,400 vectors around 24 centres on a grid of step 16, offsets in -2...2.
    static func input() -> [Float] {
        var rng = SeededRandom(seed: 2024)
        let clusters = 24
        let centres = (0..<(clusters * dim)).map { _ in Float(Int(rng.next() % 9) - 4) * 16 }
        return (0..<2400).flatMap { _ -> [Float] in
            let c = Int(rng.next() % UInt64(clusters))
            return (0..<dim).map { centres[c * dim + $0] + Float(Int(rng.next() % 5) - 2) }
        }
    }

    /// SHA-256 of each file of the index (hex), in name order.
    static func digests(_ dir: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir).sorted() {
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
            out[name] = SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
        }
        return out
    }

    static let expected: [PostingPayload: [String: String]] = [
        .f32: [
            "heads.bin": "02ce40712ddc3a798b82d6c1525a9d4e9c7cb55d74964a482382622d126f63dd",
            "postings.bin": "9ce7d2569c5bba534dfd4c937220a827e81c42c1eef1a572e62a71e3073e27a2",
        ],
        .f16: [
            "heads.bin": "78c2972483b8bd7596c20796011409c68b1840cce43b17059d5913aeb8521bed",
            "postings.bin": "3390bbb5284e1e23b91cceb4164abf46ed52fc75cc9607940ae1c60634da98dc",
        ],
        .pq8: [
            "heads.bin": "3c295fecfb0b10c9641bed141f0aada680f60a5520e816fd74cdb6574bbf8521",
            "postings.bin": "d06ccacc644d5e764bc773a2d7a4122efe3ee5311ccb7a849ccdcee6f09f601d",
            "vectors.bin": vectors,
        ],
        .pq4: [
            "heads.bin": "da3a7fb9d715b452a41edd33dea45b3893e196033d5343c90e0a2d29542264c9",
            "postings.bin": "3d597e00c094fe577faf75da5b6ae0b78a4eb20db8ba74382e7abaf75f2d14a6",
            "vectors.bin": vectors,
        ],
        .binary: [
            "heads.bin": "6f7c5e72e8e84c4b7fa561c15110f50a0db9c35fd2d74a8d1992de2d77f2e19d",
            "postings.bin": "3cf2df19d4942294fa08ad4f67fe63bad44c0723cdc91ec6ba2a8e0b997c34ee",
            "vectors.bin": vectors,
        ],
    ]
    static let vectors = "d7092d72249d75e89f745c7c8b176f341c72367bcac3f7fa146f336a9555c65b"

    func testBuildIsByteIdenticalToTheRecordedFormat() throws {
        let base = Self.input()
        let tmp = NSTemporaryDirectory() + "engine-format-\(getpid())"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try VectorFile.write(base, dim: Self.dim, to: tmp + "/base.fvecs")
        for payload in PostingPayload.allCases {
            var o = HybridIndexOptions()
            o.payload = payload
            o.headFraction = 0.02
            o.seed = 7
            let dir = tmp + "/\(payload)"
            _ = try HybridIndex.build(
                vectors: base, dim: Self.dim, directory: dir, options: o, kernels: Kernels.selected(threads: 2))
            let got = try Self.digests(dir)
            XCTAssertEqual(got, Self.expected[payload], "\(payload): the index bytes changed")
            // the same build through the CLI, streamed from a file, with other sgemm kernels
            let cli = tmp + "/\(payload)-cli"
            let (st, out) = try runEngine(
                [
                    "index", "build", "--input", tmp + "/base.fvecs", "--output", cli, "--payload", payload.rawValue,
                    "--head-fraction", "0.02", "--seed", "7",
                ], env: ["OPENBLAS_CORETYPE": "Prescott"])
            XCTAssertEqual(st, 0, out)
            XCTAssertEqual(try Self.digests(cli), got, "\(payload): CLI build with Prescott sgemm differs")
        }
    }
}
