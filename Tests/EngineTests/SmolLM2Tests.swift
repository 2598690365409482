import XCTest
import Engine

/// The real SmolLM2-135M-Instruct Q4_1 GGUF against the numpy reference of
/// scripts/ref_smollm2.py (fixture Fixtures/smollm2_logits.bin).
final class SmolLM2Tests: XCTestCase {
    struct Prompt {
        var ids: [Int]
        var maxLogit: [Float]
        var minLogit: [Float]
        var argmax: [Int]
        var sampled: [[Float]]
        var greedy: [Int] = []
    }

    static func loadFixture() throws -> (sampledIds: [Int], prompts: [Prompt]) {
        var r = ByteReader(Array(try Data(contentsOf: fixtureURL("smollm2_logits.bin"))))
        let n = r.u32()
        let _ = r.u32()
        let ns = r.u32()
        let ids = (0..<ns).map { _ in r.u32() }
        var prompts: [Prompt] = []
        for _ in 0..<n {
            let T = r.u32()
            var p = Prompt(ids: (0..<T).map { _ in r.u32() }, maxLogit: [], minLogit: [], argmax: [], sampled: [])
            for _ in 0..<T {
                let mx = r.floats(1)[0]
                let mn = r.floats(1)[0]
                p.maxLogit.append(mx)
                p.minLogit.append(mn)
                p.argmax.append(r.u32())
                p.sampled.append(r.floats(ns))
            }
            prompts.append(p)
        }
        for i in 0..<n {
            let g = r.u32()
            prompts[i].greedy = (0..<g).map { _ in r.u32() }
        }
        return (ids, prompts)
    }

    /// The three numerics: f32 weights; quantized weights with exact f32 activations; quantized
    /// weights with int8 activations.
    enum Path: String, CaseIterable { case f32, nativeExact, nativeInt8 }

    static let models: [Path: LlamaModel] = {
        var m: [Path: LlamaModel] = [:]
        for p in Path.allCases { m[p] = try? load(p) }
        return m
    }()

    static func load(_ p: Path) throws -> LlamaModel {
        switch p {
        case .f32: return try LlamaModel(path: TestModels.smolLM2, format: .f32, kernels: Kernels.selected())
        case .nativeExact:
            return try LlamaModel(
                path: TestModels.smolLM2, format: .native, activations: .exact, kernels: Kernels.selected())
        case .nativeInt8:
            return try LlamaModel(
                path: TestModels.smolLM2, format: .native, activations: .int8, kernels: Kernels.selected())
        }
    }

    /// Cached model; a load failure (missing file: run scripts/fetch_models.sh) is rethrown.
    func model(_ p: Path) throws -> LlamaModel { try Self.models[p] ?? Self.load(p) }

    /// f32 weights, and quantized weights with exact activations: max |logit diff| <= 1e-3 x
    /// (max - min of the reference logits) at every position of every prompt (on 2,048 fixed
    /// random vocabulary ids). The reference is float64 over the same dequantized weights, so
    /// the difference is our f32 rounding; the bound 1e-3 of the range is ~500x what we measure.
    func testExactLogitsMatchReference() throws {
        for path in [Path.f32, .nativeExact] { try exactLogits(path) }
    }

    func exactLogits(_ path: Path) throws {
        let (ids, prompts) = try Self.loadFixture()
        let m = try model(path)
        var worst: Float = 0
        for p in prompts {
            let cache = try m.makeCache(capacity: 256)
            let logits = try m.forward(p.ids, cache: cache, allLogits: true)
            let V = m.config.vocab
            for t in 0..<p.ids.count {
                let row = logits[(t * V)..<((t + 1) * V)]
                let range = p.maxLogit[t] - p.minLogit[t]
                var diff: Float = 0
                for (j, id) in ids.enumerated() { diff = max(diff, abs(row[row.startIndex + id] - p.sampled[t][j])) }
                worst = max(worst, diff / range)
                XCTAssertLessThanOrEqual(diff, 1e-3 * range, "position \(t)")
                let am = row.indices.max { row[$0] < row[$1] }! - row.startIndex
                XCTAssertEqual(am, p.argmax[t], "argmax at position \(t)")
            }
        }
        print("SmolLM2 \(path): max |logit diff| / logit range = \(worst)")
    }

    /// Quantized weights with int8 activations against the float64 reference, with llama.cpp's own
    /// int8-activation figures on this fixture as the bounds (measured independently by
    /// scripts/int8_numerics.py through llama-cpp-python: max |logit diff| / range 0.0461, mean
    /// 0.00559; docs/benchmarks.md, item 3 of issue 14): ours may be no larger. Top-1: at least
    /// 68 of 70 positions agree, and where they do not, the reference's choice is within twice
    /// that max error of our top logit (a near tie that an error within the bound can flip). On
    /// AVX-512 (Emerald Rapids) one position of 70 flips: a tie to 4e-5 of the range, which the
    /// levels' different float summation orders decide differently.
    func testNativeTopOneAgreement() throws {
        let llamaMax: Float = 0.0461
        let llamaMean = 0.00559
        let (ids, prompts) = try Self.loadFixture()
        let m = try model(.nativeInt8)
        var agree = 0
        var total = 0
        var worst: Float = 0
        var sum = 0.0
        var count = 0
        var widestFlip: Float = 0
        for p in prompts {
            let cache = try m.makeCache(capacity: 256)
            let logits = try m.forward(p.ids, cache: cache, allLogits: true)
            let V = m.config.vocab
            for t in 0..<p.ids.count {
                let row = logits[(t * V)..<((t + 1) * V)]
                let range = p.maxLogit[t] - p.minLogit[t]
                let am = row.indices.max { row[$0] < row[$1] }!
                if am - row.startIndex == p.argmax[t] {
                    agree += 1
                } else {
                    let gap = (row[am] - row[row.startIndex + p.argmax[t]]) / range
                    widestFlip = max(widestFlip, gap)
                    XCTAssertLessThanOrEqual(gap, 2 * llamaMax, "top-1 differs at a position that is no near tie")
                }
                total += 1
                for (j, id) in ids.enumerated() {
                    let e = abs(row[row.startIndex + id] - p.sampled[t][j]) / range
                    worst = max(worst, e)
                    sum += Double(e)
                    count += 1
                }
            }
        }
        print(
            """
            SmolLM2 native (int8 activations): top-1 agreement \(agree)/\(total) (widest flip: our top \
            \(widestFlip) of the range above the reference's choice), max |logit diff| / range = \(worst), \
            mean \(sum / Double(count))
            """)
        XCTAssertEqual(total, 70)
        XCTAssertGreaterThanOrEqual(agree, total - 2)
        XCTAssertLessThanOrEqual(worst, llamaMax)
        XCTAssertLessThanOrEqual(sum / Double(count), llamaMean)
    }

    /// 32-token greedy continuations equal the reference's for the exact paths; the int8 path's
    /// agreement is reported (its numerics differ by design, as llama.cpp's do).
    func testGreedyContinuations() throws {
        let (_, prompts) = try Self.loadFixture()
        for f in Path.allCases {
            let m = try model(f)
            var same = 0
            for p in prompts {
                let cache = try m.makeCache(capacity: 256)
                var logits = try m.forward(p.ids, cache: cache)
                var out: [Int] = []
                for _ in 0..<p.greedy.count {
                    let next = logits.indices.max { logits[$0] < logits[$1] }!
                    out.append(next)
                    logits = try m.forward([next], cache: cache)
                }
                if out == p.greedy { same += 1 }
                let firstDiff = zip(out, p.greedy).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                if f != .nativeInt8 {
                    XCTAssertEqual(out, p.greedy, "\(f) greedy continuation")
                } else {
                    print(
                        """
                        SmolLM2 nativeInt8: continuation first differs at token \
                        \(firstDiff.map(String.init) ?? "none") of \(p.greedy.count)
                        """
                    )
                }
            }
            print("SmolLM2 \(f): \(same)/\(prompts.count) greedy continuations identical to the reference")
        }
    }

    /// Prefill of a prompt equals feeding it one token at a time.
    func testPrefillEqualsIncrementalDecode() throws {
        let (_, prompts) = try Self.loadFixture()
        let m = try model(.f32)
        let p = prompts[1]
        let a = try m.makeCache(capacity: 64)
        let b = try m.makeCache(capacity: 64)
        let full = try m.forward(p.ids, cache: a, allLogits: true)
        let V = m.config.vocab
        for (t, id) in p.ids.enumerated() {
            let step = try m.forward([id], cache: b)
            let ref = full[(t * V)..<((t + 1) * V)]
            let range = ref.max()! - ref.min()!
            let diff = zip(step, ref).map { abs($0 - $1) }.max()!
            // Same weights, different summation order in attention only.
            XCTAssertLessThanOrEqual(diff, 1e-4 * range, "position \(t)")
        }
    }

    /// Continuous batching: sequences at different stages (a chunked prefill, decode steps, a new
    /// prompt) run through one `forward(batch:)` per step give exactly the logits each gets alone
    /// with the same chunks (tolerance 0): the quantized row kernels run each row with the same
    /// arithmetic whatever the number of rows, for int8 and for f32 activations. (Dense f32
    /// weights go to OpenBLAS sgemm for several rows, which does not promise that.)
    func testBatchedStepEqualsOneSequenceAtATime() throws {
        let (_, prompts) = try Self.loadFixture()
        for path in [Path.nativeInt8, .nativeExact] {
            let m = try model(path)
            let a = prompts[0].ids
            let b = prompts[1].ids
            let c = prompts[2].ids
            let k = b.count / 2
            // one step per row: which chunk of which sequence runs
            let steps: [[(Int, [Int])]] = [
                [(0, a), (1, Array(b[..<k]))],
                [(0, [17]), (1, Array(b[k...])), (2, c)],
                [(0, [260]), (1, [17]), (2, [1000])],
                [(1, [42]), (2, [7])],
            ]
            let batched = try (0..<3).map { _ in try m.makeCache(capacity: 64) }
            let alone = try (0..<3).map { _ in try m.makeCache(capacity: 64) }
            for (n, step) in steps.enumerated() {
                let got = try m.forward(batch: step.map { (tokens: $0.1, cache: batched[$0.0] as any KVCache) })
                for (i, (seq, tokens)) in step.enumerated() {
                    let ref = try m.forward(tokens, cache: alone[seq])
                    XCTAssertEqual(got[i], ref, "\(path) step \(n) sequence \(seq)")
                }
            }
            for i in 0..<3 { XCTAssertEqual(batched[i].length, alone[i].length) }
            let x = try m.makeCache(capacity: 4)
            assertThrowsEngineError(isInvalidArgument, "one cache twice") {
                _ = try m.forward(batch: [(tokens: [1], cache: x), (tokens: [2], cache: x)])
            }
            assertThrowsEngineError(isInvalidArgument, "beyond the context") {
                _ = try m.forward(batch: [(tokens: [1, 2, 3, 4, 5], cache: x)])
            }
            XCTAssertEqual(x.length, 0)
        }
    }

    func testBadInput() throws {
        let m = try model(.nativeInt8)
        let cache = try m.makeCache(capacity: 8)
        assertThrowsEngineError(isInvalidArgument, "token out of range") { _ = try m.forward([49152], cache: cache) }
        assertThrowsEngineError(isInvalidArgument, "negative token") { _ = try m.forward([-1], cache: cache) }
        assertThrowsEngineError(isInvalidArgument, "prompt longer than the context") {
            _ = try m.forward(Array(repeating: 1, count: 9), cache: cache)
        }
        assertThrowsEngineError(isInvalidArgument, "empty") { _ = try m.forward([], cache: cache) }
        XCTAssertEqual(cache.length, 0, "a refused call leaves the cache unchanged")
    }
}
