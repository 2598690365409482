import CKernels
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Build options of a `HybridIndex` (SPANN-style: heads in memory, posting lists on disk).
public struct HybridIndexOptions: Sendable {
    /// Distance: squared L2, inner product, or cosine (vectors normalised at build and query time).
    public var metric: Metric = .l2
    /// Heads (posting lists) per vector. SPANN uses 0.1-0.2; 0.03 answered faster at equal recall
    /// with f16 lists on the benchmark sets of docs/benchmarks.md (fewer, longer lists scan better
    /// and halve the navigation work). Default 0.03.
    public var headFraction: Double = 0.03
    /// Most posting lists a vector is written to (RNG rule; <= 8).
    public var maxReplicas: Int = 8
    /// A vector is considered for a head only if d(x, head) <= (1 + replicaEpsilon) d(x, nearest
    /// head) (squared L2). Default 1.0.
    public var replicaEpsilon: Float = 1.0
    /// RNG rule relaxation: a candidate head h is rejected if rngFactor x d(h, g) < d(x, h) for an
    /// accepted head g (squared L2). 1 is the plain rule; heads here are centroids, which sit
    /// closer to each other than data points do, so larger values keep more replicas.
    public var rngFactor: Float = 2.0
    /// Longest posting list; replicas farthest from the head are dropped first (a vector's nearest
    /// head always keeps it). 0: automatic, 4x the mean list length (at least 64).
    public var postingCap: Int = 0
    /// What the posting lists hold: f16 (default) or f32 vectors (near-exact or exact distances), or codes
    /// scanned for candidates that are re-ranked exactly from full vectors kept in `vectors.bin`:
    /// 8-bit PQ (float tables), 4-bit PQ of the residual to the head (fast-scan, uint8 tables in
    /// registers), or binary sign codes of the rotated residual (Hamming). See `PostingPayload`.
    /// f16 is the default: at the same recall it answered 1.3-1.8x the queries of f32 lists on
    /// every benchmark set of docs/benchmarks.md (half the bytes per scanned entry).
    public var payload: PostingPayload = .f16
    /// PQ sub-quantizers (0: `.pq8` dim / 8; `.pq4` dim / 2, or dim / 4, ... so that M <= 256).
    public var pqSubquantizers: Int = 0
    /// Lloyd iterations per k-means level.
    public var kmeansIterations: Int = 8
    /// Coarse clusters (the navigation level above the heads): 0 = sqrt(heads).
    public var coarseClusters: Int = 0
    /// Seed of sampling and k-means: the same seed and input give the same bytes.
    public var seed: UInt64 = 1
    /// Sample queries of the recall calibration stored in the index (`RecallCalibration`; at most
    /// the vector count; 0: no table; at most 100,000, whose rows the calibration holds in RAM).
    /// Default 1000.
    public var calibrationQueries: Int = RecallCalibration.defaultQueries
    /// Rows per block when the build streams its input (0: about 8 MiB of f32 per block).
    public var blockRows: Int = 0
    /// Progress messages during long builds (nil: silent).
    public var progress: (@Sendable (String) -> Void)? = nil

    /// The defaults above.
    public init() {}
}

/// Search effort of one query: a recall to aim for (through the index's calibration table) or a
/// number of posting lists to read.
public struct HybridSearchParameters: Sendable {
    /// Recall@10 to aim for: the index's calibration table (`RecallCalibration`) chooses nprobe.
    /// nil, or an index without a table (built before format version 2, or with
    /// `calibrationQueries` 0): `nprobe` lists are read. Default `RecallCalibration.defaultTarget`
    /// (0.95). Assigning `nprobe` clears it.
    public var targetRecall: Double? = RecallCalibration.defaultTarget
    /// Posting lists read (nearest heads) when no target recall applies. Default 32. Setting it
    /// asks for exactly this many lists: it clears `targetRecall`.
    public var nprobe: Int = 32 {
        didSet {
            targetRecall = nil
            extraListFraction = 0
        }
    }
    /// Share of queries that read one list more than `nprobe` (set by `HybridIndex.resolved` from
    /// a fractional calibrated nprobe; a hash of the query decides).
    public internal(set) var extraListFraction: Double = 0
    /// Coarse clusters whose heads are ranked (0: automatic, max(4, nprobe / 4)).
    public var coarseProbe: Int = 0
    /// Query-aware pruning (L2 and cosine): skip head i if d(q, c_i) > (1 + eps) d(q, c_1) in
    /// squared L2 (cosine: on 2 - 2 cos). nil: read all nprobe lists.
    public var pruneEpsilon: Float? = nil
    /// Checksum policy for posting lists and re-rank rows (vectors.bin): `.once` verifies each
    /// list's and row's CRC-32C the first time this process reads it (default), `.always` on
    /// every read, `.never` skips it.
    public var verify: ChecksumPolicy = .once
    /// PQ payloads: candidates (by approximate distance) re-ranked with their full vectors.
    public var rerank: Int = 100
    /// Only ids for which this returns true are returned (filtered search).
    public var filter: (@Sendable (UInt64) -> Bool)? = nil

    /// Defaults: target recall 0.95 where the index has a calibration table, else 32 lists.
    public init() {}

    /// Exactly `nprobe` lists read (no target recall).
    public init(nprobe: Int) {
        self.nprobe = nprobe
        targetRecall = nil
    }

    /// Aim for `targetRecall` (in 0...1); `fallback` lists where the index has no calibration table.
    public init(targetRecall: Double, fallback: Int = 32) {
        self.targetRecall = targetRecall
        nprobe = fallback
    }
}

/// When posting-list checksums are verified: on first read (default), on every read, or never.
public enum ChecksumPolicy: Sendable { case once, always, never }

/// Posting-list payload of a hybrid index.
/// Lists hold per entry (besides its UInt64 id):
///  - `f32`, `f16`: the vector (4d or 2d bytes); exact (f16: to half precision) distances.
///  - `pq8`: a vectors.bin row number and M 8-bit PQ codes of the vector (M bytes).
///  - `pq4`: a row number and M 4-bit PQ codes of the residual x - head, packed in blocks of 32
///    for fast-scan (M / 2 bytes).
///  - `binary`: a row number, ||x - head|| and the P sign bits of the rotated residual (P / 8
///    bytes, P the power of two >= d); approximate distance from the Hamming angle estimate.
/// Code payloads keep full f32 vectors, with a CRC per row, in vectors.bin for re-ranking.
public enum PostingPayload: String, Sendable, CaseIterable {
    case f32, f16, pq8, pq4, binary
    /// Candidates are approximate and re-ranked from vectors.bin.
    var isCoded: Bool { self != .f32 && self != .f16 }
}

/// How posting lists are read. `.mapped` (default): the postings file is memory-mapped; the
/// lists a query needs are announced with madvise(WILLNEED) (the kernel reads them
/// concurrently) and scanned in place, no copy. `.pread`: each list is read into a buffer with
/// pread (one I/O per list), the access pattern of an index far larger than the page cache.
/// `.uring`: all lists of a query (and its re-rank rows) read in one io_uring batch, up to 64
/// in flight (Linux); where io_uring is unavailable the index opens with `.pread` instead.
public enum IndexIO: String, Sendable, CaseIterable { case mapped, pread, uring }

/// One search result: a stored vector's external id and its distance to the query (the metric's
/// convention, smaller is better). Kernel-level scans return `Neighbor` (a position) instead.
public struct SearchHit: Sendable, Equatable {
    /// The vector's external id.
    public var id: UInt64
    /// Its distance to the query.
    public var distance: Float

    /// A hit.
    public init(id: UInt64, distance: Float) {
        self.id = id
        self.distance = distance
    }
}

/// The work one search did (lists and bytes read, candidates scored).
public struct SearchCost: Sendable {
    /// Posting lists read.
    public var listsRead = 0
    /// Bytes read from postings.bin and vectors.bin.
    public var bytesRead = 0
    /// 4 KiB pages read.
    public var pagesRead = 0
    /// Entries scored (list entries and inserted vectors).
    public var candidatesScored = 0
}
