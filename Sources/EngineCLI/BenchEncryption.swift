import ArgumentParser
import Engine
import Foundation

struct BenchEncryption: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encryption",
        abstract:
            """
            Server-side latency of encrypted vs plain models at the same weight format, alternating in one run \
            (medians); key and encryption cost.
            """
    )
    @Option(parsing: .unconditional, help: "Threads.") var threads = 1
    @Option(parsing: .unconditional, help: "Prompt tokens for prefill.") var promptTokens = 128
    @Option(parsing: .unconditional, help: "Tokens to decode.") var decodeTokens = 64
    @Option(parsing: .unconditional, help: "Rounds (median of per-round ratios reported).") var rounds = 7

    func validate() throws {
        try checkEnvironment()
        try checkThreads(threads)
        try checkRange(promptTokens, 1...8192, "--prompt-tokens")
        try checkRange(decodeTokens, 1...8192, "--decode-tokens")
        try checkRange(rounds, 1...1000, "--rounds")
    }

    func run() throws {
        warnIfDebug("bench encryption")
        configureThreads(threads)
        let k = try Kernels.selected(threads: threads)
        let tmp = NSTemporaryDirectory() + "engine-bench-enc-\(getpid())"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        var rows: [String] = []

        // SmolLM2: key, encryption at f32 and q8_0, plain q8_0 baseline.
        let f = try GGUFFile(path: DefaultModels.smolLM2)
        var t0 = Stopwatch()
        let key = try EncryptionKey(shape: ModelShape(LlamaConfig(gguf: f)), modelID: EncryptionKey.modelID(gguf: f))
        _ = try key.residualRotation()
        _ = key.vocabularyPermutation
        let keySecs = t0.seconds
        var files: [String: String] = [:]
        for (name, type) in [("f32", RowType.f32), ("q8_0", .q8_0)] {
            t0 = Stopwatch()
            try ModelEncryptor.encryptLlama(gguf: f, key: key, type: type, kernels: k).write(
                to: tmp + "/enc-\(name).gguf")
            note("bench: encrypted SmolLM2 as \(name) in \(fixed(t0.seconds, 1)) s")
            files["enc-" + name] = tmp + "/enc-\(name).gguf"
        }
        try ModelEncryptor.convertLlama(gguf: f, type: .q8_0, kernels: k).write(to: tmp + "/plain-q8_0.gguf")
        let pairs: [(String, LlamaModel, LlamaModel)] = [
            (
                "f32", try LlamaModel(gguf: f, format: .f32, kernels: k),
                try LlamaModel(path: files["enc-f32"]!, format: .f32, kernels: k)
            ),
            (
                "q8_0, int8 activations",
                try LlamaModel(path: tmp + "/plain-q8_0.gguf", format: .native, activations: .int8, kernels: k),
                try LlamaModel(path: files["enc-q8_0"]!, format: .native, activations: .int8, kernels: k)
            ),
        ]
        let P = key.vocabularyPermutation
        let prompt = (0..<promptTokens).map { 100 + ($0 * 37) % 40000 }
        func run(_ m: LlamaModel, _ ids: [Int]) throws -> (Double, Double) {
            let cache = try m.makeCache(capacity: promptTokens + decodeTokens + 1)
            var t = Stopwatch()
            var logits = try m.forward(ids, cache: cache)
            let pre = t.seconds
            t = Stopwatch()
            for _ in 0..<decodeTokens {
                logits = try m.forward([logits.indices.max { logits[$0] < logits[$1] }!], cache: cache)
            }
            return (pre, t.seconds / Double(decodeTokens))
        }
        for (name, plain, enc) in pairs {
            _ = try run(plain, prompt)
            _ = try run(enc, prompt.map { P[$0] }) // warm-up
            var rp: [Double] = []
            var rd: [Double] = []
            var pp: [Double] = []
            var pd: [Double] = []
            for _ in 0..<rounds {
                let a = try run(plain, prompt)
                let b = try run(enc, prompt.map { P[$0] })
                rp.append(b.0 / a.0)
                rd.append(b.1 / a.1)
                pp.append(a.0)
                pd.append(a.1)
            }
            rows.append(
                """
                | SmolLM2 \(name) | prefill \(promptTokens) tokens | \(fixed(median(pp) * 1e3, 1)) ms | \
                \(fixed(median(rp), 3)) |
                """
            )
            rows.append(
                "| SmolLM2 \(name) | decode (per token) | \(fixed(median(pd) * 1e3, 2)) ms | \(fixed(median(rd), 3)) |"
            )
        }

        // Split encryption: server without vocabulary tensors; the client does lookups and the head.
        for (name, type) in [("f32", RowType.f32), ("q8_0", .q8_0)] {
            try ModelEncryptor.encryptLlama(gguf: f, key: key, type: type, split: true, kernels: k).write(
                to: tmp + "/split-\(name).gguf")
            try ModelEncryptor.clientHalf(gguf: f, key: key, type: type, kernels: k).write(
                to: tmp + "/client-\(name).gguf")
            let server = try LlamaModel(
                path: tmp + "/split-\(name).gguf", format: type == .f32 ? .f32 : .native, activations: .int8, kernels: k
            )
            let plain = pairs[type == .f32 ? 0 : 1].1
            let session = try SplitEncryptedSession(
                client: GGUFFile(path: tmp + "/client-\(name).gguf"), server: server, kernels: k)
            var ratio: [Double] = []
            var client: [Double] = []
            for _ in 0..<rounds {
                let a = try run(plain, prompt).1
                let cache = try server.makeCache(capacity: promptTokens + decodeTokens + 1)
                var logits = try session.step(prompt, cache: cache)
                let c0 = session.clientSeconds
                let t = Stopwatch()
                for _ in 0..<decodeTokens {
                    logits = try session.step([logits.indices.max { logits[$0] < logits[$1] }!], cache: cache)
                }
                let total = t.seconds / Double(decodeTokens)
                let cl = (session.clientSeconds - c0) / Double(decodeTokens)
                ratio.append((total - cl) / a)
                client.append(cl)
            }
            rows.append(
                """
                | SmolLM2 \(name == "f32" ? "f32" : "q8_0, int8 activations") split | decode: server part / \
                plain decode | client \(fixed(median(client) * 1e3, 2)) ms per token | \
                \(fixed(median(ratio), 3)) |
                """
            )
        }

        // MiniLM: plain vs both encrypted options.
        let bertKey = try EncryptionKey(
            shape: ModelShape(BertModel(directory: DefaultModels.miniLM).config),
            modelID: EncryptionKey.modelID(bert: DefaultModels.miniLM))
        let plainBert = try BertModel(directory: DefaultModels.miniLM, kernels: k)
        let sentences = (0..<32).map {
            "Sentence number \($0) is about an ordinary everyday topic such as weather, food or travel."
        }
        let ids = try sentences.map { try plainBert.tokenizer.encode($0) }
        let Pb = bertKey.vocabularyPermutation
        let encIDs = ids.map { $0.map { Pb[$0] } }
        for mode in BertEncryption.allCases {
            t0 = Stopwatch()
            try ModelEncryptor.encryptBert(
                directory: DefaultModels.miniLM, key: bertKey, mode: mode, output: tmp + "/minilm-\(mode)", kernels: k)
            note("bench: encrypted MiniLM (\(mode)) in \(fixed(t0.seconds, 2)) s")
            let enc = try BertModel(directory: tmp + "/minilm-\(mode)", kernels: k)
            func b1(_ m: BertModel, _ x: [[Int]]) throws -> Double {
                let t = Stopwatch()
                for s in x.prefix(16) { _ = try m.embed(ids: [s]) }
                return t.seconds / 16
            }
            func b32(_ m: BertModel, _ x: [[Int]]) throws -> Double {
                let t = Stopwatch()
                _ = try m.embed(ids: x)
                return t.seconds / 32
            }
            _ = try b1(plainBert, ids)
            _ = try b1(enc, encIDs)
            var r1: [Double] = []
            var r32: [Double] = []
            var p1: [Double] = []
            var p32: [Double] = []
            for _ in 0..<rounds {
                let a = try b1(plainBert, ids)
                let b = try b1(enc, encIDs)
                r1.append(b / a)
                p1.append(a)
                let c = try b32(plainBert, ids)
                let d = try b32(enc, encIDs)
                r32.append(d / c)
                p32.append(c)
            }
            rows.append(
                """
                | MiniLM \(mode) | batch 1 (per sentence) | \(fixed(median(p1) * 1e3, 2)) ms | \
                \(fixed(median(r1), 3)) |
                """
            )
            rows.append(
                """
                | MiniLM \(mode) | batch 32 (per sentence) | \(fixed(median(p32) * 1e3, 2)) ms | \
                \(fixed(median(r32), 3)) |
                """
            )
        }
        print(
            """
            Encrypted / plain server latency, same weight format, \(threads) thread(s), median of \(rounds) \
            alternating rounds
            """
        )
        print("(SmolLM2 key derivation: \(fixed(keySecs, 3)) s)\n")
        print("| model, weights | work | plain latency | encrypted / plain |")
        print("|---|---|---|---|")
        for r in rows { print(r) }
    }
}
