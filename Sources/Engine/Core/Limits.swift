/// Upper bounds on sizes and counts that come from files or options. Each is checked before
/// anything is allocated from it, so a crafted header cannot ask for an absurd allocation or an
/// overflowing product; a real model or dataset stays far below them. Where a real user might
/// need more, the limit is a parameter with this as its default.
public enum Limits {
    /// Vector dimension (index files, vector files, IDX images): 65,536 floats, 256 KiB a vector.
    /// Embedding models use 384-4,096; image datasets 784-3,072.
    public static let dimension = 1 << 16
    /// Vocabulary entries of a tokenizer or an embedding table: 2^22 (4M), ~30x the largest
    /// vocabularies in use (128k-256k).
    public static let vocabulary = 1 << 22
    /// Transformer layers: 1,024 (the largest public models have ~130).
    public static let layers = 1 << 10
    /// Context length a model may declare and a cache may hold: 2^20 tokens (1M); a KV cache is
    /// allocated for the positions actually requested, never for the declared maximum alone.
    public static let context = 1 << 20
    /// Attention heads per layer.
    public static let heads = 1 << 12
    /// Neighbours per query (`k`): 2^16; a search also never returns more than the index holds.
    public static let neighbors = 1 << 16
    /// Elements of one GGUF metadata array (a vocabulary or merge list is the largest: ~10^5-10^6).
    public static let metadataArray = 1 << 24
    /// Nesting depth of GGUF metadata arrays (real files nest at most 1 level).
    public static let metadataDepth = 4
    /// Bytes of one GGUF metadata string or safetensors header: 64 MiB.
    public static let headerBytes = 64 << 20
    /// Alignment of GGUF tensor data: a power of two up to 64 KiB (files use 32).
    public static let alignment = 1 << 16
    /// Tensors in one model file.
    public static let tensors = 1 << 20
    /// Threads for the kernels: 4 x the cores available (more only adds contention).
    public static var threads: Int { 4 * Threads.cores }
    /// Bytes of one token string in a vocabulary.
    public static let tokenBytes = 1 << 12
}
