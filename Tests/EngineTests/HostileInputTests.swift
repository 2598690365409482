import Engine
import Foundation
import XCTest

/// Bytes of a crafted GGUF file (version 3, little-endian).
struct CraftedGGUF {
    var kv: [UInt8] = []
    var kvCount: UInt64 = 0
    var infos: [UInt8] = []
    var tensorCount: UInt64 = 0
    var data: [UInt8] = []

    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func str(_ s: String) -> [UInt8] { u64(UInt64(s.utf8.count)) + Array(s.utf8) }

    mutating func add(_ key: String, type: UInt32, _ value: [UInt8]) {
        kv += Self.str(key) + Self.u32(type) + value
        kvCount += 1
    }
    mutating func add(_ key: String, u32 v: UInt32) { add(key, type: 4, Self.u32(v)) }
    mutating func add(_ key: String, u64 v: UInt64) { add(key, type: 10, Self.u64(v)) }
    mutating func add(_ key: String, f32 v: Float) { add(key, type: 6, Self.u32(v.bitPattern)) }
    mutating func add(_ key: String, string v: String) { add(key, type: 8, Self.str(v)) }
    mutating func tensor(_ name: String, dims: [UInt64], type: UInt32 = 0, offset: UInt64) {
        infos +=
            Self.str(name) + Self.u32(UInt32(dims.count)) + dims.flatMap(Self.u64) + Self.u32(type) + Self.u64(offset)
        tensorCount += 1
    }

    var bytes: [UInt8] {
        var b = Self.u32(0x4655_4747) + Self.u32(3) + Self.u64(tensorCount) + Self.u64(kvCount) + kv + infos
        while b.count % 32 != 0 { b.append(0) }
        return b + data
    }

    /// A tiny Llama model's metadata and one f32 embedding (vocab 4 x dim 8).
    static func llama(blocks: UInt32 = 1, context: UInt64 = 64) -> CraftedGGUF {
        var g = CraftedGGUF()
        g.add("general.architecture", string: "llama")
        g.add("llama.embedding_length", u32: 8)
        g.add("llama.block_count", u32: blocks)
        g.add("llama.attention.head_count", u32: 2)
        g.add("llama.attention.head_count_kv", u32: 1)
        g.add("llama.feed_forward_length", u32: 16)
        g.add("llama.context_length", u64: context)
        g.add("llama.attention.layer_norm_rms_epsilon", f32: 1e-5)
        g.tensor("token_embd.weight", dims: [8, 4], offset: 0)
        g.data = [UInt8](repeating: 0, count: 128)
        return g
    }
}

/// Crafted hostile inputs, one test per kind: each asserts the exact refusal (error case and a
/// message fragment) and, for the data-loss kinds, that the victim is byte-identical afterwards.
final class HostileInputTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "engine-hostile-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let path = dir + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Asserts `body` throws an EngineError whose description contains `fragment`.
    func refuses(_ fragment: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("accepted; expected a refusal containing \"\(fragment)\"", file: file, line: line)
        } catch let e as EngineError {
            XCTAssertTrue("\(e)".contains(fragment), "\(e)", file: file, line: line)
        } catch {
            XCTFail("not an EngineError: \(error)", file: file, line: line)
        }
    }

    // MARK: size arithmetic and limits (GGUF)

    func testGGUFCraftedSizesAreRefused() throws {
        var g = CraftedGGUF()
        g.tensor("t", dims: [1 << 39, 1 << 39, 1 << 39], offset: 0)
        let overflow = try write(g.bytes, "dims.gguf")
        refuses("size overflows") { _ = try GGUFFile(path: overflow) }

        g = CraftedGGUF()
        g.tensor("t", dims: [8], offset: UInt64(1) << 63 - 32)
        let offset = try write(g.bytes, "offset.gguf")
        refuses("beyond the file's end") { _ = try GGUFFile(path: offset) }

        g = CraftedGGUF()
        g.add("general.alignment", u64: UInt64(1) << 62)
        let align = try write(g.bytes, "align.gguf")
        refuses("general.alignment") { _ = try GGUFFile(path: align) }

        // 60,000 nested arrays in a small file: refused by depth, no stack overflow
        g = CraftedGGUF()
        var nested = CraftedGGUF.u32(4) + CraftedGGUF.u64(1) + CraftedGGUF.u32(7)
        for _ in 0..<60_000 { nested = CraftedGGUF.u32(9) + CraftedGGUF.u64(1) + nested }
        g.add("deep", type: 9, nested)
        let deep = try write(g.bytes, "deep.gguf")
        refuses("nests arrays deeper") { _ = try GGUFFile(path: deep) }

        // an array claiming 2^31 elements in a tiny file: refused before any allocation
        g = CraftedGGUF()
        g.add("big", type: 9, CraftedGGUF.u32(4) + CraftedGGUF.u64(1 << 31))
        let big = try write(g.bytes, "big.gguf")
        refuses("does not fit the file") { _ = try GGUFFile(path: big) }

        // two tensors on the same bytes
        g = CraftedGGUF()
        g.tensor("a", dims: [8], offset: 0)
        g.tensor("b", dims: [8], offset: 0)
        g.data = [UInt8](repeating: 0, count: 32)
        let overlap = try write(g.bytes, "overlap.gguf")
        refuses("overlap") { _ = try GGUFFile(path: overlap) }
    }

    func testLlamaConfigsOutsideLimitsAreRefused() throws {
        let blocks = try write(CraftedGGUF.llama(blocks: 1 << 31).bytes, "blocks.gguf")
        refuses("inconsistent shape") { _ = try LlamaConfig(gguf: GGUFFile(path: blocks)) }
        let context = try write(CraftedGGUF.llama(context: 1 << 40).bytes, "context.gguf")
        refuses("context length") { _ = try LlamaConfig(gguf: GGUFFile(path: context)) }
        var p = CraftedGGUF.llama()
        p.add("engine.attention.score", string: "power")
        p.add("engine.attention.power_p", u64: 1 << 40)
        let power = try write(p.bytes, "power.gguf")
        refuses("exponent must be even in 2...64") { _ = try LlamaModel(path: power, kernels: Kernels.default) }
    }

    // MARK: safetensors, .npy, IDX, vector files

    func testSafetensorsCraftedHeadersAreRefused() throws {
        for n: UInt64 in [1 << 63, .max] {
            let path = try write(CraftedGGUF.u64(n) + Array("{}".utf8), "len-\(n).safetensors")
            refuses("header length") { _ = try SafeTensorsFile(path: path) }
        }
        func file(_ json: String, data: Int) throws -> String {
            let h = Array(json.utf8)
            return try write(CraftedGGUF.u64(UInt64(h.count)) + h + [UInt8](repeating: 0, count: data), "t.safetensors")
        }
        let huge = try file(
            #"{"a": {"dtype": "F32", "shape": [4611686018427387904, 8], "data_offsets": [0, 32]}}"#, data: 32)
        refuses("size overflows") { _ = try SafeTensorsFile(path: huge) }
        let entry = #"{"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}"#
        let overlap = try file("{\"a\": \(entry), \"b\": \(entry)}", data: 32)
        refuses("overlap") { _ = try SafeTensorsFile(path: overlap) }
    }

    func npy(_ header: String, data: Int) -> [UInt8] {
        var h = header
        while (10 + h.utf8.count + 1) % 64 != 0 { h += " " }
        h += "\n"
        let n = UInt16(h.utf8.count)
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(n & 0xff), UInt8(n >> 8)] + Array(h.utf8)
            + [UInt8](repeating: 0, count: data)
    }

    func testNPYCraftedHeadersAreRefused() throws {
        let overflow = try write(
            npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", data: 16), "o.npy")
        refuses("size overflows") { _ = try VectorFile.read(path: overflow) }
        // '<f4' mentioned inside another field is not the dtype
        let sneaky = try write(
            npy("{'descr': '<f8', 'note': \"'descr': '<f4'\", 'fortran_order': False, 'shape': (2, 2), }", data: 32),
            "s.npy")
        refuses("descr is '<f8'") { _ = try VectorFile.read(path: sneaky) }
        let short = try write(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", data: 8), "t.npy")
        refuses("truncated") { _ = try VectorFile.read(path: short) }
    }

    /// The fuzzer's finding: a 33-byte IDX file whose header claims 2.9M images of 2 x 11,776
    /// pixels made the reader reserve 68 GB before reading.
    func testIDXHeaderClaimingMoreThanTheFileHoldsIsRefused() throws {
        let crash = try write(
            [0, 0, 8, 3, 0, 0x2c, 0, 0, 0, 0, 0, 2, 0, 0, 0x2e, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 4, 5, 6, 7],
            "crash-idx3-ubyte")
        refuses("more than a 33-byte file can hold") { _ = try VectorFile.read(path: crash) }
    }

    func testIDXHeaderClaimingAHugeImageIsRefused() throws {
        // a small gzip whose header claims one 46,341 x 46,341 image (2.1 GB)
        let raw = try write(
            [0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0xB5, 0x05, 0, 0, 0xB5, 0x05] + [UInt8](repeating: 7, count: 1 << 20),
            "x-idx3-ubyte")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/gzip")
        p.arguments = ["-k", raw]
        try p.run()
        p.waitUntilExit()
        refuses("at most 65536 pixels") { _ = try VectorFile.read(path: raw + ".gz") }
    }

    func testVectorFilesAreIdentifiedByExtension() throws {
        let vecs = CraftedGGUF.u32(2) + CraftedGGUF.u32(0) + CraftedGGUF.u32(0)
        for name in ["v.txt", "v.ivecs", "v"] {
            let path = try write(vecs, name)
            refuses("unknown vector file type") { _ = try VectorFile.read(path: path) }
        }
        let fvecs = try write(vecs, "v.fvecs")
        XCTAssertEqual(try VectorFile.read(path: fvecs).dim, 2)
        refuses("expected an .ivecs file") { _ = try VectorFile.readIvecs(path: fvecs) }
        refuses("query vectors has nan") {
            _ = try BruteForce.search(base: [1, 2], queries: [.nan, 0], dim: 2, k: 1, metric: .l2)
        }
    }

    // MARK: index header, delta log, index directory

    func smallIndex(_ name: String) throws -> String {
        var rng = SeededRandom(seed: 5)
        let v = rng.uniform(300 * 8)
        let path = dir + "/" + name
        var o = HybridIndexOptions()
        o.headFraction = 0.05
        _ = try HybridIndex.build(vectors: v, dim: 8, directory: path, options: o)
        return path
    }

    /// A FIFO where a file is expected (a crafted index directory, a vector or model path) is
    /// refused at once: opening one for reading would otherwise wait for a writer forever.
    func testFIFOsAreRefusedWithoutBlocking() throws {
        let clock = Date()
        for name in ["heads.bin", "postings.bin"] {
            let idx = try smallIndex("fifo-" + name)
            try FileManager.default.removeItem(atPath: idx + "/" + name)
            XCTAssertEqual(mkfifo(idx + "/" + name, 0o600), 0)
            refuses("not a regular file") { _ = try HybridIndex(directory: idx) }
        }
        let fifo = dir + "/vectors.npy"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        refuses("not a regular file") { _ = try VectorFile.source(path: fifo) }
        let model = dir + "/model.gguf"
        XCTAssertEqual(mkfifo(model, 0o600), 0)
        refuses("not a regular file") { _ = try MappedFile(path: model) }
        XCTAssertLessThan(Date().timeIntervalSince(clock), 30)
    }

    func testIndexHeaderWithHugeCountsIsRefused() throws {
        let idx = try smallIndex("i")
        var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: idx + "/heads.bin")))
        for (offset, value) in [(24, UInt64(1) << 62), (40, UInt64.max >> 1)] {
            var c = b
            withUnsafeBytes(of: value.littleEndian) { for i in 0..<8 { c[offset + i] = $0[i] } }
            let crc = c.withUnsafeBytes {
                Kernels.default.crc32c(UnsafeRawBufferPointer(rebasing: $0[0..<(c.count - 4)]))
            }
            withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { c[c.count - 4 + i] = $0[i] } }
            try Data(c).write(to: URL(fileURLWithPath: idx + "/heads.bin"))
            XCTAssertThrowsError(try HybridIndex(directory: idx), "field at \(offset)")
        }
        b = []
    }

    func testDeltaLogCorruptionInTheMiddleIsRefusedAndRepaired() throws {
        let path = try smallIndex("d")
        let live = try HybridIndex(directory: path, writable: true)
        try live.insert([Float](repeating: 0.5, count: 8), id: 1000)
        try live.insert([Float](repeating: -0.5, count: 8), id: 1001)
        try live.delete([7])
        try live.insert([Float](repeating: 0.25, count: 8), id: 1002)
        let log = path + "/delta.log"
        var b = [UInt8](try Data(contentsOf: URL(fileURLWithPath: log)))
        b[4 + 8 + 3] ^= 0xFF // a value of the first insert: its CRC fails
        try Data(b).write(to: URL(fileURLWithPath: log))
        refuses("corrupt record at byte 0") { _ = try HybridIndex(directory: path) }
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: log))), b, "refusing changes nothing")
        let repaired = try HybridIndex(directory: path, writable: true, repair: true)
        XCTAssertEqual(repaired.repairedBytes, 48)
        XCTAssertEqual(repaired.insertedCount, 2) // 1001 and 1002 kept
        XCTAssertEqual(repaired.tombstoneCount, 3) // the delete of 7 kept (and the two inserts' own tombstones)
        let hits = try repaired.search([Float](repeating: 0, count: 8), k: 400, parameters: .init(nprobe: 64))
        XCTAssertFalse(hits.neighbors.contains { $0.id == 7 }, "a deleted id never comes back")
        XCTAssertNoThrow(try HybridIndex(directory: path), "the repaired log opens")
    }

    func testIndexBuildReplacesOnlyACompleteIndex() throws {
        let target = dir + "/victim"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: target + "/notes.txt"))
        try Data("not an index".utf8).write(to: URL(fileURLWithPath: target + "/heads.bin"))
        var rng = SeededRandom(seed: 6)
        refuses("refusing to replace it") {
            _ = try HybridIndex.build(vectors: rng.uniform(100 * 4), dim: 4, directory: target)
        }
        XCTAssertEqual(try String(contentsOfFile: target + "/notes.txt", encoding: .utf8), "keep me")
        XCTAssertEqual(try String(contentsOfFile: target + "/heads.bin", encoding: .utf8), "not an index")
        let idx = try smallIndex("ok")
        XCTAssertNoThrow(try HybridIndex.build(vectors: rng.uniform(300 * 8), dim: 8, directory: idx))
    }

    // MARK: tokenizers

    func testTokenizersTerminateInLinearTime() throws {
        let byteTokens = (0..<256).map { b -> String in
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            let offset = (0..<b).filter {
                !((33...126).contains($0) || (161...172).contains($0) || (174...255).contains($0))
            }
            return String(Character(Unicode.Scalar(UInt32(printable ? b : 256 + offset.count))!))
        }
        refuses("is empty") {
            _ = try BPETokenizer(
                tokens: byteTokens + [""], merges: [], specialIDs: [256], bos: nil, eos: nil, isolateNumbers: false)
        }
        let tok = try BPETokenizer(gguf: GGUFFile(path: TestModels.smolLM2))
        func encodeTime(_ n: Int) throws -> Double {
            let word = String(repeating: "abcdefghij", count: n) // one pre-token
            let clock = DispatchTime.now().uptimeNanoseconds
            let ids = try tok.encode(word)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - clock) * 1e-9
            XCTAssertEqual(try tok.decode(ids), word)
            return seconds
        }
        let small = try encodeTime(10_000) // 100 KB
        let large = try encodeTime(100_000) // 1 MB
        // linear: 10x the text, about 10x the time (a quadratic merge loop gives ~100x); the
        // absolute bound is for release builds, scaled by ENGINE_TEST_TIME_SCALE under sanitizers
        let scale = Double(ProcessInfo.processInfo.environment["ENGINE_TEST_TIME_SCALE"] ?? "") ?? 1
        XCTAssertLessThan(large / small, 25, "100 KB in \(small) s, 1 MB in \(large) s")
        XCTAssertLessThan(large, 1.0 * scale, "1 MB single word took \(large) s")
        refuses("has no token for") { _ = try tok.encode("a\u{04}b") }
    }

    // MARK: command line: options, outputs, keys

    func engine(_ args: [String], env: [String: String] = [:]) throws -> (Int32, String) {
        try runEngine(args, env: env)
    }

    func testOptionRangesAreEnforced() throws {
        let cases: [([String], String)] = [
            (["generate", "--prompt", "x", "--max-tokens", "9223372036854775807"], "--max-tokens must be in"),
            (["generate", "--prompt", "x", "--threads", "0"], "--threads must be in"),
            (["generate", "--prompt", "x", "--threads", "-3"], "--threads must be in"),
            (["generate", "--prompt", "x", "--threads", "3000000000"], "--threads must be in"),
            (
                ["index", "search", "--index", "i", "--queries", "q", "--output", "o.ivecs", "--k", "-1"],
                "--k must be in"
            ),
            (
                [
                    "index", "search", "--index", "i", "--queries", "q", "--output", "o.ivecs", "--k",
                    "4611686018427387904",
                ],
                "--k must be in"
            ),
            (
                ["index", "search", "--index", "i", "--queries", "q", "--output", "o.ivecs", "--target-recall", "1.5"],
                "--target-recall must be in"
            ),
            (
                ["index", "search", "--index", "i", "--queries", "q", "--output", "o.ivecs", "--target-recall", "nan"],
                "--target-recall must be in"
            ),
            (
                [
                    "index", "search", "--index", "i", "--queries", "q", "--output", "o.ivecs", "--target-recall",
                    "0.9",
                    "--nprobe", "4",
                ],
                "not both"
            ),
            (
                ["index", "build", "--input", "x.fvecs", "--output", "o", "--calibration-queries", "-1"],
                "--calibration-queries must be in"
            ),
            (
                ["index", "build", "--input", "x.fvecs", "--output", "o", "--posting-cap", "-5"],
                "--posting-cap must be in"
            ),
            (
                ["index", "build", "--input", "x.fvecs", "--output", "o", "--pq-subquantizers", "-1"],
                "--pq-subquantizers must be in"
            ),
        ]
        for (args, message) in cases {
            let (st, out) = try engine(args)
            XCTAssertNotEqual(st, 0, args.joined(separator: " "))
            XCTAssertTrue(out.contains(message), "\(args): \(out)")
        }
        let (st, out) = try engine(["info"], env: ["ENGINE_THREADS": "3000000000"])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("ENGINE_THREADS must be an integer in"), out)
    }

    /// The adjustable limits: raised or lowered within their ceilings in code and through
    /// `ENGINE_LIMIT_*`, refused outside them or under an unknown name, and obeyed by the checks.
    func testLimitsAreAdjustableWithinTheirCeilings() throws {
        defer { for l in Limits.Adjustable.allCases { try? Limits.set(l, to: l.defaultValue) } }
        XCTAssertEqual(Limits.neighbors, 1 << 16)
        for bad in [0, -1, (1 << 16) * 16 + 1, Int.max] {
            XCTAssertThrowsError(try Limits.set(.neighbors, to: bad)) { error in
                XCTAssertTrue("\(error)".contains("limit neighbors must be in 1...1048576"), "\(error)")
            }
        }
        try Limits.set(.neighbors, to: 3)
        XCTAssertEqual(Limits.neighbors, 3)
        let base: [Float] = (0..<40).map { Float($0) }
        XCTAssertThrowsError(try BruteForce.search(base: base, queries: [0, 0, 0, 0], dim: 4, k: 5, metric: .l2)) {
            XCTAssertTrue("\($0)".contains("k must be at most 3, got 5"), "\($0)")
        }
        XCTAssertEqual(try BruteForce.search(base: base, queries: [0, 0, 0, 0], dim: 4, k: 3, metric: .l2), [0, 1, 2])
        XCTAssertThrowsError(try Limits.applyEnvironment(["ENGINE_LIMIT_BOGUS": "5"])) {
            XCTAssertTrue("\($0)".contains("unknown limit ENGINE_LIMIT_BOGUS"), "\($0)")
        }
        XCTAssertThrowsError(try Limits.applyEnvironment(["ENGINE_LIMIT_CONTEXT": "1e9"])) {
            XCTAssertTrue("\($0)".contains("ENGINE_LIMIT_CONTEXT must be an integer in 1...16777216"), "\($0)")
        }
        try Limits.applyEnvironment(["ENGINE_LIMIT_CONTEXT": "4194304", "PATH": "/bin"])
        XCTAssertEqual(Limits.context, 4_194_304)

        // the command: --k beyond the default is refused, accepted once the limit is raised
        let search = [
            "index", "search", "--index", dir + "/none", "--queries", "q.fvecs", "--output", dir + "/o.ivecs",
        ]
        var (st, out) = try engine(search + ["--k", "70000"])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("--k must be in 1...65536"), out)
        (st, out) = try engine(search + ["--k", "70000"], env: ["ENGINE_LIMIT_NEIGHBORS": "100000"])
        XCTAssertNotEqual(st, 0)
        XCTAssertFalse(out.contains("--k must be in"), out) // got past validation: the index is missing
        XCTAssertTrue(out.contains("none"), out)
        (st, out) = try engine(search + ["--k", "10"], env: ["ENGINE_LIMIT_NEIGHBORS": "99999999"])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("ENGINE_LIMIT_NEIGHBORS must be an integer in 1...1048576"), out)
    }

    func testNoCommandReplacesAFileItDidNotCreate() throws {
        let victim = dir + "/victim.txt"
        try Data("precious".utf8).write(to: URL(fileURLWithPath: victim))
        var (st, out) = try engine(["keygen", "--output", victim])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("exists: refusing to replace it"), out)
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "precious")
        // an output equal to an input
        (st, out) = try engine(["encrypt-model", "--key", victim, "--output", TestModels.smolLM2, "--force"])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("is also an input"), out)
        // both halves of a split model on one path
        let key = dir + "/k.key"
        (st, out) = try engine(["keygen", "--output", key])
        XCTAssertEqual(st, 0, out)
        var mode = stat()
        XCTAssertEqual(stat(key, &mode), 0)
        XCTAssertEqual(mode.st_mode & 0o777, 0o600, "a key file is private from the start")
        (st, out) = try engine([
            "encrypt-model", "--key", key, "--split", "--output", dir + "/h.gguf", "--client-output", dir + "/h.gguf",
        ])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("name the same file"), out)
        // --force replaces what the user names
        (st, out) = try engine(["keygen", "--output", victim, "--force"])
        XCTAssertEqual(st, 0, out)
    }

    func testWrongKeysAndMissingKeysAreRefused() throws {
        let key = dir + "/a.key"
        let other = dir + "/b.key"
        let enc = dir + "/enc.gguf"
        XCTAssertEqual(try engine(["keygen", "--output", key]).0, 0)
        XCTAssertEqual(try engine(["keygen", "--output", other]).0, 0)
        XCTAssertEqual(try engine(["encrypt-model", "--key", key, "--output", enc]).0, 0)
        var (st, out) = try engine(["generate", "--model", enc, "--key", other, "--prompt", "Hi", "--max-tokens", "2"])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("encrypted with another key"), out)
        (st, out) = try engine(["generate", "--key", key, "--prompt", "Hi", "--max-tokens", "2"])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("not an encrypted model"), out)
        (st, out) = try engine(["generate", "--model", enc, "--prompt", "Hi", "--max-tokens", "2"])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("is an encrypted model"), out)
    }

    func testInvalidUTF8InputIsRefusedWithItsLine() throws {
        let input = try write(Array("fine\n".utf8) + [0x66, 0xFF, 0x66, 0x0A], "in.txt")
        var (st, out) = try engine(["tokenize", "--input", input])
        XCTAssertNotEqual(st, 0)
        XCTAssertTrue(out.contains("line 2 is not valid UTF-8"), out)
        (st, out) = try engine(["tokenize", "--input", input, "--lossy-utf8"])
        XCTAssertEqual(st, 0, out)
    }

    // MARK: model configs and weights

    /// A copy of MiniLM's directory with config.json edited (weights linked, not copied).
    func miniLM(editing edit: (inout [String: Any]) -> Void) throws -> String {
        let d = dir + "/minilm-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        for f in ["vocab.txt", "model.safetensors"] {
            try FileManager.default.createSymbolicLink(
                atPath: d + "/" + f, withDestinationPath: TestModels.miniLM + "/" + f)
        }
        var cfg =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: TestModels.miniLM + "/config.json")))
            as! [String: Any]
        edit(&cfg)
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: d + "/config.json"))
        return d
    }

    func testBertConfigsThatDisagreeWithTheirTensorsAreRefused() throws {
        refuses("inconsistent shape") { _ = try BertModel(directory: self.miniLM { $0["num_attention_heads"] = 0 }) }
        refuses("inconsistent shape") { _ = try BertModel(directory: self.miniLM { $0["num_hidden_layers"] = -1 }) }
        refuses("more than the 3 layers") { _ = try BertModel(directory: self.miniLM { $0["num_hidden_layers"] = 3 }) }
        refuses("layer_norm_eps") { _ = try BertModel(directory: self.miniLM { $0["layer_norm_eps"] = -1 }) }
        refuses("missing tensor") { _ = try BertModel(directory: self.miniLM { $0["num_hidden_layers"] = 7 }) }
    }

    func testNonFiniteWeightsAreRefused() throws {
        let st = try SafeTensorsFile(path: TestModels.miniLM + "/model.safetensors")
        let name = st.tensors.keys.first { $0.hasSuffix("encoder.layer.0.attention.self.query.bias") }!
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: TestModels.miniLM + "/model.safetensors")))
        let nan = Float.nan.bitPattern.littleEndian
        withUnsafeBytes(of: nan) { for i in 0..<4 { bytes[st.tensors[name]!.offset + i] = $0[i] } }
        let d = dir + "/nan"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        try Data(bytes).write(to: URL(fileURLWithPath: d + "/model.safetensors"))
        for f in ["vocab.txt", "config.json"] {
            try FileManager.default.copyItem(atPath: TestModels.miniLM + "/" + f, toPath: d + "/" + f)
        }
        refuses("has nan at index 0") { _ = try BertModel(directory: d) }
    }
}
