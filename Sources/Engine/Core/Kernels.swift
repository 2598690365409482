import CKernels

/// The C kernels of one ISA level. Cheap to copy; every call validates its arguments and throws
/// `EngineError` on bad input, and none allocates per call beyond its documented outputs.
public struct Kernels: @unchecked Sendable {
    // These point at static constant tables inside CKernels, never freed: safe to share.
    let hammingTable: UnsafePointer<ck_hamming_kernels>
    let qmatmulTable: UnsafePointer<ck_qmatmul_kernels>
    let attentionTable: UnsafePointer<ck_attention_kernels>
    let pqTable: UnsafePointer<ck_pq_kernels>
    let opsTable: UnsafePointer<ck_ops_kernels>
    let vecTable: UnsafePointer<ck_vec_kernels>

    /// The level these kernels run at.
    public let isa: ISA
    /// Threads used by the kernels that split work (default `Threads.defaultCount`).
    public var threads: Int

    /// Kernels for `isa`; throws if this CPU lacks it.
    public init(isa: ISA, threads: Int = Threads.defaultCount) throws(EngineError) {
        guard let h = ck_hamming_kernels_for(isa.c), let q = ck_qmatmul_kernels_for(isa.c),
            let a = ck_attention_kernels_for(isa.c), let p = ck_pq_kernels_for(isa.c),
            let o = ck_ops_kernels_for(isa.c), let v = ck_vec_kernels_for(isa.c)
        else {
            throw EngineError.unsupportedISA("\(isa) requested but this CPU supports at most \(ISA.detected)")
        }
        self.hammingTable = h
        self.qmatmulTable = q
        self.attentionTable = a
        self.pqTable = p
        self.opsTable = o
        self.vecTable = v
        self.isa = isa
        self.threads = min(max(1, threads), 4 * Threads.cores) // more threads only add contention
    }

    /// Kernels at the selected level (detected, or `CK_ISA`).
    public static func selected(threads: Int = Threads.defaultCount) throws(EngineError) -> Kernels {
        try Kernels(isa: ISA.selected(), threads: threads)
    }

    /// The kernels a caller gets without choosing: the `CK_ISA` level when it names one this CPU
    /// has, otherwise the highest detected level; `Threads.defaultCount` threads. (Commands that
    /// must refuse a malformed `CK_ISA` call `selected()`, which throws.)
    public static var `default`: Kernels {
        if let k = try? selected() { return k }
        // the detected level always exists (scalar at least)
        return try! Kernels(isa: ISA.detected)
    }
}
