import Crypto
import Engine
import Foundation
import XCTest

/// The on-disk format of a hybrid index, byte for byte: an index built from fixed input and seed
/// must hash to the checked-in values below. They were recorded when the format was last changed
/// on purpose (docs/index-format.md; last: version 2, the recall calibration table); a refactoring
/// must leave them as they are. The input is
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
            "heads.bin": "0bbb60aab82a998c4620995cf98c57e48c88e7b5f02b352db3218432aee727a8",
            "postings.bin": "9ce7d2569c5bba534dfd4c937220a827e81c42c1eef1a572e62a71e3073e27a2",
        ],
        .f16: [
            "heads.bin": "82ff48013725f1087e7c881bfc8fd456cec200b04644610ff0f96069f530cbb0",
            "postings.bin": "3390bbb5284e1e23b91cceb4164abf46ed52fc75cc9607940ae1c60634da98dc",
        ],
        .pq8: [
            "heads.bin": "5a90ccbef61fbfb5ce9c1da77cabc406600647277ec7bc6a667e3654b6e58750",
            "postings.bin": "d06ccacc644d5e764bc773a2d7a4122efe3ee5311ccb7a849ccdcee6f09f601d",
            "vectors.bin": vectors,
        ],
        .pq4: [
            "heads.bin": "a5bf56d97eb2a29bd01e38e8a9fa57c36e9f7b5321d00e5899fbeb5c4043f600",
            "postings.bin": "3d597e00c094fe577faf75da5b6ae0b78a4eb20db8ba74382e7abaf75f2d14a6",
            "vectors.bin": vectors,
        ],
        .binary: [
            "heads.bin": "5cb4ccba6e06afd64b215a3fd69b03d397d028d7330f44ceea78243be7772fe2",
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
