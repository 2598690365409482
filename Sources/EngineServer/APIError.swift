import Engine
import Foundation
import Hummingbird
import NIOCore

/// An error answered to the client as `{"error": {"message", "type", "code"}}` (OpenAI's shape)
/// with an HTTP status. Every refusal of a request goes through it, so a client always gets a
/// JSON body that says what was wrong.
public struct APIError: Error, HTTPResponseError, CustomStringConvertible {
    /// The HTTP status.
    public let status: HTTPResponse.Status
    /// What was wrong, for a person.
    public let message: String
    /// OpenAI's error type (`invalid_request_error`, `authentication_error`, `server_error`, ...).
    public let type: String
    /// Seconds after which a refused request may be retried (overload).
    public let retryAfter: Int?

    /// An error with a status, message and type.
    public init(_ status: HTTPResponse.Status, _ message: String, type: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? (status.code >= 500 ? "server_error" : "invalid_request_error")
        self.retryAfter = retryAfter
    }

    /// A 400 Bad Request.
    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, message) }
    /// A 404 Not Found.
    public static func notFound(_ message: String) -> APIError { APIError(.notFound, message) }

    /// The status and message.
    public var description: String { "\(status.code) \(message)" }

    /// The JSON response.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let data = try JSONEncoder().encode(
            APIErrorBody(error: .init(message: message, type: type, code: Int(status.code))))
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: data)))
    }

    /// The API error for any error a handler throws: library errors about the request's content
    /// are 400, failures of the server's own files or system are 500; Hummingbird's own errors
    /// (no such route, body too large) keep their status.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let e as APIError: return e
        case let e as HTTPError:
            return APIError(e.status, e.body ?? e.status.reasonPhrase)
        case let e as EngineError:
            switch e {
            case .invalidArgument, .nonFinite, .unsupported: return .badRequest(e.description)
            case .invalidFile, .io, .linearAlgebra, .unsupportedISA:
                return APIError(.internalServerError, e.description)
            }
        case is NIOTooManyBytesError:
            return APIError(.contentTooLarge, "the request body is larger than this server accepts (--max-body-bytes)")
        case let e as DecodingError:
            return .badRequest("malformed request body: \(describe(e))")
        default:
            return APIError(.internalServerError, "\(error)")
        }
    }

    /// A decoding error in one line, naming the field.
    static func describe(_ e: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at \(p)"
        }
        switch e {
        case .typeMismatch(let t, let c): return "expected \(t)\(path(c))"
        case .valueNotFound(let t, let c): return "missing \(t) value\(path(c))"
        case .keyNotFound(let k, let c): return "missing field \(k.stringValue)\(path(c))"
        case .dataCorrupted(let c):
            return "\(c.debugDescription)\(path(c))"
        @unknown default: return "\(e)"
        }
    }
}

/// The JSON of an `APIError`.
struct APIErrorBody: Codable {
    struct Inner: Codable {
        let message: String
        let type: String
        let code: Int
    }
    let error: Inner
}

/// Turns every error a handler or Hummingbird throws into an `APIError` JSON response.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do { return try await next(request, context) } catch { throw APIError.from(error) }
    }
}
