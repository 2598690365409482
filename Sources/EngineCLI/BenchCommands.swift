import ArgumentParser
import Engine
import EngineTools
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks (release builds only).",
        subcommands: [BenchKernels.self, BenchModels.self, BenchEncryption.self, BenchANN.self, BenchKV.self])
}

struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract:
            """
            Kernel throughput against this machine's stream-read bandwidth and sgemm peak, measured in the same \
            run; prints a Markdown table.
            """
    )
    @Flag(help: "Smaller buffers and fewer repetitions (a smoke run, not for quoting).") var quick = false

    func validate() throws {
        try checkEnvironment()
    }

    func run() throws {
        warnIfDebug("bench kernels")
        configureThreads()
        let rows = try KernelBenchmarks.run(quick: quick) { note("bench: \($0)...") }
        print(KernelBenchmarks.markdown(rows))
    }
}

struct BenchModels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract:
            """
            SmolLM2 prefill/decode tokens/s and MiniLM sentences/s (medians); prints JSON lines for \
            scripts/bench_models.py.
            """
    )
    @Option(help: "Threads to measure (comma-separated).") var threads = "1,2"
    @Option(parsing: .unconditional, help: "Prompt tokens for prefill.") var promptTokens = 128
    @Option(parsing: .unconditional, help: "Tokens to decode.") var decodeTokens = 64
    @Option(parsing: .unconditional, help: "Repetitions (median reported).") var reps = 5
    @Option(help: "Weights: native (quantized) or f32.") var weights: WeightFormat = .native
    @Option(
        help:
            """
            Sequences decoded together (comma-separated): aggregate decode tokens/s of one \
            forward(batch:) step per token, as engine serve's continuous batching runs them.
            """)
    var batch = "1"

    func validate() throws {
        try checkEnvironment()
        _ = try checkedList(threads, 1...Limits.threads, "--threads")
        _ = try checkedList(batch, 1...256, "--batch")
        try checkRange(promptTokens, 1...8192, "--prompt-tokens")
        try checkRange(decodeTokens, 1...8192, "--decode-tokens")
        try checkRange(reps, 1...1000, "--reps")
    }

    func run() throws {
        let counts = threads.split(separator: ",").compactMap { Int($0) }
        let sentences = (0..<64).map {
            "Sentence number \($0) is about an ordinary everyday topic such as weather, food or travel."
        }
        // the f32 product limit of one core, for MiniLM's ceiling (its batches are ~99% products)
        let sgemmLimit = KernelBenchmarks.sgemmLimit()
        for t in counts {
            configureThreads(t)
            let k = try Kernels.selected(threads: t)
            let m = try LlamaModel(path: DefaultModels.smolLM2, format: weights, kernels: k)
            let prompt = (0..<promptTokens).map { 100 + ($0 * 37) % 40000 }
            var pre: [Double] = []
            var dec: [Double] = []
            for _ in 0..<reps {
                let cache = try m.makeCache(capacity: promptTokens + decodeTokens + 1)
                var clock = Stopwatch()
                var logits = try m.forward(prompt, cache: cache)
                pre.append(Double(promptTokens) / clock.lap())
                for _ in 0..<decodeTokens {
                    let next = logits.indices.max { logits[$0] < logits[$1] }!
                    logits = try m.forward([next], cache: cache)
                }
                dec.append(Double(decodeTokens) / clock.lap())
            }
            print(
                #"{"engine": "engine", "model": "smollm2", "weights": "\#(weights.rawValue)", "threads": \#(t), "#
                    + #""prefill_tps": \#(median(pre)), "decode_tps": \#(median(dec))}"#)
            for b in batch.split(separator: ",").compactMap({ Int($0) }) where b > 1 {
                var agg: [Double] = []
                for _ in 0..<reps {
                    let caches = try (0..<b).map { _ in try m.makeCache(capacity: 32 + decodeTokens + 1) }
                    // different short prompts per sequence, then greedy decode steps for all at once
                    var logits = try m.forward(
                        batch: (0..<b).map { i in
                            (tokens: (0..<32).map { 100 + (i * 977 + $0 * 37) % 40000 }, cache: caches[i])
                        })
                    var clock = Stopwatch()
                    for _ in 0..<decodeTokens {
                        let next = logits.map { l in l.indices.max { l[$0] < l[$1] }! }
                        logits = try m.forward(batch: (0..<b).map { (tokens: [next[$0]], cache: caches[$0]) })
                    }
                    agg.append(Double(b * decodeTokens) / clock.lap())
                }
                print(
                    #"{"engine": "engine", "model": "smollm2", "threads": \#(t), "batch": \#(b), "#
                        + #""aggregate_decode_tps": \#(median(agg))}"#)
            }
            let bert = try BertModel(directory: DefaultModels.miniLM, kernels: k)
            var b1: [Double] = []
            var b32: [Double] = []
            for _ in 0..<reps {
                var clock = Stopwatch()
                for x in sentences.prefix(16) { _ = try bert.embed(x) }
                b1.append(16 / clock.lap())
                _ = try bert.embed(Array(sentences.prefix(32)), batch: 32)
                b32.append(32 / clock.lap())
            }
            // multiply-adds x 2 of batch 32: the six products per token, QK^T and PV per sequence
            let c = bert.config
            let lengths = try sentences.prefix(32).map { try bert.tokenizer.encode($0).count }
            let perToken = 2 * (4 * c.hiddenSize * c.hiddenSize + 2 * c.hiddenSize * c.intermediateSize)
            let flops = Double(
                c.numHiddenLayers * lengths.reduce(0) { $0 + $1 * perToken + 4 * $1 * $1 * c.hiddenSize })
            let ceiling = sgemmLimit * 1e9 * Double(t) / (flops / 32)
            print(
                #"{"engine": "engine", "model": "minilm", "threads": \#(t), "#
                    + #""batch1_sps": \#(median(b1)), "batch32_sps": \#(median(b32)), "#
                    + #""batch32_gflop": \#(flops / 1e9), "sgemm_limit_gflops": \#(sgemmLimit), "#
                    + #""batch32_ceiling_sps": \#(ceiling)}"#)
        }
    }
}

struct BenchANN: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ann",
        abstract: "Recall@1/@10, QPS, mean and p99 latency, RAM and reads per query of an index over a sweep of nprobe."
    )
    @Option(help: "Index directory.") var index: String
    @Option(help: "Query vectors.") var queries: String
    @Option(help: "Ground truth .ivecs (row indices of the base file, as `engine index groundtruth` writes).") var gt:
        String
    @Option(help: "nprobe values (comma-separated).") var nprobe = "1,2,4,8,16,32,64,128"
    @Option(
        name: .customLong("target-recall"),
        help: "Target recalls (comma-separated) run after the nprobe values, through the index's calibration table.")
    var targetRecall = ""
    @Option(parsing: .unconditional, help: "Search threads (queries split across them).") var threads = 1
    @Option(parsing: .unconditional, help: "Queries to run (0: all).") var limit = 0
    @Option(
        help:
            """
            Posting-list reads: mapped (mmap + madvise, default), pread (one read per list), or uring (one \
            io_uring batch per query; pread where unavailable).
            """
    ) var io: IndexIO = .mapped
    @Option(parsing: .unconditional, help: "PQ indexes: candidates re-ranked with full vectors.") var rerank = 100
    @Option(name: .customLong("coarse-probe"), help: "Coarse clusters whose heads are ranked (0: max(4, nprobe/4)).")
    var coarseProbe = 0
    @Flag(
        name: .customLong("no-warmup"),
        help:
            """
            Skip the untimed pass over the queries at the largest nprobe (which verifies list checksums once \
            and warms the page cache, as a running server would be).
            """
    ) var noWarmup = false

    func validate() throws {
        try checkEnvironment()
        _ = try checkedList(nprobe, 1...(1 << 20), "--nprobe")
        for t in targetRecall.split(separator: ",") {
            guard let v = Double(t), v.isFinite, (0...1).contains(v) else {
                throw ValidationError("--target-recall: \(t) is not a recall in 0...1")
            }
        }
        try checkThreads(threads)
        try checkRange(limit, 0...Int(Int32.max), "--limit")
        try checkRange(rerank, 1...Limits.neighbors, "--rerank")
        try checkRange(coarseProbe, 0...(1 << 20), "--coarse-probe")
    }

    func run() throws {
        warnIfDebug("bench ann")
        let idx = try HybridIndex(directory: index, io: io, kernels: Kernels.selected(threads: 1))
        let (q, d) = try VectorFile.read(path: queries)
        let (g, gk) = try VectorFile.readIvecs(path: gt)
        try EngineError.require(d == idx.dim, "queries are \(d)-d, the index holds \(idx.dim)-d vectors")
        let m = limit > 0 ? min(limit, q.count / d) : q.count / d
        try EngineError.require(g.count / gk >= m, "ground truth has \(g.count / gk) rows for \(m) queries")
        print("index: \(IndexStats.describe(idx).replacingOccurrences(of: "\n", with: "; ")); reads: \(idx.io)")
        let targets = targetRecall.split(separator: ",").compactMap { Double($0) }
        if !targets.isEmpty && idx.calibration == nil {
            throw ValidationError("--target-recall: the index has no calibration table")
        }
        var settings = nprobe.split(separator: ",").compactMap { Int($0) }.map {
            ("\($0)", HybridSearchParameters(nprobe: $0))
        }
        for t in targets {
            let p = try idx.resolved(HybridSearchParameters(targetRecall: t))
            settings.append(("target \(fixed(t, 3)) -> \(fixed(Double(p.nprobe) + p.extraListFraction, 2))", p))
        }
        if !noWarmup, let most = settings.map({ $0.1.nprobe + ($0.1.extraListFraction > 0 ? 1 : 0) }).max() {
            for i in 0..<m {
                _ = try idx.search(
                    Array(q[(i * d)..<((i + 1) * d)]), k: 10, parameters: HybridSearchParameters(nprobe: most))
            }
        }
        let columns = [
            "nprobe", "recall@1", "recall@10", "QPS (\(threads) thr)", "mean ms", "p99 ms", "lists/query",
            "KiB read/query", "scored/query",
        ]
        print(MarkdownTable.line(columns))
        print(MarkdownTable.rule(columns.count))
        for (label, base) in settings {
            let res = QueryResults(m)
            let wallClock = Stopwatch()
            let nthreads = threads
            DispatchQueue.concurrentPerform(iterations: nthreads) { t in
                var i = t
                while i < m {
                    let clock = Stopwatch()
                    do {
                        var sp = base
                        sp.rerank = rerank
                        sp.coarseProbe = coarseProbe
                        let r = try idx.search(Array(q[(i * d)..<((i + 1) * d)]), k: 10, parameters: sp)
                        res.lat[i] = clock.milliseconds
                        let truth = Set(g[(i * gk)..<(i * gk + min(10, gk))].map { UInt64($0) })
                        res.hits10[i] = r.neighbors.prefix(10).filter { truth.contains($0.id) }.count
                        res.hits1[i] = r.neighbors.first.map { UInt64(g[i * gk]) == $0.id } == true ? 1 : 0
                        res.lists[i] = r.cost.listsRead
                        res.bytes[i] = r.cost.bytesRead
                        res.scored[i] = r.cost.candidatesScored
                    } catch { res.fail(error) }
                    i += nthreads
                }
            }
            let failure = res.failure
            let lat = Array(UnsafeBufferPointer(start: res.lat, count: m))
            let hits1 = Array(UnsafeBufferPointer(start: res.hits1, count: m))
            let hits10 = Array(UnsafeBufferPointer(start: res.hits10, count: m))
            let lists = Array(UnsafeBufferPointer(start: res.lists, count: m))
            let bytes = Array(UnsafeBufferPointer(start: res.bytes, count: m))
            let scored = Array(UnsafeBufferPointer(start: res.scored, count: m))
            if let failure { throw failure }
            let wall = wallClock.seconds
            let sorted = lat.sorted()
            func mean(_ v: [Int]) -> Double { Double(v.reduce(0, +)) / Double(m) }
            print(
                MarkdownTable.line([
                    label, fixed(mean(hits1), 4), fixed(mean(hits10) / 10, 4), fixed(Double(m) / wall, 0),
                    fixed(lat.reduce(0, +) / Double(m), 3), fixed(sorted[min(m - 1, Int(Double(m) * 0.99))], 3),
                    fixed(mean(lists), 1), fixed(mean(bytes) / 1024, 1), fixed(mean(scored), 0),
                ]))
        }
    }
}

/// Per-query results written by concurrent searches, each to its own slot.
final class QueryResults: @unchecked Sendable {
    let lat: UnsafeMutablePointer<Double>, hits1, hits10, lists, bytes, scored: UnsafeMutablePointer<Int>
    private let lock = NSLock()
    private(set) var failure: Error?
    init(_ m: Int) {
        lat = .allocate(capacity: m)
        lat.initialize(repeating: 0, count: m)
        func ints() -> UnsafeMutablePointer<Int> {
            let p = UnsafeMutablePointer<Int>.allocate(capacity: m)
            p.initialize(repeating: 0, count: m)
            return p
        }
        hits1 = ints()
        hits10 = ints()
        lists = ints()
        bytes = ints()
        scored = ints()
    }
    deinit {
        lat.deallocate()
        hits1.deallocate()
        hits10.deallocate()
        lists.deallocate()
        bytes.deallocate()
        scored.deallocate()
    }
    func fail(_ e: Error) {
        lock.lock()
        failure = e
        lock.unlock()
    }
}
