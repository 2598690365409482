import Engine
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// Settings of `engine serve`. Defaults are what `engine serve --help` prints.
public struct ServerOptions: Sendable {
    /// Address to bind (loopback unless told otherwise).
    public var host = "127.0.0.1"
    /// Port (0: any free port; the chosen one is printed).
    public var port = 8080
    /// Bearer token required on every endpoint but `/health` (nil: no authentication).
    public var apiKey: String?
    /// A decoder GGUF (plain or encrypted).
    public var model: String?
    /// A BERT model directory (plain or encrypted).
    public var embeddingModel: String?
    /// Hybrid indexes by name.
    public var indexes: [(name: String, directory: String)] = []
    /// Open indexes for inserts and deletes.
    public var writableIndexes = true
    /// Sequences decoded together (continuous batching).
    public var parallel = 4
    /// Requests that may wait for a slot; more are answered 503 with Retry-After.
    public var queueLimit = 64
    /// Largest request body.
    public var maxBodyBytes = 8 << 20
    /// Most inputs in one embedding or search request.
    public var maxInputs = 2048
    /// Positions one sequence may use, prompt and generation (nil: the model's context). Bounds
    /// each sequence's KV cache memory.
    public var context: Int?
    /// Most prompt tokens one decode step carries (chunked prefill: running streams wait at most
    /// one chunk's time per step for a new prompt).
    public var prefillChunk = 128
    /// Type of every sequence's KV cache (and of split sessions).
    public var kvCache: KVCacheConfig = .f32
    /// Largest `max_tokens` a request may ask for (nil: the model's context).
    public var maxTokensLimit: Int?
    /// Kernel threads.
    public var threads = Threads.defaultCount
    /// Shut down when the parent process exits (for supervisors).
    public var exitWithParent = false
    /// Called once the server listens, with the bound port.
    public var onListening: (@Sendable (Int) -> Void)? = nil

    /// Defaults.
    public init() {}
}

/// The loaded models and indexes and the HTTP service over them (`engine serve`).
public final class EngineServer: @unchecked Sendable {
    let options: ServerOptions
    let kernels: Kernels
    let logger: Logger
    let registry: PrometheusCollectorRegistry

    /// A loaded decoder.
    struct Decoder {
        let name: String
        let model: LlamaModel
        /// Tokenizer and template of a plain model; nil for an encrypted one.
        let text: TextGenerator?
        let scheduler: GenerationScheduler
        /// The server half of a split-encrypted model: served over the WebSocket only.
        let split: Bool
        var encrypted: Bool { text == nil }
    }

    /// A loaded encoder.
    struct Encoder {
        let name: String
        let model: BertModel
        let batcher: EmbeddingBatcher
        var encrypted: Bool { model.textTokenizer == nil }
    }

    /// An open index; writes are serialised by `lock`.
    final class OpenIndex: @unchecked Sendable {
        let name: String
        let index: HybridIndex
        let lock = NSLock()
        init(name: String, index: HybridIndex) {
            self.name = name
            self.index = index
        }
    }

    let decoder: Decoder?
    let encoder: Encoder?
    /// Bearer authentication (nil: none), shared by the HTTP routes and the WebSocket upgrade.
    let auth: BearerAuthMiddleware<BasicRequestContext>?
    /// Open split sessions (at most `options.parallel`).
    let splitSessions = SessionCounter()
    let indexes: [String: OpenIndex]
    let created = Int(Date().timeIntervalSince1970)

    /// Loads everything `options` names; throws on a missing or invalid file before anything listens.
    public init(options: ServerOptions) throws {
        self.options = options
        auth = options.apiKey.map { BearerAuthMiddleware(key: $0) }
        kernels = try Kernels.selected(threads: options.threads)
        configureThreads(options.threads)
        var log = Logger(label: "engine.serve")
        log.logLevel = .info
        logger = log
        registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        guard options.model != nil || options.embeddingModel != nil || !options.indexes.isEmpty else {
            throw EngineError.invalidArgument("nothing to serve: give --model, --embedding-model or --index")
        }
        if let path = options.model {
            let f = try GGUFFile(path: path)
            let model = try LlamaModel(gguf: f, kernels: kernels)
            let split: Bool
            if case .bool(true)? = f.metadata["engine.split"] { split = true } else { split = false }
            var text: TextGenerator?
            if model.keyCheck == nil {
                text = TextGenerator(
                    model: model, tokenizer: try BPETokenizer(gguf: f),
                    chatTemplate: f.metadata["tokenizer.chat_template"]?.string)
            }
            let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
            let scheduler = GenerationScheduler(
                model: model, slots: options.parallel, queueLimit: options.queueLimit, context: options.context,
                prefillChunk: options.prefillChunk, kvCache: options.kvCache)
            try options.kvCache.validate(context: scheduler.context, headDim: model.config.headDim)
            decoder = Decoder(name: name, model: model, text: text, scheduler: scheduler, split: split)
        } else {
            decoder = nil
        }
        if let dir = options.embeddingModel {
            let model = try BertModel(directory: dir, kernels: kernels)
            let name = URL(fileURLWithPath: dir).standardizedFileURL.lastPathComponent
            encoder = Encoder(
                name: name == "model" ? URL(fileURLWithPath: dir).deletingLastPathComponent().lastPathComponent : name,
                model: model, batcher: EmbeddingBatcher(model: model, queueLimit: options.queueLimit * 4))
        } else {
            encoder = nil
        }
        var open: [String: OpenIndex] = [:]
        for (name, dir) in options.indexes {
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw EngineError.invalidArgument("index name \(name.debugDescription): use letters, digits, - _ .")
            }
            guard open[name] == nil else { throw EngineError.invalidArgument("index name \(name) given twice") }
            open[name] = OpenIndex(
                name: name,
                index: try HybridIndex(directory: dir, io: .pread, writable: options.writableIndexes, kernels: kernels))
        }
        indexes = open
    }

    /// What is loaded, one line each (printed at start).
    public var summary: [String] {
        var s: [String] = []
        if let d = decoder {
            s.append(
                "model \(d.name): \(d.split ? "split-encrypted" : d.encrypted ? "encrypted" : "plain") decoder, "
                    + "\(d.model.config.layers) layers, "
                    + "context \(d.scheduler.context), \(options.parallel) slots")
        }
        if let e = encoder {
            s.append(
                "embedding model \(e.name): \(e.encrypted ? "encrypted" : "plain") encoder, "
                    + "d = \(e.model.config.hiddenSize)"
            )
        }
        for (n, i) in indexes.sorted(by: { $0.key < $1.key }) {
            s.append("index \(n): \(i.index.count) vectors, d = \(i.index.dim), \(i.index.payload.rawValue)")
        }
        return s
    }

    /// Serves until SIGTERM or SIGINT (graceful: running requests finish), or until the parent
    /// process exits with `exitWithParent`.
    public func run() async throws {
        decoder?.scheduler.start()
        encoder?.batcher.start()
        defer {
            decoder?.scheduler.shutdown()
            encoder?.batcher.shutdown()
        }
        let router = Router()
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: LogRequestsMiddleware(.info))
        if let auth { router.add(middleware: auth) }
        routes(router)
        let onListening = options.onListening
        let host = options.host
        let logger = self.logger
        let app = Application(
            router: router,
            server: .http1WebSocketUpgrade(
                configuration: .init(ws: .init(maxFrameSize: options.maxBodyBytes)),
                shouldUpgrade: { request, _, _ in self.shouldUpgrade(request) }),
            configuration: .init(address: .hostname(host, port: options.port), serverName: "engine"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("listening on http://\(host):\(port)")
                onListening?(port)
            },
            logger: logger)
        if options.exitWithParent {
            let parent = getppid()
            let t = Thread {
                // a supervisor that dies must not leave the server behind: poll for re-parenting
                while getppid() == parent { usleep(200_000) }
                kill(getpid(), SIGTERM)
            }
            t.start()
        }
        try await app.runService()
    }

    // MARK: routes

    func routes(_ router: Router<BasicRequestContext>) {
        router.get("/health") { _, _ in try self.json(["status": "ok"]) }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: self.registry.emitToString())))
        }
        router.get("/v1/models") { _, _ in try self.json(self.modelList()) }
        router.post("/v1/completions") { req, ctx in try await self.completions(req) }
        router.post("/v1/chat/completions") { req, ctx in try await self.chatCompletions(req) }
        router.post("/v1/embeddings") { req, ctx in try await self.embeddings(req) }
        router.post("/v1/encrypted/completions") { req, ctx in try await self.encryptedCompletions(req) }
        router.post("/v1/encrypted/embeddings") { req, ctx in try await self.encryptedEmbeddings(req) }
        // Reached only when the WebSocket upgrade was refused: says why.
        router.get("/v1/encrypted/split") { req, _ -> Response in throw self.splitRefusal(req) }
        router.get("/v1/indexes") { _, _ in try self.json(["indexes": self.indexes.keys.sorted()]) }
        router.get("/v1/indexes/{name}") { req, ctx in try self.indexStats(ctx) }
        router.post("/v1/indexes/{name}/search") { req, ctx in try await self.search(req, ctx) }
        router.post("/v1/indexes/{name}/insert") { req, ctx in try await self.insert(req, ctx) }
        router.post("/v1/indexes/{name}/delete") { req, ctx in try await self.delete(req, ctx) }
    }

    func modelList() -> ModelList {
        var m: [ModelList.Model] = []
        if let d = decoder {
            m.append(
                .init(
                    id: d.name, created: created,
                    kind: d.split ? "encrypted-split" : d.encrypted ? "encrypted-generation" : "generation",
                    key_check: d.model.keyCheck))
        }
        if let e = encoder {
            m.append(
                .init(
                    id: e.name, created: created, kind: e.encrypted ? "encrypted-embedding" : "embedding",
                    key_check: e.model.config.engineKeyCheck, encryption: e.model.config.engineEncryption))
        }
        return ModelList(data: m)
    }

    // MARK: helpers

    func decode<T: Decodable>(_ type: T.Type, _ req: Request) async throws -> T {
        var req = req
        let buffer = try await req.collectBody(upTo: options.maxBodyBytes)
        let data = Data(buffer.readableBytesView)
        guard !data.isEmpty else { throw APIError.badRequest("the request has no body (expected JSON)") }
        do { return try JSONDecoder().decode(T.self, from: data) } catch let e as DecodingError {
            throw APIError.badRequest("malformed request body: \(APIError.describe(e))")
        }
    }

    func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try JSONEncoder().encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    func requireDecoder(named: String?, encrypted: Bool) throws -> Decoder {
        guard let d = decoder else {
            throw APIError.notFound("this server has no generation model (start it with --model)")
        }
        if let named, named != d.name {
            throw APIError.notFound(
                "model \(named.debugDescription) not found; this server has \(d.name.debugDescription)")
        }
        if d.split {
            throw APIError.badRequest(
                "model \(d.name) is the server half of a split-encrypted model: connect a WebSocket to "
                    + "/v1/encrypted/split through its client half")
        }
        if d.encrypted && !encrypted {
            throw APIError.badRequest(
                "model \(d.name) is encrypted: send permuted token ids to /v1/encrypted/completions "
                    + "through its key's client"
            )
        }
        if !d.encrypted && encrypted {
            throw APIError.badRequest("model \(d.name) is not encrypted: use /v1/completions or /v1/chat/completions")
        }
        return d
    }

    func requireEncoder(named: String?, encrypted: Bool) throws -> Encoder {
        guard let e = encoder else {
            throw APIError.notFound("this server has no embedding model (start it with --embedding-model)")
        }
        if let named, named != e.name {
            throw APIError.notFound(
                "model \(named.debugDescription) not found; this server embeds with \(e.name.debugDescription)")
        }
        if e.encrypted && !encrypted {
            throw APIError.badRequest(
                "embedding model \(e.name) is encrypted: use /v1/encrypted/embeddings with permuted ids")
        }
        if !e.encrypted && encrypted {
            throw APIError.badRequest("embedding model \(e.name) is not encrypted: use /v1/embeddings")
        }
        return e
    }

    /// Sampling settings from a request, checked (OpenAI's defaults: temperature 1, top_p 1).
    func parameters(_ r: some SamplingRequest, defaultMaxTokens: Int, context: Int, stops: Set<Int>?) throws
        -> GenerationParameters
    {
        if let n = r.n, n != 1 { throw APIError.badRequest("n must be 1 (one choice per request), got \(n)") }
        let limit = min(context, options.maxTokensLimit ?? context)
        let maxTokens = r.max_completion_tokens ?? r.max_tokens ?? min(defaultMaxTokens, limit)
        guard (0...limit).contains(maxTokens) else {
            throw APIError.badRequest(
                "max_tokens must be in 0...\(limit) (\(limit == context ? "the model's context" : "--max-tokens")), "
                    + "got \(maxTokens)")
        }
        let temperature = r.temperature ?? 1
        guard temperature.isFinite, (0...100).contains(temperature) else {
            throw APIError.badRequest("temperature must be in 0...100, got \(temperature)")
        }
        let topP = r.top_p ?? 1
        guard topP > 0 && topP <= 1 else { throw APIError.badRequest("top_p must be in (0, 1], got \(topP)") }
        let seed = r.seed.map { UInt64(bitPattern: Int64($0)) } ?? UInt64.random(in: 0...UInt64.max)
        return GenerationParameters(
            maxTokens: maxTokens, temperature: Float(temperature), topP: Float(topP), seed: seed, stopTokens: stops)
    }

    func requestID(_ prefix: String) -> String {
        prefix + "-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
    }

    /// Blocking work (index search, inserts) off the event loops.
    ///
    /// The result travels through a lock rather than the continuation itself: the ordering is the
    /// same, but ThreadSanitizer sees a lock and not the concurrency runtime's atomics.
    func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        let box = ResultBox<T>()
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                box.set(Result { try work() })
                c.resume()
            }
        }
        return try box.take()
    }
}

/// A result handed from one thread to another under a lock.
final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Result<T, any Error>?

    func set(_ r: Result<T, any Error>) { lock.withLock { value = r } }

    func take() throws -> T {
        guard let r = lock.withLock({ value }) else { throw APIError(.internalServerError, "no result") }
        return try r.get()
    }
}

/// Requires `Authorization: Bearer <key>` on every route but `/health`; the comparison takes the
/// same time whatever the token (SHA-256 of both, compared without early exit).
struct BearerAuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let digest: [UInt8]

    init(key: String) { digest = sha256(Array(key.utf8)) }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        if request.uri.path == "/health" { return try await next(request, context) }
        guard let h = request.headers[.authorization], h.hasPrefix("Bearer ") else {
            throw APIError(
                .unauthorized, "missing bearer token (Authorization: Bearer <key>)", type: "authentication_error")
        }
        guard accepts(h) else { throw APIError(.unauthorized, "invalid bearer token", type: "authentication_error") }
        return try await next(request, context)
    }

    /// Whether an Authorization header value carries the key (constant time in the key's content).
    func accepts(_ header: String?) -> Bool {
        guard let header, header.hasPrefix("Bearer ") else { return false }
        let given = sha256(Array(header.dropFirst(7).utf8))
        var diff: UInt8 = 0
        for i in 0..<digest.count { diff |= digest[i] ^ given[i] }
        return diff == 0
    }
}
