import ArgumentParser
import Engine
import EngineClient
import Foundation

struct Embed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sentence (or token) embeddings with a BERT model directory (safetensors + config.json + vocab.txt).")
    @Option(help: "Model directory (default: all-MiniLM-L6-v2 from scripts/fetch_models.sh).") var model: String?
    @Option(help: "Text file, one sentence per line.") var input: String
    @Option(help: "Output file: .fvecs or .npy (float32).") var output: String
    @Flag(help: "Replace an existing output (otherwise an existing file is never replaced).") var force = false
    @Flag(help: "Write every token's vector (rows: tokens of all lines in order) instead of one vector per line.")
    var tokens = false
    @Option(parsing: .unconditional, help: "Threads (default: ENGINE_THREADS or all cores).") var threads: Int?
    @Option(
        help:
            """
            Key file: --model is an encrypted model directory; the plain tokenizer comes from \
            --tokenizer-model; vectors are decrypted.
            """
    ) var key: String?
    @Option(
        name: .customLong("tokenizer-model"),
        help: "Plain model directory holding vocab.txt (with --key; default: MiniLM).") var tokenizerModel: String?

    @Flag(name: .customLong("lossy-utf8"), help: "Replace invalid UTF-8 with U+FFFD instead of refusing the input.")
    var lossyUTF8 = false
    @Option(
        help:
            """
            Embed on an engine serve at this URL instead of in this process; with --key the server \
            holds the encrypted model and sees only permuted ids.
            """)
    var server: String?
    @Option(name: .customLong("api-key-file"), help: "With --server: file holding the server's bearer token.")
    var apiKeyFile: String?

    func validate() throws {
        try checkEnvironment()
        try checkOutput(output, force: force, inputs: [input, model, key, tokenizerModel])
        try checkThreads(threads)
        if let server {
            guard server.hasPrefix("http://") || server.hasPrefix("https://") else {
                throw ValidationError("--server must be an http:// or https:// URL, got \(server.debugDescription)")
            }
            guard model == nil && !tokens else {
                throw ValidationError("--server embeds with the server's model: --model and --tokens do not apply")
            }
        }
    }

    func run() async throws {
        if let server {
            let apiKey = try readAPIKey(apiKeyFile)
            let client = EngineClient(baseURL: server, apiKey: apiKey)
            var encrypted: EncryptedEmbeddingClient?
            if let key {
                encrypted = try await EncryptedEmbeddingClient(
                    client: client, tokenizer: WordPieceTokenizer(directory: tokenizerModel ?? DefaultModels.miniLM),
                    key: EncryptionKey.read(path: key))
            }
            let lines = try readLines(input, lossy: lossyUTF8)
            let clock = Stopwatch()
            var out: [Float] = []
            var d = 0
            // 32 lines per request: the batches a local run makes, so the vectors are the same
            for c in stride(from: 0, to: lines.count, by: 32) {
                let part = Array(lines[c..<min(lines.count, c + 32)])
                let v: [[Float]]
                if let encrypted { v = try await encrypted.embed(part) } else { v = try await client.embeddings(part) }
                d = v.first?.count ?? d
                out += v.flatMap { $0 }
                if lines.count > 1024 && (c / 32) % 32 == 31 { note("embed: \(c + 32)/\(lines.count)") }
            }
            guard d > 0 else { throw ValidationError("\(input) has no lines") }
            try VectorFile.write(out, dim: d, to: output)
            note(
                "wrote \(out.count / d) x \(d) to \(output) (\(lines.count) lines on \(server) in "
                    + "\(fixed(clock.seconds, 2)) s)"
            )
            return
        }
        let n = threads ?? Threads.defaultCount
        configureThreads(n)
        let m = try BertModel(directory: model ?? DefaultModels.miniLM, kernels: Kernels.selected(threads: n))
        var session: EncryptedEncoderSession?
        if let key {
            let k = try EncryptionKey.read(path: key)
            let tok = try WordPieceTokenizer(directory: tokenizerModel ?? DefaultModels.miniLM)
            let s = try EncryptedEncoderSession(tokenizer: tok, server: m, key: k)
            note(
                """
                encrypted model (\(s.mode)): the server sees permuted ids and returns encrypted vectors; client \
                decrypts
                """
            )
            session = s
        }
        let lines = try readLines(input, lossy: lossyUTF8)
        let d = m.config.hiddenSize
        var out: [Float] = []
        let clock = Stopwatch()
        if tokens {
            for line in lines {
                if let session {
                    let x = try m.tokenEmbeddings(ids: session.encryptIDs(session.tokenizer.encode(line)))
                    for r in 0..<(x.count / d) { out += session.decrypt(x[(r * d)..<((r + 1) * d)]) }
                } else {
                    out += try m.tokenEmbeddings(ids: m.tokenizer.encode(line))
                }
            }
        } else {
            let chunk = 1024 // lines per progress message
            for c in stride(from: 0, to: lines.count, by: chunk) {
                let part = Array(lines[c..<min(lines.count, c + chunk)])
                out += try session?.embed(part) ?? m.embed(part)
                if lines.count > chunk { note("embed: \(min(lines.count, c + chunk))/\(lines.count)") }
            }
        }
        try VectorFile.write(out, dim: d, to: output)
        note(
            "wrote \(out.count / d) x \(d) to \(output) (\(lines.count) lines in \(fixed(clock.seconds, 2)) s, "
                + "\(m.kernels.threads) threads)")
    }
}
