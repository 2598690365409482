import Engine
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore

/// The split-encryption endpoint, `GET /v1/encrypted/split` upgraded to a WebSocket. One
/// connection is one sequence with its own KV cache on the server half of a split-encrypted
/// model. Protocol (docs/architecture.md, "Split mode over a WebSocket"):
///
/// 1. The server sends a text message `{"object": "split.session", "dim": D, "context": N,
///    "key_check": "...", "max_message_bytes": M}`.
/// 2. The client sends binary messages, each T x D little-endian f32 rotated input vectors (T >= 1,
///    at most M bytes); they run at the sequence's next T positions. For each, the server answers
///    one binary message: the rotated final state of the last of them (D f32 values). A prompt
///    longer than M bytes goes in several messages (the client ignores the intermediate answers).
/// 3. A text message `{"type": "reset"}` starts a new sequence on the same connection.
///
/// A malformed message (size not a multiple of D x 4, NaN, past the context, unknown control)
/// is answered with a text message `{"error": {"message", "type", "code"}}` and the connection
/// is closed (code 1008 policy violation, or 1009 when the message is too big). Logs and metrics
/// record sizes and counts, never a vector.
extension EngineServer {
    /// Largest message a split client may send (the request body limit).
    var splitMaxMessageBytes: Int { options.maxBodyBytes }

    /// Whether to upgrade a request: only `/v1/encrypted/split`, with a split model loaded, the
    /// bearer token when one is required, and a free session. Anything else goes on to the HTTP
    /// router, whose routes and middleware answer it (404, 401, or the refusal below).
    func shouldUpgrade(_ request: HTTPRequest) -> ShouldUpgradeResult<
        WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>
    > {
        guard request.path?.split(separator: "?").first == "/v1/encrypted/split",
            let d = decoder, d.split,
            auth?.accepts(request.headerFields[.authorization]) ?? true,
            splitSessions.acquire(limit: options.parallel)
        else { return .dontUpgrade }
        return .upgrade([:]) { inbound, outbound, _ in
            defer { self.splitSessions.release() }
            try await self.splitSession(
                d.model, context: d.scheduler.context, kvCache: d.scheduler.kvCache, inbound: inbound,
                outbound: outbound)
        }
    }

    /// Why `/v1/encrypted/split` was not upgraded (the router's answer to a plain GET).
    func splitRefusal(_ request: Request) -> APIError {
        guard decoder?.split == true else {
            return .notFound("this server has no split-encrypted model (start it with --model <server half>.gguf)")
        }
        if request.headers[.upgrade]?.lowercased() != "websocket" {
            return APIError(.upgradeRequired, "connect with a WebSocket client (Upgrade: websocket)")
        }
        return APIError(
            .serviceUnavailable, "all \(options.parallel) split sessions are in use; retry later", retryAfter: 1)
    }

    struct SplitHello: Encodable {
        let object = "split.session"
        let dim: Int
        let context: Int
        let key_check: String?
        let max_message_bytes: Int
    }

    func splitSession(
        _ model: LlamaModel, context: Int, kvCache: KVCacheConfig, inbound: WebSocketInboundStream,
        outbound: WebSocketOutboundWriter
    ) async throws {
        let d = model.config.dim
        let steps = Counter(label: "engine_split_messages_total")
        let hello = SplitHello(
            dim: d, context: context, key_check: model.keyCheck, max_message_bytes: splitMaxMessageBytes)
        try await outbound.write(.text(String(decoding: try JSONEncoder().encode(hello), as: UTF8.self)))
        var cache = try model.makeCache(capacity: context, config: kvCache)
        do {
            for try await message in inbound.messages(maxSize: splitMaxMessageBytes) {
                switch message {
                case .text(let t):
                    struct Control: Decodable { let type: String }
                    guard let c = try? JSONDecoder().decode(Control.self, from: Data(t.utf8)), c.type == "reset" else {
                        throw APIError.badRequest(#"unknown control message; the only one is {"type": "reset"}"#)
                    }
                    cache = try model.makeCache(capacity: context, config: kvCache)
                case .binary(let buffer):
                    let x = try Self.vectors(buffer, dim: d)
                    let rows = x.count / d
                    guard cache.length + rows <= cache.capacity else {
                        throw APIError.badRequest(
                            "\(cache.length + rows) positions exceed the context of \(cache.capacity)")
                    }
                    let c = cache
                    let h = try await blocking { try model.forwardHidden(x, cache: c) }
                    var out = ByteBuffer()
                    out.reserveCapacity(d * 4)
                    for v in h[(h.count - d)...] { out.writeInteger(v.bitPattern, endianness: .little) }
                    try await outbound.write(.binary(out))
                    steps.increment()
                }
            }
        } catch {
            let tooBig = "\(error)".contains("messageTooLarge")
            let e =
                tooBig
                ? APIError(.contentTooLarge, "a message is larger than \(splitMaxMessageBytes) bytes")
                : APIError.from(error)
            let body = try JSONEncoder().encode(
                APIErrorBody(error: .init(message: e.message, type: e.type, code: Int(e.status.code))))
            logger.info("split session closed: \(e.status.code) \(e.message)")
            try? await outbound.write(.text(String(decoding: body, as: UTF8.self)))
            try? await outbound.close(tooBig ? .messageTooLarge : .policyViolation, reason: nil)
        }
    }

    /// T x dim little-endian f32 values of a binary message, checked (whole rows, finite).
    static func vectors(_ buffer: ByteBuffer, dim d: Int) throws -> [Float] {
        let n = buffer.readableBytes
        guard n > 0 && n % (4 * d) == 0 else {
            throw APIError.badRequest(
                "a message holds T x \(d) f32 values (a multiple of \(4 * d) bytes), got \(n) bytes")
        }
        var b = buffer
        var x = [Float](repeating: 0, count: n / 4)
        for i in 0..<x.count {
            let bits: UInt32 = b.readInteger(endianness: .little)!
            let v = Float(bitPattern: bits)
            guard v.isFinite else { throw APIError.badRequest("input vector value \(i) is not finite") }
            x[i] = v
        }
        return x
    }
}

/// Open sessions against a limit.
final class SessionCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var open = 0

    func acquire(limit: Int) -> Bool {
        lock.withLock {
            guard open < limit else { return false }
            open += 1
            return true
        }
    }

    func release() { lock.withLock { open -= 1 } }
}
