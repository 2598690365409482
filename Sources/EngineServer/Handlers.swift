import Crypto
import Engine
import Foundation
import Hummingbird

func sha256(_ bytes: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: bytes)) }

/// Turns generated token ids into text: UTF-8 sequences split across tokens are held back until
/// complete, and text that could be the start of a stop string is held back until it is not.
struct TextAssembler {
    let tokenizer: BPETokenizer
    let stopStrings: [String]
    private var pendingBytes: [UInt8] = []
    private(set) var text = ""
    private var emitted = 0 // characters of `text` already handed out
    private(set) var stopped = false

    init(tokenizer: BPETokenizer, stopStrings: [String]) {
        self.tokenizer = tokenizer
        self.stopStrings = stopStrings
    }

    /// Adds a token; returns the text that can be sent now (may be empty).
    mutating func add(_ id: Int) -> String {
        pendingBytes += tokenizer.bytes(of: id)
        guard let s = String(validating: pendingBytes, as: UTF8.self) else { return "" }
        pendingBytes = []
        text += s
        return release(final: false)
    }

    /// The rest at the end of generation.
    mutating func finish() -> String {
        if !pendingBytes.isEmpty {
            text += String(decoding: pendingBytes, as: UTF8.self)
            pendingBytes = []
        }
        return release(final: true)
    }

    private mutating func release(final: Bool) -> String {
        if !stopped, let cut = stopStrings.compactMap({ text.range(of: $0)?.lowerBound }).min() {
            text = String(text[..<cut])
            stopped = true
        }
        var end = text.count
        if !stopped && !final, let longest = stopStrings.map(\.count).max(), longest > 1 {
            end = max(emitted, text.count - (longest - 1))
        }
        guard end > emitted else { return "" }
        let start = text.index(text.startIndex, offsetBy: emitted)
        let stop = text.index(text.startIndex, offsetBy: end)
        emitted = end
        return String(text[start..<stop])
    }
}

/// Server-sent events: `data: <json>\n\n`, ending with `data: [DONE]\n\n`.
func sseEvent<T: Encodable>(_ value: T) -> ByteBuffer {
    let data = (try? JSONEncoder().encode(value)) ?? Data("{}".utf8)
    var b = ByteBuffer(string: "data: ")
    b.writeBytes(data)
    b.writeString("\n\n")
    return b
}

let sseHeaders: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache"]

extension EngineServer {
    // MARK: generation

    func stopStrings(_ s: StringOrArray?) throws -> [String] {
        let v = s?.values ?? []
        guard v.count <= 4 else { throw APIError.badRequest("at most 4 stop strings, got \(v.count)") }
        for x in v where x.isEmpty || x.count > 256 {
            throw APIError.badRequest("stop strings must have 1...256 characters")
        }
        return v
    }

    func completions(_ req: Request) async throws -> Response {
        let r = try await decode(CompletionRequest.self, req)
        let d = try requireDecoder(named: r.model, encrypted: false)
        let text = d.text!
        if r.logprobs != nil { throw APIError.badRequest("logprobs are not supported") }
        if r.echo == true { throw APIError.badRequest("echo is not supported") }
        let prompts = r.prompt.values
        guard prompts.count == 1 else { throw APIError.badRequest("one prompt per request, got \(prompts.count)") }
        let ids = try text.tokenizer.encode(prompts[0])
        return try await generate(
            d, ids: ids, request: r, defaultMaxTokens: 16, stop: try stopStrings(r.stop), chat: false,
            stream: r.stream ?? false, ignoreEOS: r.ignore_eos ?? false)
    }

    func chatCompletions(_ req: Request) async throws -> Response {
        let r = try await decode(ChatCompletionRequest.self, req)
        let d = try requireDecoder(named: r.model, encrypted: false)
        let text = d.text!
        if r.logprobs == true { throw APIError.badRequest("logprobs are not supported") }
        let prompt = try ChatTemplate(source: text.chatTemplate).prompt(
            messages: r.messages.map { (role: $0.role, content: $0.content?.text ?? "") })
        let ids = try text.tokenizer.encode(prompt)
        return try await generate(
            d, ids: ids, request: r, defaultMaxTokens: d.scheduler.context, stop: try stopStrings(r.stop),
            chat: true, stream: r.stream ?? false)
    }

    func generate(
        _ d: Decoder, ids: [Int], request r: some SamplingRequest, defaultMaxTokens: Int, stop: [String], chat: Bool,
        stream: Bool, ignoreEOS: Bool = false
    ) async throws -> Response {
        let text = d.text!
        let ctx = d.scheduler.context
        let stops = ignoreEOS ? [] : text.defaultStops
        let p = try parameters(r, defaultMaxTokens: defaultMaxTokens, context: ctx, stops: stops)
        let events = try d.scheduler.submit(prompt: ids, parameters: p, stops: stops)
        let id = requestID(chat ? "chatcmpl" : "cmpl")
        let created = Int(Date().timeIntervalSince1970)
        let name = d.name
        if !stream {
            var asm = TextAssembler(tokenizer: text.tokenizer, stopStrings: stop)
            var out = ""
            var finished: (FinishReason, Int, Int)?
            var tokens = 0
            for await e in events {
                switch e {
                case .token(let t):
                    tokens += 1
                    out += asm.add(t)
                case .finished(let reason, let pt, let ct): finished = (reason, pt, ct)
                }
                if asm.stopped { break }
            }
            out += asm.finish()
            let reason: String
            let usage: Usage
            if asm.stopped {
                reason = "stop"
                usage = Usage(prompt_tokens: ids.count, completion_tokens: tokens, total_tokens: ids.count + tokens)
            } else if let (fr, pt, ct) = finished {
                reason = fr.rawValue
                usage = Usage(prompt_tokens: pt, completion_tokens: ct, total_tokens: pt + ct)
            } else {
                throw APIError(.internalServerError, "generation failed")
            }
            if chat {
                return try json(
                    ChatCompletionResponse(
                        id: id, created: created, model: name,
                        choices: [.init(message: .init(content: out), finish_reason: reason)], usage: usage))
            }
            return try json(
                CompletionResponse(
                    id: id, created: created, model: name, choices: [.init(text: out, finish_reason: reason)],
                    usage: usage))
        }
        let tokenizer = text.tokenizer
        let body = ResponseBody { writer in
            var asm = TextAssembler(tokenizer: tokenizer, stopStrings: stop)
            func chunk(_ s: String?, _ reason: String?, role: Bool = false) -> ByteBuffer {
                if chat {
                    return sseEvent(
                        ChatChunk(
                            id: id, created: created, model: name,
                            choices: [
                                .init(
                                    delta: .init(role: role ? "assistant" : nil, content: s), finish_reason: reason)
                            ]))
                }
                return sseEvent(
                    CompletionResponse(
                        id: id, created: created, model: name, choices: [.init(text: s ?? "", finish_reason: reason)]))
            }
            if chat { try await writer.write(chunk("", nil, role: true)) }
            var reason: String?
            for await e in events {
                switch e {
                case .token(let t):
                    let s = asm.add(t)
                    if !s.isEmpty { try await writer.write(chunk(s, nil)) }
                case .finished(let r, _, _): reason = r.rawValue
                }
                if asm.stopped {
                    reason = "stop"
                    break
                }
            }
            let rest = asm.finish()
            if !rest.isEmpty { try await writer.write(chunk(rest, nil)) }
            if let reason {
                try await writer.write(chunk(chat ? nil : "", reason))
            } else {
                try await writer.write(sseEvent(["error": ["message": "generation failed", "type": "server_error"]]))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: sseHeaders, body: body)
    }

    func encryptedCompletions(_ req: Request) async throws -> Response {
        let r = try await decode(EncryptedCompletionRequest.self, req)
        let d = try requireDecoder(named: r.model, encrypted: true)
        let vocab = d.model.config.vocab
        let stops = Set(r.stop_ids ?? [])
        guard stops.count <= 64 else { throw APIError.badRequest("at most 64 stop ids, got \(stops.count)") }
        for t in stops where t < 0 || t >= vocab {
            throw APIError.badRequest("stop id \(t) is out of range 0..<\(vocab)")
        }
        let p = try parameters(r, defaultMaxTokens: 16, context: d.scheduler.context, stops: stops)
        let events = try d.scheduler.submit(prompt: r.prompt_ids, parameters: p, stops: stops)
        let id = requestID("enc")
        let created = Int(Date().timeIntervalSince1970)
        let promptCount = r.prompt_ids.count
        if !(r.stream ?? false) {
            var ids: [Int] = []
            var finished: (FinishReason, Int, Int)?
            for await e in events {
                switch e {
                case .token(let t): ids.append(t)
                case .finished(let reason, let pt, let ct): finished = (reason, pt, ct)
                }
            }
            guard let (reason, pt, ct) = finished else { throw APIError(.internalServerError, "generation failed") }
            return try json(
                EncryptedCompletionResponse(
                    id: id, created: created, model: d.name, ids: ids, finish_reason: reason.rawValue,
                    usage: Usage(prompt_tokens: pt, completion_tokens: ct, total_tokens: pt + ct)))
        }
        let body = ResponseBody { writer in
            var done = false
            for await e in events {
                switch e {
                case .token(let t): try await writer.write(sseEvent(EncryptedChunk(id: id, ids: [t])))
                case .finished(let reason, let pt, let ct):
                    done = true
                    try await writer.write(
                        sseEvent(
                            EncryptedChunk(
                                id: id, ids: [], finish_reason: reason.rawValue,
                                usage: Usage(prompt_tokens: pt, completion_tokens: ct, total_tokens: pt + ct))))
                }
            }
            if !done {
                try await writer.write(sseEvent(["error": ["message": "generation failed", "type": "server_error"]]))
            }
            _ = promptCount
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: sseHeaders, body: body)
    }

    // MARK: embeddings

    func embeddings(_ req: Request) async throws -> Response {
        let r = try await decode(EmbeddingRequest.self, req)
        let e = try requireEncoder(named: r.model, encrypted: false)
        let inputs = r.input.values
        guard (1...options.maxInputs).contains(inputs.count) else {
            throw APIError.badRequest("input must hold 1...\(options.maxInputs) strings, got \(inputs.count)")
        }
        let format = r.encoding_format ?? "float"
        guard format == "float" || format == "base64" else {
            throw APIError.badRequest("encoding_format must be float or base64, got \(format)")
        }
        let tok = try e.model.tokenizer
        let ids = inputs.map { tok.encode($0) }
        let vectors = try await e.batcher.embed(ids: ids)
        let dim = e.model.config.hiddenSize
        let tokens = ids.reduce(0) { $0 + $1.count }
        let data = (0..<inputs.count).map { i -> EmbeddingResponse.Item in
            let v = Array(vectors[(i * dim)..<((i + 1) * dim)])
            return .init(index: i, embedding: format == "base64" ? .base64(v) : .floats(v))
        }
        return try json(
            EmbeddingResponse(
                data: data, model: e.name, usage: .init(prompt_tokens: tokens, total_tokens: tokens)))
    }

    func encryptedEmbeddings(_ req: Request) async throws -> Response {
        let r = try await decode(EncryptedEmbeddingRequest.self, req)
        let e = try requireEncoder(named: r.model, encrypted: true)
        guard (1...options.maxInputs).contains(r.input_ids.count) else {
            throw APIError.badRequest(
                "input_ids must hold 1...\(options.maxInputs) sequences, got \(r.input_ids.count)")
        }
        let vectors = try await e.batcher.embed(ids: r.input_ids)
        let dim = e.model.config.hiddenSize
        let tokens = r.input_ids.reduce(0) { $0 + $1.count }
        let data = (0..<r.input_ids.count).map {
            EmbeddingResponse.Item(index: $0, embedding: .floats(Array(vectors[($0 * dim)..<(($0 + 1) * dim)])))
        }
        return try json(
            EmbeddingResponse(
                data: data, model: e.name, usage: .init(prompt_tokens: tokens, total_tokens: tokens)))
    }

    // MARK: search

    func openIndex(_ ctx: BasicRequestContext) throws -> OpenIndex {
        let name = ctx.parameters.get("name") ?? ""
        guard let i = indexes[name] else {
            throw APIError.notFound(
                "index \(name.debugDescription) not found; this server has \(indexes.keys.sorted())")
        }
        return i
    }

    func indexStats(_ ctx: BasicRequestContext) throws -> Response {
        let o = try openIndex(ctx)
        let i = o.index
        return try json(
            IndexStatsResponse(
                name: o.name, dimension: i.dim, metric: i.metric.rawValue, payload: i.payload.rawValue, count: i.count,
                inserted: i.insertedCount, deleted: i.tombstoneCount, lists: i.heads, ram_bytes: i.ramBytes,
                disk_bytes: i.diskBytes, writable: i.writable,
                calibration: i.calibration))
    }

    /// Vectors from a request: given, or text embedded by the plain embedding model.
    func vectors(_ given: [[Float]]?, texts: [String]?, dim: Int) async throws -> [[Float]] {
        if let given, texts == nil {
            guard (1...options.maxInputs).contains(given.count) else {
                throw APIError.badRequest("give 1...\(options.maxInputs) vectors, got \(given.count)")
            }
            for (i, v) in given.enumerated() where v.count != dim {
                throw APIError.badRequest("vector \(i) has \(v.count) values; the index holds \(dim)-d vectors")
            }
            for (i, v) in given.enumerated() where !v.allSatisfy(\.isFinite) {
                throw APIError.badRequest("vector \(i) has a non-finite value")
            }
            return given
        }
        guard let texts, given == nil else { throw APIError.badRequest("give either vectors or text, not both") }
        guard (1...options.maxInputs).contains(texts.count) else {
            throw APIError.badRequest("give 1...\(options.maxInputs) texts, got \(texts.count)")
        }
        let e = try requireEncoder(named: nil, encrypted: false)
        guard e.model.config.hiddenSize == dim else {
            throw APIError.badRequest(
                "the embedding model makes \(e.model.config.hiddenSize)-d vectors; the index holds \(dim)-d vectors")
        }
        let tok = try e.model.tokenizer
        let flat = try await e.batcher.embed(ids: texts.map { tok.encode($0) })
        return (0..<texts.count).map { Array(flat[($0 * dim)..<(($0 + 1) * dim)]) }
    }

    func search(_ req: Request, _ ctx: BasicRequestContext) async throws -> Response {
        let o = try openIndex(ctx)
        let r = try await decode(SearchRequest.self, req)
        let given: [[Float]]? =
            switch (r.vector, r.vectors) {
            case (let v?, nil): [v]
            case (nil, let v?): v
            case (nil, nil): nil
            default: throw APIError.badRequest("give vector or vectors, not both")
            }
        let queries = try await vectors(given, texts: r.text?.values, dim: o.index.dim)
        let k = r.k ?? 10
        guard (1...Limits.neighbors).contains(k) else {
            throw APIError.badRequest("k must be in 1...\(Limits.neighbors), got \(k)")
        }
        var p = HybridSearchParameters()
        if let n = r.nprobe {
            guard r.target_recall == nil else { throw APIError.badRequest("give nprobe or target_recall, not both") }
            guard (1...max(1, o.index.heads)).contains(n) else {
                throw APIError.badRequest("nprobe must be in 1...\(o.index.heads) (the index's lists), got \(n)")
            }
            p = HybridSearchParameters(nprobe: n)
        }
        if let t = r.target_recall {
            guard t.isFinite, (0...1).contains(t) else {
                throw APIError.badRequest("target_recall must be in 0...1, got \(t)")
            }
            guard o.index.calibration != nil else {
                throw APIError.badRequest("the index has no calibration table (built before format 2): give nprobe")
            }
            p.targetRecall = t
        }
        if let allow = r.allow {
            guard allow.count <= 1 << 20 else { throw APIError.badRequest("at most 2^20 allowed ids") }
            let set = Set(allow)
            p.filter = { set.contains($0) }
        }
        let params = p
        let index = o.index
        let results = try await blocking {
            try queries.map { q in try index.search(q, k: k, parameters: params).neighbors }
        }
        return try json(
            SearchResponse(results: results.map { $0.map { .init(id: $0.id, distance: $0.distance) } }))
    }

    func insert(_ req: Request, _ ctx: BasicRequestContext) async throws -> Response {
        let o = try openIndex(ctx)
        guard o.index.writable else { throw APIError(.forbidden, "index \(o.name) is read-only on this server") }
        let r = try await decode(InsertRequest.self, req)
        let v = try await vectors(r.vectors, texts: r.texts, dim: o.index.dim)
        guard r.ids.count == v.count else {
            throw APIError.badRequest("\(r.ids.count) ids for \(v.count) vectors")
        }
        guard Set(r.ids).count == r.ids.count else { throw APIError.badRequest("ids repeat within the request") }
        let flat = v.flatMap { $0 }
        try await blocking { try o.lock.withLock { try o.index.insert(vectors: flat, ids: r.ids) } }
        return try json(["inserted": r.ids.count])
    }

    func delete(_ req: Request, _ ctx: BasicRequestContext) async throws -> Response {
        let o = try openIndex(ctx)
        guard o.index.writable else { throw APIError(.forbidden, "index \(o.name) is read-only on this server") }
        let r = try await decode(DeleteRequest.self, req)
        guard (1...(1 << 20)).contains(r.ids.count) else {
            throw APIError.badRequest("give 1...1048576 ids, got \(r.ids.count)")
        }
        try await blocking { try o.lock.withLock { try o.index.delete(r.ids) } }
        return try json(["deleted": r.ids.count])
    }
}
