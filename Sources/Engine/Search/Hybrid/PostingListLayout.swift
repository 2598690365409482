import CKernels

/// The byte layout of one posting list of n entries in `postings.bin`; this type alone knows the
/// offsets. Lists start at 4 KiB-aligned offsets (`page`); each is a run of arrays, one value per
/// entry, in this order:
///
/// | payload | arrays |
/// |---|---|
/// | f32 | ids (u64), vectors (d f32) |
/// | f16 | ids (u64), vectors (d f16) |
/// | pq8 | ids (u64), vectors.bin rows (u32), PQ codes (M u8) |
/// | pq4 | ids (u64), vectors.bin rows (u32), 4-bit PQ codes of x - head packed in blocks of 32 (ck_pq4 layout) |
/// | binary | ids (u64), vectors.bin rows (u32), residual norms ‖x - head‖ (f32), sign bits (P / 64 u64) |
struct PostingListLayout: Sendable {
    /// Alignment of list offsets in postings.bin.
    static let page = 4096

    let payload: PostingPayload
    let dim: Int
    /// PQ sub-quantizers M (pq8, pq4) or binary code width P; unused for vector payloads.
    let codeWidth: Int

    /// Bytes of a list of n entries.
    func bytes(count n: Int) -> Int {
        switch payload {
        case .f32: return n * (8 + 4 * dim)
        case .f16: return n * (8 + 2 * dim)
        case .pq8: return n * (12 + codeWidth)
        case .pq4: return 12 * n + (n == 0 ? 0 : ck_pq_packed_bytes4(n, codeWidth))
        case .binary: return n * (16 + codeWidth / 8)
        }
    }

    /// Bytes rounded up to whole pages (the space a list takes in the file).
    func pagedBytes(count n: Int) -> Int { (bytes(count: n) + Self.page - 1) / Self.page * Self.page }

    /// Offset of the ids (u64).
    func ids(count n: Int) -> Int { 0 }
    /// Offset of the vectors (f32 or f16 payloads).
    func vectors(count n: Int) -> Int { 8 * n }
    /// Offset of the vectors.bin row numbers (u32, code payloads).
    func rows(count n: Int) -> Int { 8 * n }
    /// Offset of the codes: PQ codes (pq8, pq4) or residual norms (binary).
    func codes(count n: Int) -> Int { 12 * n }
    /// Offset of the sign bits (binary).
    func signBits(count n: Int) -> Int { 16 * n }
    /// Bytes per entry of a vector payload (f32 or f16).
    var vectorBytes: Int { payload == .f16 ? 2 * dim : 4 * dim }
}

/// A posting list in memory: its bytes and entry count, read through its layout.
struct PostingList {
    let raw: UnsafeRawPointer
    let count: Int
    let layout: PostingListLayout

    func id(_ i: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) }
    func row(_ i: Int) -> UInt32 {
        UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: layout.rows(count: count) + 4 * i, as: UInt32.self))
    }
    var vectors: UnsafeRawPointer { raw + layout.vectors(count: count) }
    var codes: UnsafeRawPointer { raw + layout.codes(count: count) }
    /// Residual norm of entry i (binary).
    func norm(_ i: Int) -> Float {
        Float(
            bitPattern: UInt32(
                littleEndian: raw.loadUnaligned(fromByteOffset: layout.codes(count: count) + 4 * i, as: UInt32.self)))
    }
    var signBits: UnsafeRawPointer { raw + layout.signBits(count: count) }
}
