import Foundation
import XCTest

import Engine

#if canImport(Glibc)
    import Glibc
#endif

/// The disk-offloaded KV cache (`OffloadKVCache`) against its documented behaviour, restated here:
/// which positions a query sees (sink, recent window, the stored blocks whose sign-bit summaries
/// are nearest its own sign bits), attention over exactly those in double, the block file's
/// checksums, and the options it refuses.
final class KVOffloadTests: XCTestCase {
    static let S = 64
    static let blockTokens = 64

    /// Appends positions in steps and attends each step's rows (layer 0 of a one-layer cache).
    /// Positions from `from` on; returns every row's output (rows before `from` stay zero).
    func drive(
        _ cache: OffloadKVCache, shape: AttentionShape, q: [Float], k: [Float], v: [Float], steps: [Int],
        from: Int = 0, kernels kern: Kernels
    ) throws -> [Float] {
        let (h, kvh, d) = (shape.heads, shape.kvHeads, shape.headDim)
        let T = from + steps.reduce(0, +)
        var out = [Float](repeating: 0, count: T * h * d)
        var pos = from
        for n in steps {
            try cache.append(
                layer: 0, keys: Array(k[(pos * kvh * d)..<((pos + n) * kvh * d)]),
                values: Array(v[(pos * kvh * d)..<((pos + n) * kvh * d)]), at: pos, count: n)
            try q.withUnsafeBufferPointer { qp in
                try out.withUnsafeMutableBufferPointer { op in
                    try cache.attend(
                        layer: 0, shape: shape, score: .softmax,
                        q: UnsafeBufferPointer(rebasing: qp[(pos * h * d)..<((pos + n) * h * d)]), start: pos,
                        count: n, into: UnsafeMutableBufferPointer(rebasing: op[(pos * h * d)..<((pos + n) * h * d)]),
                        kernels: kern)
                }
            }
            try cache.advance(to: pos + n)
            pos += n
        }
        return out
    }

    /// The positions a query of `filled` positions sees, restated from docs/kv-cache.md: the sink,
    /// the window [w, filled) with w = 64 + 64 ceil((filled - 64 - W) / 64), and the `blocks`
    /// stored blocks of [64, w) with the highest estimate of sum_j q_j . (block mean key - mean
    /// key of the first stored block), both sides written as three residual sign codes with
    /// scales (the dot of two sign vectors is d - 2 x their mismatches); ties go to the earlier
    /// block. Keys are compared as stored (f16).
    static func visiblePositions(
        filled: Int, window W: Int, blocks: Int, head: Int, queries: [Float], keys k16: [Float], kvHeads: Int, d: Int
    ) -> [Int] {
        let (S, B) = (Self.S, Self.blockTokens)
        let over = filled - S - W
        let w = over <= 0 ? S : S + B * ((over + B - 1) / B)
        let stored = (w - S) / B
        var chosen = Array(0..<stored)
        if stored > blocks {
            func mean(_ b: Int) -> [Float] {
                (0..<d).map { c in
                    var s = 0.0
                    for t in 0..<B { s += Double(k16[((S + b * B + t) * kvHeads + head) * d + c]) }
                    return Float(s / Double(B))
                }
            }
            let centre = mean(0)
            let g = queries.count / d
            let L = 3
            // residual binarization: x ~ sum_k scale_k sign_k, scale_k = mean |r_k|
            func binarize(_ x: [Float]) -> [(scale: Float, signs: [Bool])] {
                var r = x
                var out: [(Float, [Bool])] = []
                for _ in 0..<L {
                    let scale = Float(r.reduce(0.0) { $0 + Double(abs($1)) } / Double(r.count))
                    let signs = r.map { $0 > 0 }
                    for c in 0..<r.count { r[c] += signs[c] ? -scale : scale }
                    out.append((scale, signs))
                }
                return out
            }
            let qcodes = (0..<g).map { j in binarize(Array(queries[(j * d)..<((j + 1) * d)])) }
            let est = (0..<stored).map { b -> Float in
                let m = mean(b)
                let u = binarize((0..<d).map { m[$0] - centre[$0] })
                var t: Float = 0
                for j in 0..<g {
                    for (a, tq) in qcodes[j] {
                        for (sc, su) in u {
                            let mismatches = (0..<d).filter { tq[$0] != su[$0] }.count
                            t += a * sc * (Float(d) - 2 * Float(mismatches))
                        }
                    }
                }
                return t
            }
            let dist = est.map { -$0 }
            chosen = Array((0..<stored).sorted { dist[$0] != dist[$1] ? dist[$0] < dist[$1] : $0 < $1 }.prefix(blocks))
        }
        return Array(0..<min(S, filled)) + chosen.flatMap { (S + $0 * B)..<(S + ($0 + 1) * B) }
            + Array(min(max(w, S), filled)..<filled)
    }

    /// Softmax attention of one row's heads over the listed positions, in double.
    static func attention(
        q: ArraySlice<Float>, k: [Float], v: [Float], positions: (Int) -> [Int], heads: Int, kvHeads: Int, d: Int
    ) -> [Double] {
        let g = heads / kvHeads
        let scale = 1 / Double(d).squareRoot()
        var out = [Double](repeating: 0, count: heads * d)
        let q0 = q.startIndex
        for j in 0..<heads {
            let kh = j / g
            let pos = positions(kh)
            let s = pos.map { t in
                (0..<d).reduce(0.0) { $0 + Double(q[q0 + j * d + $1]) * Double(k[(t * kvHeads + kh) * d + $1]) } * scale
            }
            let m = s.max()!
            let w = s.map { exp($0 - m) }
            let z = w.reduce(0, +)
            for (i, t) in pos.enumerated() {
                for c in 0..<d { out[j * d + c] += w[i] / z * Double(v[(t * kvHeads + kh) * d + c]) }
            }
        }
        return out
    }

    /// Keys with a direction per 64-token stretch (so blocks differ and selection matters).
    static func data(T: Int, heads: Int, kvHeads: Int, d: Int, seed: UInt64) -> (q: [Float], k: [Float], v: [Float]) {
        var rng = SeededRandom(seed: seed)
        let q = rng.gaussian(T * heads * d)
        let dirs = rng.gaussian((T / 64 + 1) * kvHeads * d)
        var k = rng.gaussian(T * kvHeads * d).map { $0 * 0.5 }
        for t in 0..<T {
            for h in 0..<kvHeads {
                for c in 0..<d { k[(t * kvHeads + h) * d + c] += 1.5 * dirs[((t / 64) * kvHeads + h) * d + c] }
            }
        }
        return (q, k, rng.uniform(T * kvHeads * d))
    }

    /// Every row, token by token and in prompt steps, at every ISA level, equals attention in
    /// double over the restated visible positions (the block file is read back for most of them).
    /// Bound: AttentionTests' f32 bound for the attended count, 16x instead of 8x for the merge of
    /// up to blocks + 2 partial states (each rescaled once more).
    func testAttendsExactlyTheSelectedBlocks() throws {
        let dir = NSTemporaryDirectory()
        for (d, h, kvh, T, blocks) in [(64, 4, 2, 560, 2), (128, 3, 1, 520, 3)] {
            let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
            let (q, k, v) = Self.data(T: T, heads: h, kvHeads: kvh, d: d, seed: UInt64(d + T))
            let k16 = k.map { Float(Float16($0)) }
            let v16 = v.map { Float(Float16($0)) }
            let budget = try OffloadKVCache.minimumBudget(
                layers: 1, kvHeads: kvh, headDim: d, capacity: T, type: .f16, blocks: blocks)
            var expect = [Double](repeating: 0, count: T * h * d)
            var selectiveRows = 0
            for i in 0..<T {
                let g = h / kvh
                let row = q[(i * h * d)..<((i + 1) * h * d)]
                let r = Self.attention(
                    q: row, k: k16, v: v16,
                    positions: { kh in
                        Self.visiblePositions(
                            filled: i + 1, window: OffloadKVCache.minimumWindow, blocks: blocks, head: kh,
                            queries: Array(q[(i * h * d + kh * g * d)..<(i * h * d + (kh + 1) * g * d)]), keys: k16,
                            kvHeads: kvh, d: d)
                    }, heads: h, kvHeads: kvh, d: d)
                for j in 0..<(h * d) { expect[i * h * d + j] = r[j] }
                let over = i + 1 - Self.S - OffloadKVCache.minimumWindow
                if over > 0 && (over + Self.blockTokens - 1) / Self.blockTokens > blocks { selectiveRows += 1 }
            }
            XCTAssertGreaterThan(selectiveRows, 100, "the test must exercise selection among more blocks than read")
            let attended = Self.S + OffloadKVCache.minimumWindow + (blocks + 1) * Self.blockTokens
            let bound = 16 * Double(attended + d + 4) * u32
            var outputs: [[Float]] = []
            for isa in allLevels {
                for steps in [
                    [Int](repeating: 1, count: T), [100, 1, 1, 200, 1] + [Int](repeating: 1, count: T - 303),
                ] {
                    let kern = try kernels(isa, threads: 2)
                    let cache = try OffloadKVCache(
                        layers: 1, kvHeads: kvh, headDim: d, capacity: T, type: .f16,
                        offload: KVOffload(budgetBytes: budget, directory: dir, blocks: blocks), kernels: kern)
                    XCTAssertEqual(cache.windowTokens, OffloadKVCache.minimumWindow)
                    let out = try drive(cache, shape: shape, q: q, k: k, v: v, steps: steps, kernels: kern)
                    let err = zip(out, expect).map { abs(Double($0) - $1) }.max()!
                    XCTAssertLessThanOrEqual(err, bound, "d=\(d) \(isa) steps \(steps.count)")
                    XCTAssertGreaterThan(cache.bytesRead, 0, "blocks must come back from the file")
                    XCTAssertLessThanOrEqual(cache.memoryBytes, budget, "between steps the cache stays in its budget")
                    if steps.count == T {
                        XCTAssertLessThanOrEqual(cache.peakMemoryBytes, budget, "token by token it never exceeds it")
                    }
                    outputs.append(out)
                }
                // the prompt processed in steps sees exactly what the token-by-token pass sees
                XCTAssertEqual(outputs[outputs.count - 1], outputs[outputs.count - 2], "\(isa) steps vs tokens")
            }
        }
    }

    /// A cache whose budget holds every position never writes a block and equals the per-token
    /// f16 cache up to the rounding of merging the sink's and the window's partial states.
    func testRoomForEverythingMatchesTheRowCache() throws {
        let (d, h, kvh, T) = (64, 4, 2, 300)
        let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
        let (q, k, v) = Self.data(T: T, heads: h, kvHeads: kvh, d: d, seed: 9)
        let kern = try kernels(ISA.available.last!, threads: 1)
        let cache = try OffloadKVCache(
            layers: 1, kvHeads: kvh, headDim: d, capacity: T, type: .f16,
            offload: KVOffload(budgetBytes: 1 << 30, directory: NSTemporaryDirectory()), kernels: kern)
        XCTAssertEqual(cache.windowTokens, T)
        let out = try drive(cache, shape: shape, q: q, k: k, v: v, steps: [Int](repeating: 1, count: T), kernels: kern)
        let rows = try RowKVCache(layers: 1, kvHeads: kvh, headDim: d, capacity: T, type: .f16, kernels: kern)
        var ref = [Float](repeating: 0, count: T * h * d)
        for t in 0..<T {
            try rows.append(
                layer: 0, keys: Array(k[(t * kvh * d)..<((t + 1) * kvh * d)]),
                values: Array(v[(t * kvh * d)..<((t + 1) * kvh * d)]), at: t, count: 1)
            try q.withUnsafeBufferPointer { qp in
                try ref.withUnsafeMutableBufferPointer { op in
                    try rows.attend(
                        layer: 0, shape: shape, score: .softmax,
                        q: UnsafeBufferPointer(rebasing: qp[(t * h * d)..<((t + 1) * h * d)]), start: t, count: 1,
                        into: UnsafeMutableBufferPointer(rebasing: op[(t * h * d)..<((t + 1) * h * d)]), kernels: kern)
                }
            }
            try rows.advance(to: t + 1)
        }
        let err = zip(out, ref).map { abs($0 - $1) }.max()!
        XCTAssertLessThanOrEqual(Double(err), 16 * Double(T + d + 4) * u32)
        XCTAssertEqual(cache.bytesRead, 0)
    }

    /// A block file modified or truncated behind the cache's back is detected when a block is read
    /// back (its CRC-32C, or the file's end): a clear invalid-file error, never a wrong answer.
    func testCorruptOrTruncatedBlockFileIsDetected() throws {
        let (d, h, kvh, T) = (64, 2, 1, 500)
        let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
        let (q, k, v) = Self.data(T: T, heads: h, kvHeads: kvh, d: d, seed: 3)
        let kern = try kernels(.scalar)
        for damage in ["flip", "truncate"] {
            let budget = try OffloadKVCache.minimumBudget(
                layers: 1, kvHeads: kvh, headDim: d, capacity: T, type: .q8_0, blocks: 2)
            let cache = try OffloadKVCache(
                layers: 1, kvHeads: kvh, headDim: d, capacity: T, type: .q8_0,
                offload: KVOffload(budgetBytes: budget, directory: NSTemporaryDirectory(), blocks: 2), kernels: kern)
            _ = try drive(
                cache, shape: shape, q: q, k: k, v: v, steps: [Int](repeating: 1, count: T - 1), kernels: kern)
            // the file is unlinked: reach it through the process's descriptor table
            XCTAssertFalse(FileManager.default.fileExists(atPath: cache.path))
            let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
            let link = fds.first {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0))
                    == cache.path + " (deleted)"
            }
            let fd = open("/proc/self/fd/" + (link ?? "none"), O_RDWR)
            XCTAssertGreaterThanOrEqual(fd, 0)
            if damage == "flip" {
                // one byte of every record's first page
                var st = stat()
                fstat(fd, &st)
                var off = 100
                while off < Int(st.st_size) {
                    var b: UInt8 = 0
                    XCTAssertEqual(pread(fd, &b, 1, off_t(off)), 1)
                    b ^= 0x40
                    XCTAssertEqual(pwrite(fd, &b, 1, off_t(off)), 1)
                    off += 4096
                }
            } else {
                XCTAssertEqual(ftruncate(fd, 4096), 0)
            }
            close(fd)
            assertThrowsEngineError(isInvalidFile, damage) {
                _ = try self.drive(cache, shape: shape, q: q, k: k, v: v, steps: [1], from: T - 1, kernels: kern)
            }
        }
    }

    /// Options the cache refuses, each with a clear error before anything is written.
    func testBadOffloadOptionsThrow() throws {
        let kern = try kernels(.scalar)
        let dir = NSTemporaryDirectory()
        func make(_ o: KVOffload, type: RowType = .f16, capacity: Int = 4096) throws {
            _ = try OffloadKVCache(
                layers: 30, kvHeads: 3, headDim: 64, capacity: capacity, type: type, offload: o, kernels: kern)
        }
        let minimum = try OffloadKVCache.minimumBudget(
            layers: 30, kvHeads: 3, headDim: 64, capacity: 4096, type: .f16, blocks: 8)
        XCTAssertNoThrow(try make(KVOffload(budgetBytes: minimum, directory: dir)))
        assertThrowsEngineError(isInvalidArgument, "budget below one window") {
            try make(KVOffload(budgetBytes: minimum - 1, directory: dir))
        }
        assertThrowsEngineError(isInvalidArgument, "zero blocks") {
            try make(KVOffload(budgetBytes: 1 << 30, directory: dir, blocks: 0))
        }
        assertThrowsEngineError(isInvalidArgument, "huge blocks") {
            try make(KVOffload(budgetBytes: 1 << 30, directory: dir, blocks: Int.max))
        }
        assertThrowsEngineError({ if case .io = $0 { return true } else { return false } }, "missing directory") {
            try make(KVOffload(budgetBytes: 1 << 30, directory: dir + "/no-such-dir-\(getpid())"))
        }
        // /proc refuses new files even to root
        assertThrowsEngineError({ if case .io = $0 { return true } else { return false } }, "unwritable directory") {
            try make(KVOffload(budgetBytes: 1 << 30, directory: "/proc"))
        }
        assertThrowsEngineError(isInvalidArgument, "KIVI types are not offloaded") {
            try KVCacheConfig(type: .q4, offload: KVOffload(budgetBytes: 1 << 30, directory: dir))
                .validate(context: 4096, headDim: 64)
        }
        // nothing left behind by the caches above
        let left = try FileManager.default.contentsOfDirectory(atPath: dir).filter {
            $0.hasPrefix("engine-kv-\(getpid())-")
        }
        XCTAssertEqual(left, [])
        // trimming into the stored part is refused; within the window it works
        let budget = try OffloadKVCache.minimumBudget(
            layers: 1, kvHeads: 1, headDim: 32, capacity: 400, type: .f32, blocks: 1)
        let c = try OffloadKVCache(
            layers: 1, kvHeads: 1, headDim: 32, capacity: 400, type: .f32,
            offload: KVOffload(budgetBytes: budget, directory: dir, blocks: 1), kernels: kern)
        let x = [Float](repeating: 0.25, count: 390 * 32)
        try c.append(layer: 0, keys: x, values: x, at: 0, count: 390)
        try c.advance(to: 390)
        XCTAssertGreaterThan(c.windowStart, 64)
        assertThrowsEngineError(isInvalidArgument, "trim below the window") { try c.trim(to: 100) }
        XCTAssertNoThrow(try c.trim(to: 389))
        assertThrowsEngineError(isInvalidArgument, "append over stored blocks") {
            try c.append(layer: 0, keys: x, values: x, at: 70, count: 1)
        }
    }
}

/// The offloaded cache under the real SmolLM2 on real prose: the first 2,048 tokens of Debian's
/// GPL-3 text as one chunk (the second half scored), exact activations.
final class KVOffloadModelTests: XCTestCase {
    func testRealModelWithinItsBudget() throws {
        let m =
            try PerplexityTests.exactModel
            ?? LlamaModel(path: TestModels.smolLM2, format: .native, activations: .exact, kernels: Kernels.selected())
        let c = m.config
        let text = try String(contentsOfFile: "/usr/share/common-licenses/GPL-3", encoding: .utf8)
        let tok = try BPETokenizer(gguf: GGUFFile(path: TestModels.smolLM2))
        let ctx = 2048
        let ids = Array(try tok.encode(text).prefix(ctx))
        XCTAssertEqual(ids.count, ctx)
        func run(_ kv: KVCacheConfig, caches: inout [OffloadKVCache]) throws -> PerplexityResult {
            var made: [OffloadKVCache] = []
            let r = try evaluatePerplexity(
                tokens: ids, context: ctx, vocab: c.vocab, bos: tok.addsBOS ? tok.bosID : nil, stepTokens: 64,
                makeCache: {
                    let cache = try m.makeCache(capacity: ctx, config: kv)
                    if let o = cache as? OffloadKVCache { made.append(o) }
                    return cache
                }, step: { ids, cache in try m.forward(ids, cache: cache, allLogits: true) })
            caches += made
            return r
        }
        var caches: [OffloadKVCache] = []
        let full = try run(KVCacheConfig(type: .f16), caches: &caches)
        let fullBytes = c.layers * KVCacheType.f16.bytesPerToken(kvHeads: c.kvHeads, headDim: c.headDim) * ctx
        func agreement(_ r: PerplexityResult) -> Double {
            Double(zip(r.argmax, full.argmax).filter { $0 == $1 }.count) / Double(full.argmax.count)
        }
        // Every stored block selected (the minimum budget for 32 blocks per step: at most 29 are
        // stored): full attention, merged from partial states. NLL moves by rounding only: the
        // merge changes f32 sums by a few ulps per layer (1e-4 relative leaves ~10x headroom over
        // the measured 1e-5); greedy choices may flip only at near-ties (>= 99% agree).
        let all = try OffloadKVCache.minimumBudget(
            layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, capacity: ctx, type: .f16, blocks: 32)
        let dir = NSTemporaryDirectory()
        let exact = try run(
            KVCacheConfig(type: .f16, offload: KVOffload(budgetBytes: all, directory: dir, blocks: 32)), caches: &caches
        )
        XCTAssertEqual(exact.chunkNLL[0], full.chunkNLL[0], accuracy: full.chunkNLL[0] * 1e-4)
        XCTAssertGreaterThanOrEqual(agreement(exact), 0.99)
        XCTAssertGreaterThan(caches.last!.bytesRead, 0)
        // A quarter of the full cache's bytes, 8 blocks per step: the goal (+5% perplexity
        // over full attention) as the bound; measured +0.9% at 2,048 (docs/benchmarks.md).
        let quarter = try run(
            KVCacheConfig(type: .f16, offload: KVOffload(budgetBytes: fullBytes / 4, directory: dir)), caches: &caches)
        let o = caches.last!
        XCTAssertLessThan(o.windowTokens, ctx / 4)
        XCTAssertLessThanOrEqual(o.peakMemoryBytes, fullBytes / 4, "steps of 64 fit in the budget")
        XCTAssertLessThanOrEqual(quarter.perplexity, full.perplexity * 1.05)
        XCTAssertGreaterThanOrEqual(agreement(quarter), 0.85)
        let summary = "offload: f16 \(full.perplexity), all blocks \(exact.perplexity) (top-1 \(agreement(exact))), "
        print(summary + "25% budget \(quarter.perplexity) (top-1 \(agreement(quarter)), window \(o.windowTokens))")
    }
}

extension KVOffloadModelTests {
    /// Retrieval, not recency: a pass key stated once, ~700 tokens into a ~2,100-token prompt of
    /// GPL-3 text, is asked for at the end. With 8 MiB (a window of ~230 tokens) the key's block
    /// is neither in the sink, the window, nor among the four stored blocks nearest the window, so
    /// only a summary that matches the question's queries to that block can bring it back; the
    /// full f16 cache and the offloaded one with 4 blocks per step both answer it (measured: 3
    /// blocks also do, 2 do not at this window, 1 does not with a 64-token larger one).
    func testRetrievesAFactFarOutsideTheWindow() throws {
        let gpl = try String(contentsOfFile: "/usr/share/common-licenses/GPL-3", encoding: .utf8)
        let chars = Array(gpl)
        let needle = "\n\nHere is a fact to remember: the secret pass key is 58213. Remember the number 58213.\n\n"
        let prompt =
            String(chars[0..<3000]) + needle + String(chars[3000..<9000])
            + "\n\nQuestion: what is the secret pass key? Answer: the secret pass key is"
        let gen = try TextGenerator(path: TestModels.smolLM2, kernels: Kernels.selected())
        let ids = try gen.tokenizer.encode(prompt)
        let at = try gen.tokenizer.encode(String(chars[0..<3000])).count
        var p = GenerationParameters(maxTokens: 7) // digits are single tokens
        p.kvCache = KVCacheConfig(type: .f16)
        let full = try gen.tokenizer.decode(gen.generate(prompt: prompt, parameters: p))
        XCTAssertTrue(full.contains("58213"), full)
        let budget = 8 << 20
        p.kvCache = KVCacheConfig(
            type: .f16, offload: KVOffload(budgetBytes: budget, directory: NSTemporaryDirectory(), blocks: 4))
        let c = gen.model.config
        let probe = try OffloadKVCache(
            layers: c.layers, kvHeads: c.kvHeads, headDim: c.headDim, capacity: ids.count + 4, type: .f16,
            offload: p.kvCache.offload!, kernels: Kernels.selected())
        let w = probe.windowStart(for: ids.count)
        // the key's tokens lie below the four most recent stored blocks and above the sink
        XCTAssertGreaterThan(at, 64)
        XCTAssertLessThan(at + 40, w - 4 * 64, "window starts at \(w), key at \(at) of \(ids.count)")
        let offloaded = try gen.tokenizer.decode(gen.generate(prompt: prompt, parameters: p))
        XCTAssertTrue(offloaded.contains("58213"), offloaded)
        // the whole prompt handed to the model at once: it steps the cache 64 positions at a
        // time, so the cache never holds more than its budget
        _ = try gen.model.forward(ids, cache: probe)
        XCTAssertEqual(probe.length, ids.count)
        XCTAssertLessThanOrEqual(probe.peakMemoryBytes, budget)
        XCTAssertGreaterThan(probe.bytesWritten, 0)
    }
}
