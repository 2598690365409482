import AsyncHTTPClient
import Engine
import Foundation
import NIOCore
import NIOHTTP1

/// A refusal or failure reported by the server (its JSON error), or a transport problem.
public struct EngineClientError: Error, CustomStringConvertible, Sendable {
    /// The HTTP status (0: no response).
    public let status: Int
    /// The server's message.
    public let message: String

    /// The status and message.
    public var description: String { status == 0 ? message : "\(status): \(message)" }
}

/// A model the server has loaded.
public struct ServedModel: Decodable, Sendable {
    /// Its name (the `model` field of requests).
    public let id: String
    /// `generation`, `encrypted-generation`, `embedding` or `encrypted-embedding`.
    public let kind: String
    /// The key check value of an encrypted model (lets a client refuse a wrong key before sending).
    public let key_check: String?
    /// An encrypted encoder's hidden-dimension transform (`rotation` or `permutation`).
    public let encryption: String?
}

/// The client of `engine serve` (async-http-client). Plain calls carry text and vectors; the
/// encrypted clients built on it (`EncryptedGenerationClient`) carry only permuted ids.
public final class EngineClient: Sendable {
    /// The server, e.g. `http://127.0.0.1:8080`.
    public let baseURL: String
    let apiKey: String?
    let http: HTTPClient
    /// Seconds a request may take.
    public let timeout: Int64

    /// A client for `baseURL` (no trailing slash needed); `apiKey` is sent as a bearer token.
    public init(baseURL: String, apiKey: String? = nil, timeout: Int64 = 600, http: HTTPClient = .shared) {
        var b = baseURL
        while b.hasSuffix("/") { b.removeLast() }
        self.baseURL = b
        self.apiKey = apiKey
        self.timeout = timeout
        self.http = http
    }

    func makeRequest(_ method: HTTPMethod, _ path: String, json: [String: Any]? = nil) throws -> HTTPClientRequest {
        var r = HTTPClientRequest(url: baseURL + path)
        r.method = method
        if let apiKey { r.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        if let json {
            let data = try JSONSerialization.data(withJSONObject: json)
            r.headers.add(name: "Content-Type", value: "application/json")
            r.body = .bytes(ByteBuffer(bytes: data))
        }
        return r
    }

    func check(_ response: HTTPClientResponse) async throws {
        guard response.status == .ok else {
            let body = try await response.body.collect(upTo: 1 << 20)
            let data = Data(body.readableBytesView)
            let message =
                ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])
                .flatMap { $0["error"] as? [String: Any] }?["message"] as? String
                ?? String(decoding: data, as: UTF8.self)
            throw EngineClientError(status: Int(response.status.code), message: message)
        }
    }

    /// One JSON request and its JSON answer.
    func call(_ method: HTTPMethod, _ path: String, json: [String: Any]? = nil) async throws -> Any {
        let response = try await http.execute(makeRequest(method, path, json: json), timeout: .seconds(timeout))
        try await check(response)
        let body = try await response.body.collect(upTo: 256 << 20)
        return try JSONSerialization.jsonObject(with: Data(body.readableBytesView))
    }

    /// One decoded server-sent event (a JSON object; read-only once made).
    struct Event: @unchecked Sendable {
        let object: [String: Any]
    }

    /// The `data:` payloads of a server-sent-event stream, JSON-decoded, until `[DONE]`.
    func events(_ path: String, json: [String: Any]) -> AsyncThrowingStream<Event, any Error> {
        let request: HTTPClientRequest
        do { request = try makeRequest(.POST, path, json: json) } catch {
            return AsyncThrowingStream { $0.finish(throwing: error) }
        }
        let http = self.http
        let timeout = self.timeout
        let check = self.check
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let response = try await http.execute(request, timeout: .seconds(timeout))
                    try await check(response)
                    var pending: [UInt8] = []
                    var done = false
                    for try await chunk in response.body {
                        pending += chunk.readableBytesView
                        // events end with a blank line
                        while let end = Self.eventEnd(pending) {
                            let event = Array(pending[..<end.lowerBound])
                            pending.removeFirst(end.upperBound)
                            for line in event.split(separator: UInt8(ascii: "\n")) {
                                guard line.starts(with: Array("data: ".utf8)) else { continue }
                                let payload = Data(line.dropFirst(6))
                                if payload == Data("[DONE]".utf8) {
                                    done = true
                                    continue
                                }
                                guard let o = try JSONSerialization.jsonObject(with: payload) as? [String: Any] else {
                                    continue
                                }
                                if let e = o["error"] as? [String: Any] {
                                    throw EngineClientError(status: 200, message: "\(e["message"] ?? "stream failed")")
                                }
                                continuation.yield(Event(object: o))
                            }
                        }
                    }
                    if !done { throw EngineClientError(status: 200, message: "the stream ended without [DONE]") }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    static func eventEnd(_ bytes: [UInt8]) -> Range<Int>? {
        guard bytes.count >= 2 else { return nil }
        for i in 0..<(bytes.count - 1) where bytes[i] == 10 && bytes[i + 1] == 10 { return i..<(i + 2) }
        return nil
    }

    // MARK: plain calls

    /// The loaded models.
    public func models() async throws -> [ServedModel] {
        let o = try await call(.GET, "/v1/models") as? [String: Any]
        let data = try JSONSerialization.data(withJSONObject: o?["data"] ?? [])
        return try JSONDecoder().decode([ServedModel].self, from: data)
    }

    static func sampling(_ p: GenerationParameters) -> [String: Any] {
        // the seed travels as a signed 64-bit integer (JSON numbers); the server maps it back
        ["max_tokens": p.maxTokens, "temperature": p.temperature, "top_p": p.topP, "seed": Int64(bitPattern: p.seed)]
    }

    /// Completion text of a plain model, streamed piece by piece.
    public func completion(prompt: String, parameters: GenerationParameters = .init(), chat: Bool = false)
        -> AsyncThrowingStream<String, any Error>
    {
        var body = Self.sampling(parameters)
        body["stream"] = true
        if chat { body["messages"] = [["role": "user", "content": prompt]] } else { body["prompt"] = prompt }
        let events = self.events(chat ? "/v1/chat/completions" : "/v1/completions", json: body)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await e in events {
                        let choice = (e.object["choices"] as? [[String: Any]])?.first
                        let text =
                            chat
                            ? (choice?["delta"] as? [String: Any])?["content"] as? String : choice?["text"] as? String
                        if let text, !text.isEmpty { continuation.yield(text) }
                    }
                    continuation.finish()
                } catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Sentence vectors of a plain embedding model, one per text.
    public func embeddings(_ texts: [String]) async throws -> [[Float]] {
        let o = try await call(.POST, "/v1/embeddings", json: ["input": texts]) as? [String: Any]
        return try Self.vectors(o)
    }

    static func vectors(_ o: [String: Any]?) throws -> [[Float]] {
        guard let data = o?["data"] as? [[String: Any]] else {
            throw EngineClientError(status: 200, message: "no data in the answer")
        }
        return data.map { ($0["embedding"] as? [NSNumber] ?? []).map(\.floatValue) }
    }

    /// The k nearest ids of each vector in a served index.
    public func search(index: String, vectors: [[Float]], k: Int = 10, nprobe: Int? = nil) async throws -> [[SearchHit]]
    {
        var body: [String: Any] = ["vectors": vectors, "k": k]
        if let nprobe { body["nprobe"] = nprobe }
        let name = index.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? index
        let o = try await call(.POST, "/v1/indexes/\(name)/search", json: body) as? [String: Any]
        guard let results = o?["results"] as? [[[String: Any]]] else {
            throw EngineClientError(status: 200, message: "no results in the answer")
        }
        return results.map {
            $0.map {
                SearchHit(
                    id: ($0["id"] as? NSNumber)?.uint64Value ?? 0,
                    distance: ($0["distance"] as? NSNumber)?.floatValue ?? 0)
            }
        }
    }

    // MARK: encrypted calls (ids and vectors only; the key never leaves the client)

    /// Permuted ids generated by an encrypted model from permuted prompt ids.
    public func encryptedCompletion(promptIDs: [Int], stopIDs: [Int], parameters: GenerationParameters)
        -> AsyncThrowingStream<Int, any Error>
    {
        var body = Self.sampling(parameters)
        body["stream"] = true
        body["prompt_ids"] = promptIDs
        body["stop_ids"] = stopIDs
        let events = self.events("/v1/encrypted/completions", json: body)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await e in events { for id in (e.object["ids"] as? [Int]) ?? [] { continuation.yield(id) } }
                    continuation.finish()
                } catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Encrypted sentence vectors of permuted id sequences.
    public func encryptedEmbeddings(_ ids: [[Int]]) async throws -> [[Float]] {
        let o = try await call(.POST, "/v1/encrypted/embeddings", json: ["input_ids": ids]) as? [String: Any]
        return try Self.vectors(o)
    }
}

/// The client of an encrypted decoder on a server: it holds the key and the plain tokenizer,
/// sends permuted ids, and turns the permuted ids that come back into text. The server's sampler
/// works in permuted space, so greedy and seeded sampling give exactly the tokens a local
/// `EncryptedSession` would.
public final class EncryptedGenerationClient: Sendable {
    /// The HTTP client.
    public let client: EngineClient
    /// The plain tokenizer.
    public let tokenizer: BPETokenizer
    let permutation: [Int]
    let inverse: [Int]
    let keyCheck: String

    /// A client; fails if the server's encrypted model was encrypted with another key (its key
    /// check value, from `/v1/models`, does not match) or the server has no encrypted model.
    public init(client: EngineClient, tokenizer: BPETokenizer, key: EncryptionKey) async throws {
        guard let m = try await client.models().first(where: { $0.kind == "encrypted-generation" }) else {
            throw EngineClientError(status: 0, message: "the server has no encrypted generation model")
        }
        try key.verify(modelCheck: m.key_check, model: "the server's model \(m.id)")
        self.client = client
        self.tokenizer = tokenizer
        keyCheck = key.checkValue
        permutation = key.vocabularyPermutation
        var inv = [Int](repeating: 0, count: permutation.count)
        for (t, e) in permutation.enumerated() { inv[e] = t }
        inverse = inv
    }

    /// Generates from a plain prompt; `onToken(id, text)` gets each plain id and the text it
    /// completes. Returns the plain ids (without the stop token).
    ///
    /// `fallbacks`: other servers holding the same encrypted model (replicas). When the stream
    /// breaks (the server died, the connection dropped, the stream ended without `[DONE]`), the
    /// generation starts over on the next one whose key check matches; tokens already delivered
    /// are not delivered again, and must come back identical (greedy or seeded sampling is
    /// deterministic; a divergent retry throws rather than splice two different texts). A
    /// refusal of the request itself (4xx) is not retried.
    @discardableResult
    public func generate(
        prompt: String, parameters: GenerationParameters = .init(), fallbacks: [EngineClient] = [],
        onToken: (Int, String) -> Void = { _, _ in }
    ) async throws -> [Int] {
        let ids = try tokenizer.encode(prompt)
        guard !ids.isEmpty else { throw EngineClientError(status: 0, message: "the prompt is empty") }
        let stops =
            parameters.stopTokens.map(Array.init)
            ?? [tokenizer.eosID, tokenizer.id(of: "<|im_end|>")].compactMap { $0 }
        var out: [Int] = []
        var pending: [UInt8] = []
        var lastError: (any Error)?
        for (attempt, server) in ([client] + fallbacks).enumerated() {
            if attempt > 0 {
                // a replica must hold the model of this key
                guard let m = try? await server.models().first(where: { $0.kind == "encrypted-generation" }),
                    m.key_check == keyCheck
                else { continue }
            }
            var received = 0
            do {
                for try await e in server.encryptedCompletion(
                    promptIDs: ids.map { permutation[$0] }, stopIDs: stops.map { permutation[$0] },
                    parameters: parameters)
                {
                    guard e >= 0 && e < inverse.count else {
                        throw EngineClientError(status: 200, message: "the server sent id \(e), outside the vocabulary")
                    }
                    let id = inverse[e]
                    received += 1
                    if received <= out.count {
                        guard out[received - 1] == id else {
                            throw EngineClientError(
                                status: 0,
                                message: "the generation retried on \(server.baseURL) diverged at token \(received) "
                                    + "(sampling without a seed is not repeatable)")
                        }
                        continue
                    }
                    out.append(id)
                    pending += tokenizer.bytes(of: id)
                    if let s = String(validating: pending, as: UTF8.self) {
                        onToken(id, s)
                        pending = []
                    }
                }
                if !pending.isEmpty { onToken(out.last ?? 0, String(decoding: pending, as: UTF8.self)) }
                return out
            } catch let e as EngineClientError where (400..<500).contains(e.status) || e.message.contains("diverged") {
                throw e
            } catch {
                lastError = error
            }
        }
        throw lastError ?? EngineClientError(status: 0, message: "no server with this key's model answered")
    }
}

/// The client of an encrypted encoder on a server: tokenizes and permutes with the key, sends
/// only permuted ids, and decrypts the vectors that come back.
public final class EncryptedEmbeddingClient: Sendable {
    /// The HTTP client.
    public let client: EngineClient
    /// The plain tokenizer.
    public let tokenizer: WordPieceTokenizer
    /// The key's transforms.
    public let cipher: EncoderCipher

    /// A client; fails if the server's encoder was encrypted with another key or is not encrypted.
    public init(client: EngineClient, tokenizer: WordPieceTokenizer, key: EncryptionKey) async throws {
        guard let m = try await client.models().first(where: { $0.kind == "encrypted-embedding" }) else {
            throw EngineClientError(status: 0, message: "the server has no encrypted embedding model")
        }
        try key.verify(modelCheck: m.key_check, model: "the server's model \(m.id)")
        guard let mode = m.encryption.flatMap(BertEncryption.init(rawValue:)) else {
            throw EngineClientError(status: 0, message: "the server did not say how its encoder is encrypted")
        }
        self.client = client
        self.tokenizer = tokenizer
        cipher = try EncoderCipher(key: key, mode: mode)
    }

    /// Plain sentence vectors of `texts`, computed by the server on permuted ids.
    public func embed(_ texts: [String]) async throws -> [[Float]] {
        let encrypted = try await client.encryptedEmbeddings(texts.map { cipher.encryptIDs(tokenizer.encode($0)) })
        return encrypted.map { cipher.decrypt($0[...]) }
    }
}
