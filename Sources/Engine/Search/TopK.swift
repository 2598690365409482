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
    private(set) var bound = Float.infinity

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
/// An id may carry a value (`insert(_:value:)`, `value(of:)`): the search keeps each code
/// candidate's vectors.bin row there instead of in a Dictionary (whose hashing was ~8% of a pq4
/// search's CPU).
struct IDSet {
    var slots: [UInt64]
    var mask: Int
    var count = 0
    var hasMax = false // UInt64.max marks an empty slot, so that id is kept aside
    /// Values beside `slots` (allocated by the first `insert(_:value:)`), and the aside id's.
    private var values: [UInt32] = []
    private var maxValue: UInt32 = 0
    init(expected: Int) {
        var c = 64
        while c < 2 * expected { c *= 2 }
        slots = [UInt64](repeating: .max, count: c)
        mask = c - 1
    }
    /// Inserts id; true if it was not present.
    mutating func insert(_ id: UInt64) -> Bool { place(id) != nil }

    /// Inserts id with a value; true if it was not present (a present id keeps its value).
    mutating func insert(_ id: UInt64, value: UInt32) -> Bool {
        if values.isEmpty { values = [UInt32](repeating: 0, count: slots.count) }
        guard let s = place(id) else { return false }
        if s < 0 { maxValue = value } else { values[s] = value }
        return true
    }

    /// The value inserted with id, nil if id is absent or no id has carried a value yet (an id
    /// inserted without one after that reads 0).
    func value(of id: UInt64) -> UInt32? {
        if values.isEmpty { return nil }
        if id == .max { return hasMax ? maxValue : nil }
        var i = IDSet.home(id) & mask
        while true {
            let v = slots[i]
            if v == id { return values[i] }
            if v == .max { return nil }
            i = (i + 1) & mask
        }
    }

    private static func home(_ id: UInt64) -> Int { Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> 32) }

    /// Inserts id: its slot if it was not present (-1 for the aside id), nil if it was.
    private mutating func place(_ id: UInt64) -> Int? {
        if id == .max {
            defer { hasMax = true }
            return hasMax ? nil : -1
        }
        if 2 * (count + 1) > slots.count { grow() }
        var i = IDSet.home(id) & mask
        while true {
            let v = slots[i]
            if v == id { return nil }
            if v == .max {
                slots[i] = id
                count += 1
                return i
            }
            i = (i + 1) & mask
        }
    }

    private mutating func grow() {
        let old = slots
        let oldValues = values
        slots = [UInt64](repeating: .max, count: old.count * 2)
        values = oldValues.isEmpty ? [] : [UInt32](repeating: 0, count: slots.count)
        mask = slots.count - 1
        count = 0
        for (i, v) in old.enumerated() where v != .max {
            let s = place(v)!
            if !oldValues.isEmpty { values[s] = oldValues[i] }
        }
    }
}
