import CKernels
import Crypto
import Foundation

/// Options of `ShardPartitioner.partition` (SPANN's partitioning across machines).
public struct ShardPartitionOptions: Sendable {
    /// Shards (machines, or groups of replicas).
    public var shards = 3
    /// Coarse clusters the shards own (0: max(16 x shards, sqrt(n)), at most n / 16).
    public var coarseClusters = 0
    /// A vector is also written to the shard of its second-nearest coarse centroid when that is
    /// another shard and d2 <= (1 + boundaryEpsilon) d1 (squared L2), so that a query near a
    /// boundary finds it whichever side it routes to.
    public var boundaryEpsilon: Float = 0.1
    /// At most this fraction of the vectors is replicated (the closest calls first).
    public var maxReplicatedFraction = 0.1
    /// Allowed imbalance: a shard holds at most (1 + slack) n / shards primary vectors unless a
    /// single coarse cluster is larger.
    public var slack = 0.05
    /// Distance: the routing uses squared L2 (cosine: normalise the vectors first).
    public var metric: Metric = .l2
    /// Lloyd iterations of the coarse k-means.
    public var iterations = 10
    /// Seed of sampling and k-means (the same seed and input give the same shards).
    public var seed: UInt64 = 1
    /// Rows read per block.
    public var blockRows = 65_536
    /// Progress messages (nil: silent).
    public var progress: (@Sendable (String) -> Void)? = nil

    /// The defaults above.
    public init() {}
}

/// The global routing table of a sharded index: coarse centroids and the shard that owns each.
/// A query goes only to the shards owning its `probes` nearest centroids.
public struct ShardRouting: Sendable, Equatable {
    /// Vector dimension.
    public let dim: Int
    /// Number of shards.
    public let shards: Int
    /// Metric of the indexes built on the shards.
    public let metric: Metric
    /// Coarse centroids, clusters x dim.
    public let centroids: [Float]
    /// Owning shard of each centroid.
    public let owner: [Int]

    /// Coarse clusters.
    public var clusters: Int { owner.count }

    /// A routing table; throws unless sizes agree and every owner is a shard.
    public init(dim: Int, shards: Int, metric: Metric, centroids: [Float], owner: [Int]) throws {
        try require(dim > 0 && shards > 0, "dimension and shard count must be positive")
        try require(!owner.isEmpty && centroids.count == owner.count * dim, "centroids must be clusters x \(dim)")
        try require(owner.allSatisfy { $0 >= 0 && $0 < shards }, "an owner is not one of the \(shards) shards")
        try centroids.withUnsafeBufferPointer { try requireFinite($0, "routing centroids") }
        self.dim = dim
        self.shards = shards
        self.metric = metric
        self.centroids = centroids
        self.owner = owner
    }

    /// The shards owning the `probes` coarse centroids nearest `query`, nearest first, each once.
    public func shards(for query: [Float], probes: Int) throws -> [Int] {
        try require(query.count == dim, "query has \(query.count) values, the routing table holds \(dim)-d centroids")
        try require(probes >= 1, "probes must be >= 1, got \(probes)")
        try query.withUnsafeBufferPointer { try requireFinite($0, "query") }
        var q = query
        if metric == .cosine {
            let n = q.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if n > 0 { q = q.map { $0 / n } }
        }
        var d = [(Float, Int)]()
        d.reserveCapacity(clusters)
        for c in 0..<clusters {
            var s: Float = 0
            for j in 0..<dim {
                let t = q[j] - centroids[c * dim + j]
                s += t * t
            }
            d.append((s, c))
        }
        d.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        var out: [Int] = []
        for (_, c) in d.prefix(probes) where !out.contains(owner[c]) { out.append(owner[c]) }
        return out
    }

    /// `routing.json` plus `centroids.npy`; the JSON holds the SHA-256 of the centroid file.
    struct Manifest: Codable {
        var format = "engine-shard-routing"
        var version = 1
        var dim: Int
        var shards: Int
        var metric: String
        var clusters: Int
        var owner: [Int]
        var centroids_file = "centroids.npy"
        var centroids_sha256: String
        var vectors: Int
        var vectors_per_shard: [Int]
        var replicated_vectors: Int
    }

    /// Reads and verifies `routing.json` and `centroids.npy` in `directory`.
    public init(directory: String) throws {
        let path = directory + "/routing.json"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EngineError.io("cannot read \(path)")
        }
        guard data.count <= 64 << 20 else { throw EngineError.invalidFile("\(path) is larger than 64 MiB") }
        let m: Manifest
        do { m = try JSONDecoder().decode(Manifest.self, from: data) } catch {
            throw EngineError.invalidFile("\(path): not a routing table (\(error))")
        }
        try require(m.format == "engine-shard-routing" && m.version == 1, "\(path): unknown format or version")
        guard let metric = Metric(rawValue: m.metric) else {
            throw EngineError.invalidFile("\(path): metric \(m.metric)")
        }
        let cpath = directory + "/centroids.npy"
        guard let bytes = FileManager.default.contents(atPath: cpath) else {
            throw EngineError.io("cannot read \(cpath)")
        }
        let digest = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        guard digest == m.centroids_sha256 else {
            throw EngineError.invalidFile(
                "\(cpath): checksum mismatch (the file does not belong to this routing table)")
        }
        let (values, shape) = try NPY.readFloat32(path: cpath)
        guard shape == [m.clusters, m.dim] else {
            throw EngineError.invalidFile("\(cpath): shape \(shape), the routing table says \([m.clusters, m.dim])")
        }
        try self.init(dim: m.dim, shards: m.shards, metric: metric, centroids: values, owner: m.owner)
    }
}

/// Splits a vector collection into shards for a sharded hybrid index (`engine index partition`).
public enum ShardPartitioner {
    /// What a partition wrote.
    public struct Result: Sendable {
        /// The routing table (also in `directory/routing.json` and `centroids.npy`).
        public let routing: ShardRouting
        /// Vectors per shard, replicas included.
        public let vectorsPerShard: [Int]
        /// Vectors written to a second shard.
        public let replicated: Int
    }

    /// Trains coarse centroids on a sample, assigns every vector to its nearest, gives whole
    /// coarse clusters to shards (a balanced k-means over the centroids weighted by their sizes:
    /// nearby clusters share a shard, no shard exceeds its share by more than `slack`), replicates
    /// boundary vectors into the shard of their second-nearest centroid (bounded), and writes
    /// `shard-K/base.npy` (f32 rows) and `shard-K/ids.npy` (int64 global ids: row numbers of the
    /// input, or `ids`) per shard, `routing.json` and `centroids.npy`. Everything goes to a
    /// temporary sibling directory renamed into place at the end; `directory` must not exist.
    @discardableResult
    public static func partition(
        source: VectorSource, ids: [UInt64]? = nil, directory: String, options o: ShardPartitionOptions = .init(),
        kernels: Kernels = .default
    ) throws -> Result {
        let n = source.count
        let dim = source.dim
        let s = o.shards
        try require(s >= 1 && s <= 4096, "shards must be in 1...4096, got \(s)")
        try require(n >= 16 * s, "\(n) vectors are too few for \(s) shards (at least 16 per shard)")
        try require(ids == nil || ids!.count == n, "ids has \(ids?.count ?? 0) entries for \(n) vectors")
        try require(o.boundaryEpsilon >= 0 && o.boundaryEpsilon.isFinite, "boundaryEpsilon must be >= 0")
        try require(o.maxReplicatedFraction >= 0 && o.maxReplicatedFraction <= 1, "maxReplicatedFraction in 0...1")
        try require(o.slack >= 0 && o.slack <= 10, "slack must be in 0...10")
        guard !FileManager.default.fileExists(atPath: directory) else {
            throw EngineError.invalidArgument("\(directory) exists; a partition is written to a new directory")
        }
        let c = o.coarseClusters > 0 ? o.coarseClusters : min(n / 16, max(16 * s, Int(Double(n).squareRoot())))
        try require(c >= s && c <= n, "coarse clusters (\(c)) must be in \(s)...\(n)")
        let say = o.progress ?? { _ in }
        let normalize = o.metric == .cosine
        func read(_ r: Range<Int>) throws -> [Float] {
            var b = [Float](repeating: 0, count: r.count * dim)
            try b.withUnsafeMutableBufferPointer { try source.read(rows: r, into: $0.baseAddress!) }
            try b.withUnsafeBufferPointer { try requireFinite($0, "vectors \(r)") }
            if normalize {
                for i in 0..<r.count {
                    var q: Float = 0
                    for j in 0..<dim { q += b[i * dim + j] * b[i * dim + j] }
                    let inv = q > 0 ? 1 / q.squareRoot() : 0
                    for j in 0..<dim { b[i * dim + j] *= inv }
                }
            }
            return b
        }

        // 1. Coarse centroids from a sample (evenly spaced rows: deterministic, no second pass).
        let sampleN = min(n, max(c * 64, 20_000))
        var sample = [Float](repeating: 0, count: sampleN * dim)
        for i in 0..<sampleN {
            let row = try read((i * n / sampleN)..<(i * n / sampleN + 1))
            for j in 0..<dim { sample[i * dim + j] = row[j] }
        }
        say("coarse k-means: \(c) clusters from \(sampleN) of \(n) vectors")
        let centroids = try sample.withUnsafeBufferPointer {
            try KMeans.train(data: $0, dim: dim, k: c, iterations: o.iterations, seed: o.seed)
        }

        // 2. Nearest and second-nearest centroid of every vector.
        var first = [Int32](repeating: 0, count: n)
        var second = [Int32](repeating: 0, count: n)
        var ratio = [Float](repeating: .infinity, count: n)
        var cnorm = [Float](repeating: 0, count: c)
        for k in 0..<c { for j in 0..<dim { cnorm[k] += centroids[k * dim + j] * centroids[k * dim + j] } }
        var dist = [Float](repeating: 0, count: min(n, o.blockRows) * c)
        for r0 in stride(from: 0, to: n, by: o.blockRows) {
            let m = min(o.blockRows, n - r0)
            let x = try read(r0..<(r0 + m))
            x.withUnsafeBufferPointer { xp in
                centroids.withUnsafeBufferPointer { cp in
                    dist.withUnsafeMutableBufferPointer { dp in
                        ck_blas_sgemm(
                            false, true, m, c, dim, -2, xp.baseAddress, dim, cp.baseAddress, dim, 0, dp.baseAddress, c)
                    }
                }
            }
            for i in 0..<m {
                var xn: Float = 0
                for j in 0..<dim { xn += x[i * dim + j] * x[i * dim + j] }
                var (b1, b2) = (Float.infinity, Float.infinity)
                var (k1, k2) = (0, 0)
                for k in 0..<c {
                    let v = max(0, dist[i * c + k] + cnorm[k] + xn)
                    if v < b1 {
                        (b2, k2) = (b1, k1)
                        (b1, k1) = (v, k)
                    } else if v < b2 {
                        (b2, k2) = (v, k)
                    }
                }
                first[r0 + i] = Int32(k1)
                second[r0 + i] = Int32(k2)
                ratio[r0 + i] = c > 1 ? b2 / max(b1, 1e-30) : .infinity
            }
            say("assigned \(r0 + m) of \(n) vectors")
        }
        var size = [Int](repeating: 0, count: c)
        for k in first { size[Int(k)] += 1 }

        // 3. Whole clusters to shards: k-means of the centroids into s groups, then clusters in
        //    decreasing size to the nearest group with room (cap), else the least loaded one.
        let owner = try assignClusters(
            centroids: centroids, sizes: size, dim: dim, shards: s, slack: o.slack, seed: o.seed)

        // 4. Boundary replicas: second-nearest centroid in another shard and close enough.
        let limit = Int(Double(n) * o.maxReplicatedFraction)
        var candidates: [(Float, Int)] = []
        for i in 0..<n where owner[Int(second[i])] != owner[Int(first[i])] && ratio[i] <= 1 + o.boundaryEpsilon {
            candidates.append((ratio[i], i))
        }
        candidates.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        var extra = [Int32](repeating: -1, count: n)
        for (_, i) in candidates.prefix(limit) { extra[i] = Int32(owner[Int(second[i])]) }
        let replicated = min(limit, candidates.count)
        var perShard = [Int](repeating: 0, count: s)
        for i in 0..<n {
            perShard[owner[Int(first[i])]] += 1
            if extra[i] >= 0 { perShard[Int(extra[i])] += 1 }
        }
        say("shards: \(perShard.map(String.init).joined(separator: ", ")) vectors; \(replicated) replicated")

        // 5. Write everything to a temporary sibling, then rename.
        let tmp = directory + ".partial-\(getpid())"
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        do {
            var base: [NPYStreamWriter] = []
            var idw: [NPYStreamWriter] = []
            for k in 0..<s {
                let d = tmp + "/shard-\(k)"
                try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: false)
                base.append(try NPYStreamWriter(path: d + "/base.npy", descr: "<f4", shape: [perShard[k], dim]))
                idw.append(try NPYStreamWriter(path: d + "/ids.npy", descr: "<i8", shape: [perShard[k]]))
            }
            for r0 in stride(from: 0, to: n, by: o.blockRows) {
                let m = min(o.blockRows, n - r0)
                // the rows as stored (not normalised: each shard's index normalises for cosine itself)
                var x = [Float](repeating: 0, count: m * dim)
                try x.withUnsafeMutableBufferPointer { try source.read(rows: r0..<(r0 + m), into: $0.baseAddress!) }
                for i in 0..<m {
                    let row = r0 + i
                    var id = Int64(bitPattern: ids?[row] ?? UInt64(row)).littleEndian
                    for k in [owner[Int(first[row])], Int(extra[row])] where k >= 0 {
                        try x[(i * dim)..<((i + 1) * dim)].withUnsafeBytes { try base[k].write($0) }
                        try withUnsafeBytes(of: &id) { try idw[k].write($0) }
                    }
                }
            }
            for w in base + idw { try w.commit() }
            try NPY.write(centroids, shape: [c, dim], to: tmp + "/centroids.npy")
            let cbytes = FileManager.default.contents(atPath: tmp + "/centroids.npy") ?? Data()
            let manifest = ShardRouting.Manifest(
                dim: dim, shards: s, metric: o.metric.rawValue, clusters: c, owner: owner,
                centroids_sha256: SHA256.hash(data: cbytes).map { String(format: "%02x", $0) }.joined(),
                vectors: n, vectors_per_shard: perShard, replicated_vectors: replicated)
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            let w = try AtomicFileWriter(path: tmp + "/routing.json")
            try w.write(Array(try enc.encode(manifest)))
            try w.commit()
            guard rename(tmp, directory) == 0 else {
                throw EngineError.io("cannot rename \(tmp) to \(directory): \(String(cString: strerror(errno)))")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw error
        }
        let routing = try ShardRouting(dim: dim, shards: s, metric: o.metric, centroids: centroids, owner: owner)
        return Result(routing: routing, vectorsPerShard: perShard, replicated: replicated)
    }

    /// Owners of `sizes.count` clusters: nearby clusters together, each shard near n / s vectors.
    static func assignClusters(
        centroids: [Float], sizes: [Int], dim: Int, shards s: Int, slack: Double, seed: UInt64
    ) throws -> [Int] {
        let c = sizes.count
        if s == 1 { return [Int](repeating: 0, count: c) }
        let groups = try centroids.withUnsafeBufferPointer {
            try KMeans.train(data: $0, dim: dim, k: s, iterations: 20, seed: seed)
        }
        let n = sizes.reduce(0, +)
        let cap = Int((Double(n) / Double(s) * (1 + slack)).rounded(.up))
        var load = [Int](repeating: 0, count: s)
        var owner = [Int](repeating: 0, count: c)
        for k in (0..<c).sorted(by: { sizes[$0] > sizes[$1] || (sizes[$0] == sizes[$1] && $0 < $1) }) {
            var best = -1
            var bestD = Float.infinity
            for g in 0..<s where load[g] + sizes[k] <= cap {
                var d: Float = 0
                for j in 0..<dim {
                    let t = centroids[k * dim + j] - groups[g * dim + j]
                    d += t * t
                }
                if d < bestD {
                    bestD = d
                    best = g
                }
            }
            if best < 0 { best = load.indices.min { load[$0] < load[$1] }! }
            owner[k] = best
            load[best] += sizes[k]
        }
        return owner
    }
}
