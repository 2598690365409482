import Engine
import Foundation
import XCTest

/// `ShardPartitioner`: whole coarse clusters per shard, bounded boundary replicas, a verified
/// routing table, and sharded search (route, search the owning shards, merge) as good as one index.
final class ShardPartitionTests: XCTestCase {
    func tmp(_ name: String) -> String {
        let d = NSTemporaryDirectory() + "engine-shards-\(getpid())-\(name)"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        return d
    }

    func testPartitionWritesBalancedShardsAndAVerifiedRoutingTable() throws {
        let (n, d) = (6000, 24)
        let base = HybridIndexTests.clustered(n: n, dim: d, clusters: 50, seed: 3)
        let dir = tmp("layout")
        var o = ShardPartitionOptions()
        o.shards = 3
        let r = try ShardPartitioner.partition(
            source: ArrayVectorSource(values: base, dim: d), directory: dir, options: o, kernels: Kernels.selected())
        XCTAssertEqual(r.vectorsPerShard.reduce(0, +), n + r.replicated)
        XCTAssertLessThanOrEqual(r.replicated, n / 10, "replicas bounded by maxReplicatedFraction")
        var seen = [Int](repeating: 0, count: n)
        for k in 0..<3 {
            let (ids, shape) = try NPY.readInt64(path: dir + "/shard-\(k)/ids.npy")
            let (rows, rshape) = try NPY.readFloat32(path: dir + "/shard-\(k)/base.npy")
            XCTAssertEqual(shape, [r.vectorsPerShard[k]])
            XCTAssertEqual(rshape, [r.vectorsPerShard[k], d])
            for (i, id) in ids.enumerated() {
                seen[Int(id)] += 1
                // each row is the input row its id names, byte for byte
                XCTAssertEqual(Array(rows[(i * d)..<((i + 1) * d)]), Array(base[(Int(id) * d)..<((Int(id) + 1) * d)]))
            }
            // primaries within the cap (n/3 x 1.05, plus at most one oversized cluster)
            XCTAssertLessThan(r.vectorsPerShard[k], Int(Double(n) / 3 * 1.05) + r.replicated + n / 50 + 1)
        }
        XCTAssertTrue(seen.allSatisfy { $0 == 1 || $0 == 2 }, "every vector in one shard, at most one replica")
        XCTAssertEqual(seen.filter { $0 == 2 }.count, r.replicated)
        // the routing table reads back equal, and refuses a centroid file that is not its own
        XCTAssertEqual(try ShardRouting(directory: dir), r.routing)
        let cpath = dir + "/centroids.npy"
        var bytes = [UInt8](FileManager.default.contents(atPath: cpath)!)
        bytes[bytes.count - 1] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: cpath))
        XCTAssertThrowsError(try ShardRouting(directory: dir)) { XCTAssertTrue("\($0)".contains("checksum"), "\($0)") }
        // an existing output is never replaced
        XCTAssertThrowsError(
            try ShardPartitioner.partition(source: ArrayVectorSource(values: base, dim: d), directory: dir, options: o))
    }

    /// Route each query to the shards owning its 4 nearest coarse clusters, search each with the
    /// same nprobe as the single index, merge by distance: recall@10 against brute force is at
    /// least the single index's minus 0.005 (the tolerance), and no query is broadcast.
    func testShardedSearchMatchesOneIndex() throws {
        let (n, d) = (8000, 32)
        let k = try Kernels.selected()
        let base = HybridIndexTests.clustered(n: n, dim: d, clusters: 60, seed: 9)
        let queries = HybridIndexTests.clustered(n: 200, dim: d, clusters: 60, seed: 9)
            .enumerated().map { $0.element + 0.25 * Float(($0.offset * 7919) % 11) / 11 }
        let dir = tmp("search")
        var o = ShardPartitionOptions()
        o.shards = 3
        let r = try ShardPartitioner.partition(
            source: ArrayVectorSource(values: base, dim: d), directory: dir, options: o, kernels: k)
        var shardIndexes: [HybridIndex] = []
        for s in 0..<3 {
            let (rows, _) = try NPY.readFloat32(path: dir + "/shard-\(s)/base.npy")
            let (ids, _) = try NPY.readInt64(path: dir + "/shard-\(s)/ids.npy")
            shardIndexes.append(
                try HybridIndex.build(
                    vectors: rows, dim: d, ids: ids.map { UInt64($0) }, directory: dir + "/idx-\(s)", kernels: k))
        }
        let single = try HybridIndex.build(vectors: base, dim: d, directory: dir + "/idx-all", kernels: k)
        let gt = try BruteForce.search(base: base, queries: queries, dim: d, k: 10, metric: .l2)
        var p = HybridSearchParameters()
        p.nprobe = 8
        var (hitsSharded, hitsSingle, routed) = (0, 0, 0)
        for q in 0..<200 {
            let query = Array(queries[(q * d)..<((q + 1) * d)])
            let truth = Set(gt[(q * 10)..<((q + 1) * 10)].map { UInt64($0) })
            let targets = try r.routing.shards(for: query, probes: 4)
            routed += targets.count
            var merged: [UInt64: Float] = [:]
            for s in targets {
                for h in try shardIndexes[s].search(query, k: 10, parameters: p).neighbors {
                    merged[h.id] = min(merged[h.id] ?? .infinity, h.distance)
                }
            }
            let top = merged.sorted { $0.value < $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(10)
            hitsSharded += top.filter { truth.contains($0.key) }.count
            hitsSingle += try single.search(query, k: 10, parameters: p).neighbors.filter { truth.contains($0.id) }
                .count
        }
        let (rs, r1) = (Double(hitsSharded) / 2000, Double(hitsSingle) / 2000)
        print("sharded recall@10 \(rs), one index \(r1), shards per query \(Double(routed) / 200)")
        XCTAssertGreaterThanOrEqual(rs, r1 - 0.005)
        XCTAssertLessThan(Double(routed) / 200, 3, "queries are routed, not broadcast")
    }
}
