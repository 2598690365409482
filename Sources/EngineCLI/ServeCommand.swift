import ArgumentParser
import Engine
import EngineServer
import Foundation

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "HTTP service: OpenAI-compatible generation and embeddings, encrypted endpoints, vector search.",
        discussion: """
            Loads any mix of a decoder, an embedding model and indexes, then serves until SIGTERM or \
            SIGINT (requests in flight finish). Prints "listening on http://HOST:PORT" on stdout once \
            it accepts connections. Endpoints: docs/openapi.yaml.
            """)

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port (0: any free port, printed at start).") var port = 8080
    @Option(help: "Decoder GGUF, plain or encrypted.") var model: String?
    @Option(name: .customLong("embedding-model"), help: "BERT model directory, plain or encrypted.")
    var embeddingModel: String?
    @Option(help: "An index as NAME=DIR (repeatable).") var index: [String] = []
    @Flag(name: .customLong("read-only-indexes"), help: "Refuse inserts and deletes.") var readOnlyIndexes = false
    @Option(
        name: .customLong("api-key-file"),
        help: "File holding a bearer token required on every endpoint but /health (at least 16 characters).")
    var apiKeyFile: String?
    @Option(help: "Sequences decoded together (continuous batching).") var parallel = 4
    @Option(name: .customLong("queue"), help: "Requests that may wait for a slot; more get 503 + Retry-After.")
    var queue = 64
    @Option(name: .customLong("max-body-bytes"), help: "Largest request body.") var maxBodyBytes = 8 << 20
    @Option(
        help: "Positions one sequence may use, prompt and output (default: the model's); bounds KV cache memory.")
    var context: Int?
    @Option(
        name: .customLong("prefill-chunk"),
        help: "Most prompt tokens one decode step carries (chunked prefill keeps running streams at pace).")
    var prefillChunk = 128
    @OptionGroup var kv: KVCacheOptions
    @Option(name: .customLong("max-tokens"), help: "Largest max_tokens a request may ask for (default: the context).")
    var maxTokens: Int?
    @Option(parsing: .unconditional, help: "Kernel threads (default: ENGINE_THREADS or all cores).") var threads: Int?
    @Flag(name: .customLong("exit-with-parent"), help: "Shut down when the parent process exits (supervisors).")
    var exitWithParent = false

    func validate() throws {
        try checkEnvironment()
        try checkRange(port, 0...65535, "--port")
        try checkRange(parallel, 1...256, "--parallel")
        try checkRange(queue, 0...100_000, "--queue")
        try checkRange(maxBodyBytes, 1024...(1 << 30), "--max-body-bytes")
        if let maxTokens { try checkRange(maxTokens, 1...Limits.context, "--max-tokens") }
        if let context { try checkRange(context, 1...Limits.context, "--context") }
        try checkRange(prefillChunk, 1...Limits.context, "--prefill-chunk")
        try checkThreads(threads)
        for i in index where !i.contains("=") {
            throw ValidationError("--index takes NAME=DIR, got \(i.debugDescription)")
        }
    }

    func run() async throws {
        var o = ServerOptions()
        o.host = host
        o.port = port
        o.model = model
        o.embeddingModel = embeddingModel
        o.indexes = index.map { s in
            let parts = s.split(separator: "=", maxSplits: 1)
            return (name: String(parts[0]), directory: parts.count > 1 ? String(parts[1]) : "")
        }
        o.writableIndexes = !readOnlyIndexes
        o.parallel = parallel
        o.queueLimit = queue
        o.maxBodyBytes = maxBodyBytes
        o.maxTokensLimit = maxTokens
        o.context = context
        o.prefillChunk = prefillChunk
        o.kvCache = kv.config
        o.threads = threads ?? Threads.defaultCount
        o.exitWithParent = exitWithParent
        if let apiKeyFile {
            guard let data = FileManager.default.contents(atPath: apiKeyFile) else {
                throw ValidationError("cannot read --api-key-file \(apiKeyFile)")
            }
            let key = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard key.count >= 16, !key.contains(where: \.isWhitespace) else {
                throw ValidationError("the API key in \(apiKeyFile) must be one token of at least 16 characters")
            }
            o.apiKey = key
        }
        let host = self.host
        o.onListening = { port in
            // stdout, unbuffered: a supervisor or test reads the port from this line
            FileHandle.standardOutput.write(Data("listening on http://\(host):\(port)\n".utf8))
        }
        let server = try EngineServer(options: o)
        for line in server.summary { note(line) }
        try await server.run()
        note("engine serve: stopped")
    }
}
