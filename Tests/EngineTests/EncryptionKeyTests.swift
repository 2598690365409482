import XCTest
import Engine

final class EncryptionKeyTests: XCTestCase {
    let shape = ModelShape(vocab: 1000, dim: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, hidden: 96)
    let id = [UInt8](repeating: 7, count: 32)

    func testDerivationIsDeterministicAndKeyed() throws {
        let s1 = [UInt8](repeating: 1, count: 32)
        let s2 = [UInt8](repeating: 2, count: 32)
        let a = try EncryptionKey(secret: s1, shape: shape, modelID: id)
        let b = try EncryptionKey(secret: s1, shape: shape, modelID: id)
        let c = try EncryptionKey(secret: s2, shape: shape, modelID: id)
        let otherModel = try EncryptionKey(secret: s1, shape: shape, modelID: [UInt8](repeating: 8, count: 32))
        XCTAssertEqual(a.vocabularyPermutation, b.vocabularyPermutation)
        XCTAssertNotEqual(a.vocabularyPermutation, c.vocabularyPermutation)
        XCTAssertNotEqual(a.vocabularyPermutation, otherModel.vocabularyPermutation, "the model id salts the KDF")
        XCTAssertEqual(a.vocabularyPermutation.sorted(), Array(0..<1000), "P is a permutation")
        XCTAssertEqual(a.mlpPermutation(layer: 1).sorted(), Array(0..<96))
        XCTAssertNotEqual(a.mlpPermutation(layer: 0), a.mlpPermutation(layer: 1), "layers get independent streams")
        XCTAssertTrue(a.mlpScales(layer: 0).allSatisfy { $0 > 0 })
        XCTAssertEqual(a.ropePairAngles(layer: 0).count, 2 * 8)
        let q = try a.residualRotation()
        let n = shape.dim
        XCTAssertEqual(q, try b.residualRotation())
        for i in 0..<n {
            for j in 0..<n {
                var s = 0.0
                for t in 0..<n { s += q[i * n + t] * q[j * n + t] }
                XCTAssertEqual(s, i == j ? 1 : 0, accuracy: 1e-12) // double QR: orthogonal to rounding
            }
        }
        assertThrowsEngineError(isInvalidArgument) {
            _ = try EncryptionKey(secret: [1, 2, 3], shape: self.shape, modelID: self.id)
        }
    }

    func testKeyFileRoundTripAndRefusals() throws {
        let dir = NSTemporaryDirectory() + "engine-key-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let k = try EncryptionKey(shape: shape, modelID: id)
        try k.write(to: dir + "/k.key")
        XCTAssertEqual(try EncryptionKey.read(path: dir + "/k.key", forModel: id), k)
        let attrs = try FileManager.default.attributesOfItem(atPath: dir + "/k.key")
        XCTAssertEqual((attrs[.posixPermissions] as? NSNumber)?.intValue, 0o600, "client-only file")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/k.key"))
        try bytes.prefix(100).write(to: URL(fileURLWithPath: dir + "/short.key"))
        XCTAssertThrowsError(try EncryptionKey.read(path: dir + "/short.key")) { e in
            XCTAssertTrue("\(e)".contains("truncated"), "\(e)")
        }
        var flipped = bytes
        flipped[80] ^= 0x01
        try flipped.write(to: URL(fileURLWithPath: dir + "/flip.key"))
        XCTAssertThrowsError(try EncryptionKey.read(path: dir + "/flip.key")) { e in
            XCTAssertTrue("\(e)".contains("checksum"), "\(e)")
        }
        XCTAssertThrowsError(try EncryptionKey.read(path: dir + "/k.key", forModel: [UInt8](repeating: 9, count: 32))) {
            e in
            XCTAssertTrue("\(e)".contains("wrong key"), "\(e)")
        }
    }

    func testKeygenCLI() throws {
        let dir = NSTemporaryDirectory() + "engine-keygen-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data((0..<32).map { UInt8($0) }).write(to: URL(fileURLWithPath: dir + "/secret"))
        let (st, out) = try runEngine([
            "keygen", "--model", TestModels.smolLM2, "--output", dir + "/a.key", "--secret-file", dir + "/secret",
        ])
        XCTAssertEqual(st, 0, out)
        let f = try GGUFFile(path: TestModels.smolLM2)
        let k = try EncryptionKey.read(path: dir + "/a.key", forModel: EncryptionKey.modelID(gguf: f))
        XCTAssertEqual(k.secret, (0..<32).map { UInt8($0) })
        XCTAssertEqual(k.shape, ModelShape(try LlamaConfig(gguf: f)))
        let (st2, out2) = try runEngine(["keygen", "--model", TestModels.smolLM2, "--output", dir + "/b.key"])
        XCTAssertEqual(st2, 0, out2)
        XCTAssertNotEqual(try EncryptionKey.read(path: dir + "/b.key").secret, k.secret, "CSPRNG secret")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/short"))
        let (st3, _) = try runEngine([
            "keygen", "--model", TestModels.smolLM2, "--output", dir + "/c.key", "--secret-file", dir + "/short",
        ])
        XCTAssertNotEqual(st3, 0)
    }
}
