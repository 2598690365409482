import Foundation
import Synchronization

/// Upper bounds on sizes and counts that come from files or options. Each is checked before
/// anything is allocated from it, so a crafted header cannot ask for an absurd allocation or an
/// overflowing product; a real model or dataset stays far below them.
///
/// The five bounds a real user might outgrow (``Adjustable``) can be raised, up to a hard
/// ceiling that keeps every product of sizes far from overflow: in code with
/// ``set(_:to:)``, or for a process with environment variables (`ENGINE_LIMIT_DIMENSION=131072`
/// and so on) read by ``applyEnvironment(_:)``, which the `engine` command calls at start.
public enum Limits {
    /// A bound that can be raised up to its ceiling.
    public enum Adjustable: String, CaseIterable, Sendable {
        /// ``Limits/dimension``.
        case dimension
        /// ``Limits/vocabulary``.
        case vocabulary
        /// ``Limits/layers``.
        case layers
        /// ``Limits/context``.
        case context
        /// ``Limits/neighbors``.
        case neighbors

        /// The value when nothing overrides it.
        public var defaultValue: Int {
            switch self {
            case .dimension: return 1 << 16
            case .vocabulary: return 1 << 22
            case .layers: return 1 << 10
            case .context: return 1 << 20
            case .neighbors: return 1 << 16
            }
        }

        /// The largest value it may be set to: 16x the default (2^24 neighbours, 2^20 dimensions, ...).
        public var ceiling: Int { defaultValue << 4 }

        /// The environment variable that sets it (`ENGINE_LIMIT_CONTEXT`, ...).
        public var environmentVariable: String { "ENGINE_LIMIT_" + rawValue.uppercased() }
    }

    private static let values = Mutex<[Adjustable: Int]>([:])

    /// The current value of an adjustable bound.
    public static func value(of limit: Adjustable) -> Int {
        values.withLock { $0[limit] } ?? limit.defaultValue
    }

    /// Sets an adjustable bound for this process (lower or higher than its default, at least 1 and
    /// at most its ``Adjustable/ceiling``).
    public static func set(_ limit: Adjustable, to value: Int) throws(EngineError) {
        guard (1...limit.ceiling).contains(value) else {
            throw .invalidArgument("limit \(limit.rawValue) must be in 1...\(limit.ceiling), got \(value)")
        }
        values.withLock { $0[limit] = value }
    }

    /// Applies every `ENGINE_LIMIT_*` variable of `environment`; an unknown `ENGINE_LIMIT_` name or a
    /// value that is not an integer in range is refused (nothing is applied then).
    public static func applyEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(EngineError) {
        var chosen: [(Adjustable, Int)] = []
        for (name, text) in environment where name.hasPrefix("ENGINE_LIMIT_") {
            guard let limit = Adjustable.allCases.first(where: { $0.environmentVariable == name }) else {
                let known = Adjustable.allCases.map(\.environmentVariable).joined(separator: ", ")
                throw .invalidArgument("unknown limit \(name) (known: \(known))")
            }
            guard let v = Int(text), (1...limit.ceiling).contains(v) else {
                throw .invalidArgument(
                    "\(name) must be an integer in 1...\(limit.ceiling), got \(text.debugDescription)")
            }
            chosen.append((limit, v))
        }
        for (limit, v) in chosen { try set(limit, to: v) }
    }

    /// Vector dimension (index files, vector files, IDX images): default 65,536 floats, 256 KiB a
    /// vector. Embedding models use 384-4,096; image datasets 784-3,072.
    public static var dimension: Int { value(of: .dimension) }
    /// Vocabulary entries of a tokenizer or an embedding table: default 2^22 (4M), ~30x the largest
    /// vocabularies in use (128k-256k).
    public static var vocabulary: Int { value(of: .vocabulary) }
    /// Transformer layers: default 1,024 (the largest public models have ~130).
    public static var layers: Int { value(of: .layers) }
    /// Context length a model may declare and a cache may hold: default 2^20 tokens (1M); a KV cache
    /// is allocated for the positions actually requested, never for the declared maximum alone.
    public static var context: Int { value(of: .context) }
    /// Attention heads per layer.
    public static let heads = 1 << 12
    /// Neighbours per query (`k`): default 2^16; a search also never returns more than the index holds.
    public static var neighbors: Int { value(of: .neighbors) }
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
