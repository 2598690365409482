import ArgumentParser
import Engine
import Foundation

struct Index: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Memory/disk hybrid vector index (SPANN-style): build, search, stats.",
        subcommands: [
            IndexBuild.self, IndexSearch.self, IndexStats.self, IndexGroundTruth.self, IndexRepair.self,
            IndexPartition.self,
        ])
}

struct IndexBuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Build an index directory from .fvecs/.bvecs/.npy/IDX vectors.")
    @Option(help: "Base vectors (.fvecs, .bvecs, .npy, or IDX such as Fashion-MNIST's train-images-idx3-ubyte.gz).")
    var input: String
    @Option(help: "Index directory to write (replaced atomically if it holds an index).") var output: String
    @Flag(help: "Replace an existing output (otherwise an existing file is never replaced).") var force = false
    @Option(help: "Metric: l2, ip or cos.") var metric: Metric = .l2
    @Option(name: .customLong("head-fraction"), parsing: .unconditional, help: "Heads (posting lists) per vector.")
    var headFraction = 0.03
    @Option(parsing: .unconditional, help: "Most lists per vector (RNG rule).") var replicas = 8
    @Option(
        name: .customLong("replica-epsilon"),
        parsing: .unconditional, help: "Replica closure: d(x,head) <= (1+eps) d(x,nearest head), squared L2.")
    var replicaEpsilon: Float = 1.0
    @Option(
        name: .customLong("rng-factor"), help: "RNG rule relaxation (reject head h if f x d(h,g) < d(x,h)); default 2.")
    var rngFactor: Float = 2.0
    @Option(name: .customLong("posting-cap"), parsing: .unconditional, help: "Longest posting list (0: 4x the mean).")
    var postingCap = 0
    @Option(
        help:
            """
            Posting payload: f16 (default), f32 (vectors), or codes re-ranked from full vectors in vectors.bin: \
            pq8 (8-bit PQ), pq4 (4-bit fast-scan PQ of the residual), binary (sign codes of the rotated residual).
            """
    ) var payload: PostingPayload = .f16
    @Option(
        name: .customLong("calibration-queries"), parsing: .unconditional,
        help: "Sample queries of the recall-to-nprobe table stored in the index (0: none).")
    var calibrationQueries = RecallCalibration.defaultQueries
    @Option(
        name: .customLong("pq-subquantizers"),
        parsing: .unconditional, help: "PQ sub-quantizers (0: pq8 dim/8, pq4 dim/2 or the next that is <= 256).")
    var pqSubquantizers = 0
    @Option(
        parsing: .unconditional,
        help: "Seed of the build's sampling and k-means (the same seed and input give the same bytes).")
    var seed: UInt64 = 1
    @Option(help: "External ids: a .npy of int64, one per input vector (default: row numbers).") var ids: String?

    func validate() throws {
        try checkEnvironment()
        try checkOutput(output, force: force, inputs: [input] + (ids.map { [$0] } ?? []))
        try checkRange(headFraction, 1e-6...1, "--head-fraction")
        try checkRange(replicas, 1...8, "--replicas")
        try checkRange(replicaEpsilon, 0...1000, "--replica-epsilon")
        try checkRange(rngFactor, 1...254, "--rng-factor")
        try checkRange(postingCap, 0...Int(Int32.max), "--posting-cap")
        try checkRange(pqSubquantizers, 0...Limits.dimension, "--pq-subquantizers")
        try checkRange(calibrationQueries, 0...100_000, "--calibration-queries")
    }

    func run() throws {
        configureThreads()
        let src = try VectorFile.source(path: input)
        var o = HybridIndexOptions()
        o.metric = metric
        o.headFraction = headFraction
        o.maxReplicas = replicas
        o.replicaEpsilon = replicaEpsilon
        o.postingCap = postingCap
        o.payload = payload
        o.rngFactor = rngFactor
        o.pqSubquantizers = pqSubquantizers
        o.seed = seed
        o.calibrationQueries = calibrationQueries
        o.progress = { note($0 + " [RSS \(Int(currentRSSMiB())) MiB]") }
        let clock = Stopwatch()
        var external: [UInt64]?
        if let ids {
            let (v, shape) = try NPY.readInt64(path: ids)
            guard shape == [src.count] else {
                throw ValidationError("--ids holds shape \(shape), the input has \(src.count) vectors")
            }
            guard v.allSatisfy({ $0 >= 0 }) else { throw ValidationError("--ids holds a negative id") }
            external = v.map { UInt64($0) }
        }
        let idx = try HybridIndex.build(
            source: src, ids: external, directory: output, options: o, kernels: Kernels.selected())
        note("built in \(clock.text), peak memory \(Int(peakRSSMiB())) MiB")
        print(IndexStats.describe(idx))
    }
}

struct IndexSearch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search", abstract: "k nearest neighbours of each query; writes ids as .ivecs.")
    @Option(help: "Index directory.") var index: String
    @Option(help: "Query vectors (.fvecs/.bvecs/.npy/IDX).") var queries: String
    @Option(parsing: .unconditional, help: "Neighbours per query.") var k = 10
    @Option(
        parsing: .unconditional,
        help: "Posting lists read per query (instead of --target-recall; default 32 where the index has no table).")
    var nprobe: Int?
    @Option(
        name: .customLong("target-recall"), parsing: .unconditional,
        help: "Recall@10 to aim for: the index's calibration table chooses nprobe (default 0.95).")
    var targetRecall: Double?
    @Option(help: "Output: .ivecs (int32 ids) or .npy (int64 ids); k per query, -1 pads when fewer were found.")
    var output: String
    @Flag(help: "Replace an existing output (otherwise an existing file is never replaced).") var force = false

    func validate() throws {
        try checkEnvironment()
        try checkOutput(output, force: force, inputs: [index, queries])
        try checkRange(k, 1...Limits.neighbors, "--k")
        if let nprobe { try checkRange(nprobe, 1...(1 << 20), "--nprobe") }
        if let targetRecall { try checkRange(targetRecall, 0...1, "--target-recall") }
        if nprobe != nil && targetRecall != nil { throw ValidationError("give --nprobe or --target-recall, not both") }
    }

    /// The search parameters the options ask for, and a note saying what nprobe they chose.
    static func parameters(nprobe: Int?, targetRecall: Double?, index idx: HybridIndex) throws -> (
        HybridSearchParameters, String
    ) {
        if let nprobe { return (HybridSearchParameters(nprobe: nprobe), "nprobe \(nprobe)") }
        guard let c = idx.calibration else {
            if let targetRecall {
                throw ValidationError(
                    "--target-recall \(targetRecall): \(idx.directory) has no calibration table (built before "
                        + "index format 2, or with --calibration-queries 0); give --nprobe")
            }
            return (HybridSearchParameters(nprobe: 32), "nprobe 32 (the index has no calibration table)")
        }
        let t = targetRecall ?? RecallCalibration.defaultTarget
        let (np, reached) = c.nprobe(forRecall: t)
        let best = c.points.last.map { "\(fixed(Double($0.recall), 3)) at nprobe \($0.nprobe)" } ?? "-"
        let how =
            reached
            ? "target recall@\(c.k) \(fixed(t, 3)): nprobe \(fixed(np, 2)) (calibrated on \(c.queries) sample queries)"
            : "target recall@\(c.k) \(fixed(t, 3)) is above the calibrated maximum \(best): nprobe \(fixed(np, 0))"
        return (HybridSearchParameters(targetRecall: t), how)
    }

    func run() throws {
        let idx = try HybridIndex(directory: index, kernels: Kernels.selected(threads: 1))
        let (params, how) = try Self.parameters(nprobe: nprobe, targetRecall: targetRecall, index: idx)
        let (q, d) = try VectorFile.read(path: queries)
        try EngineError.require(d == idx.dim, "queries are \(d)-d, the index holds \(idx.dim)-d vectors")
        // rows never wider than the index holds (a huge --k must not become a huge allocation)
        let k = min(self.k, idx.count + idx.insertedCount)
        let m = q.count / d
        try EngineError.require(m * k <= 1 << 28, "\(m) queries x k \(k) ids are more than one output should hold")
        var out = [UInt64?](repeating: nil, count: m * k)
        for i in 0..<m {
            let r = try idx.search(
                Array(q[(i * d)..<((i + 1) * d)]), k: k, parameters: params)
            for (t, h) in r.neighbors.enumerated() { out[i * k + t] = h.id }
        }
        try VectorFile.writeNeighborIDs(out, k: k, to: output)
        let capped = k < self.k ? " (k capped at the \(k) vectors the index holds)" : ""
        note("wrote \(m) x \(k) ids to \(output)\(capped); \(how)")
    }
}

struct IndexStats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats", abstract: "Sizes of an index: vectors, lists, RAM and disk bytes.")
    @Option(help: "Index directory.") var index: String
    func validate() throws {
        try checkEnvironment()
    }

    func run() throws { print(Self.describe(try HybridIndex(directory: index, kernels: Kernels.selected()))) }

    static func describe(_ i: HybridIndex) -> String {
        let raw = i.count * i.dim * 4
        let perVector = fixed(Double(i.entries) / Double(max(i.count, 1)), 2)
        let ramShare = fixed(100 * Double(i.ramBytes) / Double(raw), 1)
        return """
            index \(i.directory): \(i.count) vectors of \(i.dim) (\(i.metric), payload \(i.payload)), \
            \(i.heads) heads under \(i.coarse) coarse clusters
            entries \(i.entries) (\(perVector) per vector)
            RAM \(i.ramBytes) bytes (\(ramShare)% of the raw f32 vectors), disk \(i.diskBytes) bytes
            \(calibrationLine(i))
            """
    }
}

/// The calibration table in a line: nprobe for a few recalls.
func calibrationLine(_ i: HybridIndex) -> String {
    i.calibration.map { "calibration \($0.summary)" } ?? "calibration: none (index format 1 or --calibration-queries 0)"
}

struct IndexGroundTruth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "groundtruth", abstract: "Exact k nearest neighbours (brute force) as .ivecs.")
    @Option(help: "Base vectors.") var base: String
    @Option(help: "Query vectors.") var queries: String
    @Option(help: "Metric: l2, ip or cos.") var metric: Metric = .l2
    @Option(parsing: .unconditional, help: "Neighbours per query.") var k = 100
    @Option(help: "Output .ivecs.") var output: String
    @Flag(help: "Replace an existing output (otherwise an existing file is never replaced).") var force = false
    func validate() throws {
        try checkEnvironment()
        try checkOutput(output, force: force, inputs: [base, queries])
        try checkRange(k, 1...Limits.neighbors, "--k")
    }

    func run() throws {
        configureThreads()
        let (b, d) = try VectorFile.read(path: base)
        let (q, dq) = try VectorFile.read(path: queries)
        try EngineError.require(d == dq, "base is \(d)-d, queries \(dq)-d")
        try VectorFile.writeIvecs(
            BruteForce.search(base: b, queries: q, dim: d, k: k, metric: metric), dim: k, to: output)
        note("wrote ground truth \(q.count / d) x \(k) to \(output)")
    }
}

struct IndexRepair: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "repair",
        abstract: "Rewrite an index's delta.log keeping every record that verifies (after corruption in its middle).")
    @Option(help: "Index directory.") var index: String

    func validate() throws { try checkEnvironment() }

    func run() throws {
        let idx = try HybridIndex(directory: index, writable: true, repair: true, kernels: Kernels.selected())
        note(
            "\(index)/delta.log: \(idx.repairedBytes) corrupt bytes skipped; \(idx.insertedCount) inserted vectors "
                + "and \(idx.tombstoneCount) tombstones kept")
    }
}

struct IndexPartition: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "partition",
        abstract: "Split vectors into shards for a sharded index (whole coarse clusters per shard, a routing table).",
        discussion: """
            Writes OUTPUT/shard-K/base.npy and ids.npy per shard (build each with `engine index build \
            --input OUTPUT/shard-K/base.npy --ids OUTPUT/shard-K/ids.npy --output ...`), and \
            OUTPUT/routing.json with OUTPUT/centroids.npy: the coarse centroids and the shard owning each, \
            which a router uses to send a query only to the shards owning its nearest clusters.
            """)
    @Option(help: "Base vectors (.fvecs, .bvecs, .npy, or IDX).") var input: String
    @Option(parsing: .unconditional, help: "Number of shards.") var shards = 3
    @Option(help: "Output directory (must not exist).") var output: String
    @Option(help: "Metric of the indexes to be built: l2, ip or cos (cos routes on normalised vectors).")
    var metric: Metric = .l2
    @Option(name: .customLong("coarse-clusters"), parsing: .unconditional, help: "Coarse clusters (0: automatic).")
    var coarseClusters = 0
    @Option(
        name: .customLong("boundary-epsilon"), parsing: .unconditional,
        help: "Replicate a vector into its second-nearest cluster's shard when d2 <= (1 + e) d1 (squared L2).")
    var boundaryEpsilon: Float = 0.1
    @Option(
        name: .customLong("max-replicated"), parsing: .unconditional,
        help: "Largest fraction of the vectors replicated into a second shard.")
    var maxReplicated = 0.1
    @Option(parsing: .unconditional, help: "Seed of sampling and k-means.") var seed: UInt64 = 1

    func validate() throws {
        try checkEnvironment()
        try checkRange(shards, 1...4096, "--shards")
        try checkRange(coarseClusters, 0...(1 << 24), "--coarse-clusters")
        try checkRange(boundaryEpsilon, 0...100, "--boundary-epsilon")
        try checkRange(maxReplicated, 0...1, "--max-replicated")
        guard !FileManager.default.fileExists(atPath: output) else {
            throw ValidationError("\(output) exists; a partition is written to a new directory")
        }
    }

    func run() throws {
        configureThreads()
        let src = try VectorFile.source(path: input)
        var o = ShardPartitionOptions()
        o.shards = shards
        o.metric = metric
        o.coarseClusters = coarseClusters
        o.boundaryEpsilon = boundaryEpsilon
        o.maxReplicatedFraction = maxReplicated
        o.seed = seed
        o.progress = { note($0) }
        let clock = Stopwatch()
        let r = try ShardPartitioner.partition(source: src, directory: output, options: o, kernels: Kernels.selected())
        note("partitioned in \(clock.text)")
        print(
            "\(src.count) vectors into \(shards) shards (\(r.vectorsPerShard.map(String.init).joined(separator: ", ")) "
                + "vectors), \(r.replicated) replicated into a second shard, \(r.routing.clusters) coarse clusters; "
                + "routing table \(output)/routing.json")
    }
}
