import CKernels

/// The k smallest (distance, id) pairs pushed so far, kept by the C heap of `ck_topk.h` (the one
/// top-k of the engine: Hamming, PQ fast-scan and the indexes use it). Ties go to the smaller id,
/// so results do not depend on the order of pushes; NaN is never kept.
struct TopK {
    let k: Int
    private(set) var size = 0
    private var d: [Float]
    private var ids: [Int64]
    /// The root's distance once the heap is full (+infinity before): the admission bound.
    private var bound = Float.infinity

    init(k: Int) {
        self.k = max(0, k)
        d = [Float](repeating: 0, count: max(1, k))
        ids = [Int64](repeating: 0, count: max(1, k))
        if k <= 0 { bound = -.infinity }
    }

    /// Whether `push(x, id)` would keep the pair (the heap's root is its worst entry).
    func accepts(_ x: Float, _ id: UInt64) -> Bool {
        x < bound || (x == bound && (size < k || Int64(bitPattern: id) < ids[0]))
    }

    /// Whether a pair at distance x could be kept (ties decided by id in `push`).
    @inline(__always) func mayAccept(_ x: Float) -> Bool { x <= bound }

    mutating func push(_ x: Float, _ id: UInt64) {
        let k = self.k
        let s = size
        size = d.withUnsafeMutableBufferPointer { dp in
            ids.withUnsafeMutableBufferPointer { ip in
                ck_topk_push1_f32(dp.baseAddress, ip.baseAddress, s, k, x, Int64(bitPattern: id))
            }
        }
        if size == k && k > 0 { bound = d[0] }
    }

    /// Pushes distances[0..<n) with ids base, base + 1, ...
    mutating func push(_ distances: UnsafePointer<Float>, count n: Int, base: Int) {
        let k = self.k
        let s = size
        size = d.withUnsafeMutableBufferPointer { dp in
            ids.withUnsafeMutableBufferPointer { ip in
                ck_topk_push_f32(dp.baseAddress, ip.baseAddress, s, k, distances, n, Int64(base))
            }
        }
        if size == k && k > 0 { bound = d[0] }
    }

    /// The kept pairs, nearest first (ties by id).
    func sorted() -> [SearchHit] {
        var sd = Array(d[0..<size])
        var si = Array(ids[0..<size])
        let n = size
        sd.withUnsafeMutableBufferPointer { dp in
            si.withUnsafeMutableBufferPointer { ip in ck_topk_sort_f32(dp.baseAddress, ip.baseAddress, n) }
        }
        return (0..<n).map { SearchHit(id: UInt64(bitPattern: si[$0]), distance: sd[$0]) }
    }
}

/// Indices of the m smallest values, nearest first (bounded heap, O(n log m)).
func smallest(_ v: [Float], _ m: Int) -> [Int] {
    if m >= v.count { return Array(v.indices) }
    var t = TopK(k: m)
    v.withUnsafeBufferPointer { t.push($0.baseAddress!, count: v.count, base: 0) }
    return t.sorted().map { Int($0.id) }
}

/// A set of ids for one query: open addressing, linear probing, sized once (at most half full).
struct IDSet {
    var slots: [UInt64]
    var mask: Int
    var count = 0
    var hasMax = false // UInt64.max marks an empty slot, so that id is kept aside
    init(expected: Int) {
        var c = 64
        while c < 2 * expected { c *= 2 }
        slots = [UInt64](repeating: .max, count: c)
        mask = c - 1
    }
    /// Inserts id; true if it was not present.
    mutating func insert(_ id: UInt64) -> Bool {
        if id == .max {
            defer { hasMax = true }
            return !hasMax
        }
        if 2 * (count + 1) > slots.count { grow() }
        var i = Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
        while true {
            let v = slots[i]
            if v == id { return false }
            if v == .max {
                slots[i] = id
                count += 1
                return true
            }
            i = (i + 1) & mask
        }
    }
    mutating func grow() {
        let old = slots
        slots = [UInt64](repeating: .max, count: old.count * 2)
        mask = slots.count - 1
        count = 0
        for v in old where v != .max { _ = insert(v) }
    }
}
