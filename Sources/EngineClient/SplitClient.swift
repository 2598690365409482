import Engine
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore

/// The client of a split-encrypted decoder on a server (`/v1/encrypted/split`, a WebSocket): it
/// holds the client half (rotated embedding table, output head, tokenizer), sends only rotated
/// input vectors and turns the rotated final states that come back into plain logits, one round
/// trip per token. Neither token ids nor vocabulary-sized tensors reach the server.
public final class EncryptedSplitClient: Sendable {
    /// The HTTP client (base URL and API key).
    public let client: EngineClient
    /// The client half of the model.
    public let half: SplitClientHalf

    /// A client; fails if the server has no split model or its key check differs from the half's.
    public init(client: EngineClient, half: SplitClientHalf) async throws {
        guard let m = try await client.models().first(where: { $0.kind == "encrypted-split" }) else {
            throw EngineClientError(status: 0, message: "the server has no split-encrypted model")
        }
        guard m.key_check == half.keyCheck else {
            throw EngineClientError(
                status: 0,
                message: "the server's model \(m.id) was encrypted with another key than this client half "
                    + "(key check \(m.key_check ?? "none") vs \(half.keyCheck))")
        }
        self.client = client
        self.half = half
    }

    struct Hello: Decodable {
        let dim: Int
        let context: Int
        let key_check: String?
        let max_message_bytes: Int
    }

    struct ErrorBody: Decodable {
        struct Detail: Decodable {
            let message: String
            let code: Int?
        }
        let error: Detail
    }

    /// Generates from a plain prompt; `onToken(id, text)` gets each plain id and the text it
    /// completes. Returns the plain ids (without the stop token). Greedy and seeded sampling give
    /// exactly the tokens of the plain model run locally.
    @discardableResult
    public func generate(
        prompt: String, parameters: GenerationParameters = .init(),
        onToken: @escaping @Sendable (Int, String) -> Void = { _, _ in }
    ) async throws -> [Int] {
        let ids = try half.tokenizer.encode(prompt)
        guard !ids.isEmpty else { throw EngineClientError(status: 0, message: "the prompt is empty") }
        let stops = parameters.stopTokens ?? half.defaultStops
        let half = self.half
        let outcome = Outcome()
        var config = WebSocketClientConfiguration(maxFrameSize: 1 << 20)
        if let key = client.apiKey { config.additionalHeaders[.authorization] = "Bearer \(key)" }
        let url = "ws" + client.baseURL.dropFirst(4) + "/v1/encrypted/split"
        let logger = Logger(label: "engine.split-client")
        try await WebSocketClient.connect(url: url, configuration: config, logger: logger) { inbound, outbound, _ in
            do {
                var messages = inbound.messages(maxSize: 1 << 24).makeAsyncIterator()
                guard case .text(let t)? = try await messages.next(),
                    let hello = try? JSONDecoder().decode(Hello.self, from: Data(t.utf8))
                else { throw EngineClientError(status: 0, message: "the server did not open a split session") }
                guard hello.dim == half.config.dim, hello.key_check == half.keyCheck else {
                    throw EngineClientError(status: 0, message: "the split session is for another model or key")
                }
                guard ids.count < hello.context else {
                    throw EngineClientError(
                        status: 0, message: "the prompt has \(ids.count) tokens but the context holds \(hello.context)")
                }
                func run(_ chunk: [Int]) async throws -> [Float] {
                    let x = try half.inputs(chunk)
                    var b = ByteBuffer()
                    b.reserveCapacity(x.count * 4)
                    for v in x { b.writeInteger(v.bitPattern, endianness: .little) }
                    try await outbound.write(.binary(b))
                    switch try await messages.next() {
                    case .binary(var r)?:
                        guard r.readableBytes == hello.dim * 4 else {
                            throw EngineClientError(status: 0, message: "the server sent \(r.readableBytes) bytes")
                        }
                        return (0..<hello.dim).map { _ in
                            Float(bitPattern: r.readInteger(endianness: .little, as: UInt32.self)!)
                        }
                    case .text(let t)?:
                        let e = try? JSONDecoder().decode(ErrorBody.self, from: Data(t.utf8))
                        throw EngineClientError(status: e?.error.code ?? 0, message: e?.error.message ?? t)
                    case nil:
                        throw EngineClientError(status: 0, message: "the server closed the split session")
                    }
                }
                // The prompt, in messages of at most max_message_bytes.
                let rows = max(1, hello.max_message_bytes / (4 * hello.dim))
                var state: [Float] = []
                for c0 in stride(from: 0, to: ids.count, by: rows) {
                    state = try await run(Array(ids[c0..<min(ids.count, c0 + rows)]))
                }
                var sampler = try Sampler(parameters)
                var out: [Int] = []
                var pending: [UInt8] = []
                var position = ids.count
                while out.count < parameters.maxTokens {
                    let next = sampler.next(try half.logits(finalState: state))
                    out.append(next)
                    if stops.contains(next) { break }
                    pending += half.tokenizer.bytes(of: next)
                    if let s = String(validating: pending, as: UTF8.self) {
                        onToken(next, s)
                        pending = []
                    }
                    if position >= hello.context || out.count >= parameters.maxTokens { break }
                    state = try await run([next])
                    position += 1
                }
                if !pending.isEmpty { onToken(out.last ?? 0, String(decoding: pending, as: UTF8.self)) }
                outcome.set(.success(out.last.map { stops.contains($0) } == true ? Array(out.dropLast()) : out))
                try await outbound.close(.normalClosure, reason: nil)
            } catch {
                outcome.set(.failure(error))
                try? await outbound.close(.normalClosure, reason: nil)
            }
        }
        guard let r = outcome.result else {
            throw EngineClientError(
                status: 0, message: "the split session ended before generation finished (refused or closed)")
        }
        return try r.get()
    }
}

/// The result of the WebSocket handler, handed out under a lock.
final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Result<[Int], any Error>?
    func set(_ r: Result<[Int], any Error>) { lock.withLock { value = r } }
    var result: Result<[Int], any Error>? { lock.withLock { value } }
}
