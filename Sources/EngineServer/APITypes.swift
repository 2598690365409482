import Engine
import Foundation

// Request and response bodies. The OpenAI-compatible ones follow OpenAI's field names (snake_case
// in JSON); fields a client may send that the engine does not use are ignored, fields it cannot
// honour (n > 1, logprobs) are refused.

/// A string or an array of strings (`prompt`, `stop`, `input`).
enum StringOrArray: Decodable, Sendable {
    case one(String)
    case many([String])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            self = .one(s)
        } else {
            self = .many(try c.decode([String].self))
        }
    }

    var values: [String] {
        switch self {
        case .one(let s): return [s]
        case .many(let a): return a
        }
    }
}

/// Sampling fields shared by the completion requests.
protocol SamplingRequest {
    var max_tokens: Int? { get }
    var max_completion_tokens: Int? { get }
    var temperature: Double? { get }
    var top_p: Double? { get }
    var seed: Int? { get }
    var n: Int? { get }
    var stream: Bool? { get }
}

struct CompletionRequest: Decodable, SamplingRequest {
    var model: String?
    var prompt: StringOrArray
    var max_tokens: Int?
    var max_completion_tokens: Int?
    var temperature: Double?
    var top_p: Double?
    var seed: Int?
    var n: Int?
    var stream: Bool?
    var stop: StringOrArray?
    var logprobs: Int?
    var echo: Bool?
    /// Not OpenAI's: keep generating past end-of-sequence tokens (as llama.cpp's server and vLLM
    /// offer), so load tests get the same number of tokens from every request.
    var ignore_eos: Bool?
}

struct ChatMessage: Decodable {
    var role: String
    var content: Content?

    /// A string, or an array of parts of which only text parts are accepted.
    enum Content: Decodable {
        case text(String)
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) {
                self = .text(s)
                return
            }
            struct Part: Decodable {
                var type: String
                var text: String?
            }
            let parts = try c.decode([Part].self)
            var s = ""
            for p in parts {
                guard p.type == "text", let t = p.text else {
                    throw DecodingError.dataCorruptedError(
                        in: c, debugDescription: "only text content parts are supported, got \(p.type)")
                }
                s += t
            }
            self = .text(s)
        }
        var text: String {
            switch self {
            case .text(let s): return s
            }
        }
    }
}

struct ChatCompletionRequest: Decodable, SamplingRequest {
    var model: String?
    var messages: [ChatMessage]
    var max_tokens: Int?
    var max_completion_tokens: Int?
    var temperature: Double?
    var top_p: Double?
    var seed: Int?
    var n: Int?
    var stream: Bool?
    var stop: StringOrArray?
    var logprobs: Bool?
}

struct Usage: Encodable {
    var prompt_tokens: Int
    var completion_tokens: Int
    var total_tokens: Int
}

struct CompletionChoice: Encodable {
    var text: String
    var index = 0
    var logprobs: String? = nil
    var finish_reason: String?

    enum CodingKeys: String, CodingKey { case text, index, logprobs, finish_reason }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(text, forKey: .text)
        try c.encode(index, forKey: .index)
        try c.encodeNil(forKey: .logprobs)
        try c.encode(finish_reason, forKey: .finish_reason)
    }
}

struct CompletionResponse: Encodable {
    var id: String
    var object = "text_completion"
    var created: Int
    var model: String
    var choices: [CompletionChoice]
    var usage: Usage?
}

struct ChatChoice: Encodable {
    struct Message: Encodable {
        var role = "assistant"
        var content: String
    }
    var index = 0
    var message: Message
    var finish_reason: String
}

struct ChatCompletionResponse: Encodable {
    var id: String
    var object = "chat.completion"
    var created: Int
    var model: String
    var choices: [ChatChoice]
    var usage: Usage
}

struct ChatChunk: Encodable {
    struct Delta: Encodable {
        var role: String?
        var content: String?
    }
    struct Choice: Encodable {
        var index = 0
        var delta: Delta
        var finish_reason: String?

        enum CodingKeys: String, CodingKey { case index, delta, finish_reason }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(delta, forKey: .delta)
            try c.encode(finish_reason, forKey: .finish_reason)
        }
    }
    var id: String
    var object = "chat.completion.chunk"
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage?
}

struct EmbeddingRequest: Decodable {
    var model: String?
    var input: StringOrArray
    var encoding_format: String?
}

struct EmbeddingResponse: Encodable {
    struct Item: Encodable {
        var object = "embedding"
        var index: Int
        var embedding: EmbeddingValue
    }
    var object = "list"
    var data: [Item]
    var model: String
    var usage: EmbeddingUsage
}

struct EmbeddingUsage: Encodable {
    var prompt_tokens: Int
    var total_tokens: Int
}

/// A vector as a JSON array of floats or, for `encoding_format: "base64"` (the `openai` Python
/// package's default), base64 of its little-endian float32 bytes.
enum EmbeddingValue: Encodable {
    case floats([Float])
    case base64([Float])

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .floats(let v): try c.encode(v)
        case .base64(let v):
            let data = v.withUnsafeBufferPointer { p in
                Data(
                    buffer: UnsafeBufferPointer(
                        start: UnsafeRawPointer(p.baseAddress!).assumingMemoryBound(to: UInt8.self), count: p.count * 4)
                )
            }
            try c.encode(data.base64EncodedString())
        }
    }
}

struct ModelList: Encodable {
    struct Model: Encodable {
        var id: String
        var object = "model"
        var created: Int
        var owned_by = "engine"
        /// What the model serves: "generation", "encrypted-generation", "embedding", "encrypted-embedding".
        var kind: String
        /// An encrypted model's key check value: a client verifies its key against it before sending.
        var key_check: String? = nil
        /// An encrypted encoder's hidden-dimension transform (`rotation` or `permutation`).
        var encryption: String? = nil
    }
    var object = "list"
    var data: [Model]
}

// MARK: encrypted endpoints

/// `POST /v1/encrypted/completions`: permuted prompt ids in, permuted generated ids out. The
/// server holds no key and no tokenizer; stop ids are permuted by the client too.
struct EncryptedCompletionRequest: Decodable, SamplingRequest {
    var model: String?
    var prompt_ids: [Int]
    var stop_ids: [Int]?
    var max_tokens: Int?
    var max_completion_tokens: Int?
    var temperature: Double?
    var top_p: Double?
    var seed: Int?
    var n: Int?
    var stream: Bool?
}

struct EncryptedCompletionResponse: Encodable {
    var id: String
    var object = "encrypted.completion"
    var created: Int
    var model: String
    var ids: [Int]
    var finish_reason: String
    var usage: Usage
}

struct EncryptedChunk: Encodable {
    var id: String
    var object = "encrypted.completion.chunk"
    var ids: [Int]
    var finish_reason: String?
    var usage: Usage?
}

/// `POST /v1/encrypted/embeddings`: permuted token ids per input (the client tokenized and
/// permuted them); the vectors returned are in the key's rotated space.
struct EncryptedEmbeddingRequest: Decodable {
    var model: String?
    var input_ids: [[Int]]
}

// MARK: search

struct SearchRequest: Decodable {
    /// One query vector, or several.
    var vector: [Float]?
    var vectors: [[Float]]?
    /// Text embedded by the server's (plain) embedding model.
    var text: StringOrArray?
    var k: Int?
    var nprobe: Int?
    /// Recall@10 to aim for through the index's calibration table (default 0.95 when neither is given).
    var target_recall: Double?
    /// Only these ids may be returned.
    var allow: [UInt64]?
}

struct SearchResponse: Encodable {
    struct Hit: Encodable {
        var id: UInt64
        var distance: Float
    }
    var results: [[Hit]]
}

struct InsertRequest: Decodable {
    var ids: [UInt64]
    var vectors: [[Float]]?
    var texts: [String]?
}

struct DeleteRequest: Decodable {
    var ids: [UInt64]
}

struct IndexStatsResponse: Encodable {
    var name: String
    var dimension: Int
    var metric: String
    var payload: String
    var count: Int
    var inserted: Int
    var deleted: Int
    var lists: Int
    var ram_bytes: Int
    var disk_bytes: Int
    var writable: Bool
    /// The build's recall-to-nprobe table (absent for an index without one).
    var calibration: RecallCalibration?
}
