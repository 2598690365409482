import ArgumentParser
import Engine
import EngineTools
import Foundation

struct Attack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            """
            Run the leakage attacks of docs/threat-model.md on the real models with a fresh key; prints \
            Markdown tables.
            """
    )
    @Option(parsing: .unconditional, help: "Residual layer whose states serve as known plaintext pairs.") var layer = 10
    @Option(parsing: .unconditional, help: "Seed for the corpus split.") var seed: UInt64 = 1

    func validate() throws {
        try checkEnvironment()
        try checkRange(layer, 0...Limits.layers, "--layer")
    }

    func run() throws {
        configureThreads()
        let k = try Kernels.selected()
        let f = try GGUFFile(path: DefaultModels.smolLM2)
        let key = try EncryptionKey(shape: ModelShape(LlamaConfig(gguf: f)), modelID: EncryptionKey.modelID(gguf: f))
        let P = key.vocabularyPermutation
        let tok = try BPETokenizer(gguf: f)
        var glosses = try WordNet.glosses()
        var rng = SeededRandom(seed: seed)
        glosses.shuffle(using: &rng)
        // (a) frequency analysis: reference = plain ids of one half, observed = encrypted ids of the other.
        note("attack: tokenizing \(glosses.count) WordNet glosses...")
        let half = glosses.count / 2
        let reference = try glosses[..<half].flatMap { try tok.encode($0) }
        let observedPlain = try glosses[half...].flatMap { try tok.encode($0) }
        print(
            """
            ## (a) Token-frequency analysis (SmolLM2 tokenizer, WordNet glosses; reference corpus \
            \(reference.count) tokens)\n
            """
        )
        print("| observed tokens | tokens decrypted | distinct ids decrypted |")
        print("|---|---|---|")
        for n in [1_000, 10_000, 100_000, observedPlain.count] where n <= observedPlain.count {
            let r = LeakageAttacks.frequencyAnalysis(
                reference: reference, observed: observedPlain.prefix(n).map { P[$0] }, permutation: P)
            print("| \(n) | \(fixed(r.tokens, 3)) | \(fixed(r.distinct, 3)) |")
        }

        // (b) embedding-row matching against the public base model.
        print("\n## (b) Matching encrypted embedding rows to the public model\n")
        print("| model, format | rows | P recovered by norms alone | P recovered (norms + Procrustes) | seconds |")
        print("|---|---|---|---|---|")
        let plainE = try f.matrix("token_embd.weight").dequantized(kernels: k)
        let V = P.count
        let d = plainE.count / P.count
        for type in [RowType.f32, .q8_0] {
            let enc = try ModelEncryptor.encryptLlama(gguf: f, key: key, type: type, kernels: k)
            let t = enc.tensors.first { $0.name == "token_embd.weight" }!
            let m = try QuantizedMatrix(type: type, rows: V, cols: d, bytes: t.bytes).dequantized(kernels: k)
            let t0 = Stopwatch()
            let r = try LeakageAttacks.embeddingMatching(plain: plainE, encrypted: m, rows: V, dim: d, permutation: P)
            print(
                "| SmolLM2 \(type) | \(V) | \(fixed(r.norms, 4)) | \(fixed(r.full, 4)) | \(fixed(t0.seconds, 1)) |"
            )
        }
        let bert = try BertModel(directory: DefaultModels.miniLM, kernels: k)
        let bkey = try EncryptionKey(
            shape: ModelShape(bert.config), modelID: EncryptionKey.modelID(bert: DefaultModels.miniLM))
        let st = try SafeTensorsFile(path: DefaultModels.miniLM + "/model.safetensors")
        let bn =
            st.tensors["embeddings.word_embeddings.weight"] != nil
            ? "embeddings.word_embeddings.weight" : "bert.embeddings.word_embeddings.weight"
        let be = try st.floats(bn)
        let tmp = NSTemporaryDirectory() + "engine-attack-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        for mode in BertEncryption.allCases {
            try ModelEncryptor.encryptBert(
                directory: DefaultModels.miniLM, key: bkey, mode: mode, output: tmp, kernels: k)
            let m = try SafeTensorsFile(path: tmp + "/model.safetensors").floats("embeddings.word_embeddings.weight")
            let t0 = Stopwatch()
            let r = try LeakageAttacks.embeddingMatching(
                plain: be, encrypted: m, rows: bert.config.vocabSize, dim: bert.config.hiddenSize,
                permutation: bkey.vocabularyPermutation)
            print(
                """
                | MiniLM \(mode) | \(bert.config.vocabSize) | \(fixed(r.norms, 4)) | \(fixed(r.full, 4)) | \
                \(fixed(t0.seconds, 1)) |
                """
            )
        }

        // (c) known-plaintext recovery of Q from residual states at one layer.
        let path = tmp + "-smollm2.gguf"
        defer { unlink(path) }
        try ModelEncryptor.encryptLlama(gguf: f, key: key, kernels: k).write(to: path)
        let plain = try LlamaModel(gguf: f, format: .f32, kernels: k)
        let enc = try LlamaModel(path: path, format: .f32, kernels: k)
        var xs: [Float] = []
        var ys: [Float] = []
        var g = 0
        while xs.count < 1800 * d {
            let ids = Array(try tok.encode(glosses[g]).prefix(120))
            g += 1
            _ = try plain.forward(ids, cache: plain.makeCache(capacity: 128)) { l, x in if l == layer { xs += x } }
            _ = try enc.forward(ids.map { P[$0] }, cache: enc.makeCache(capacity: 128)) { l, x in
                if l == layer { ys += x }
            }
        }
        let q = try key.residualRotation()
        print(
            """
            \n## (c) Known-plaintext recovery of Q (SmolLM2 residual states after layer \(layer), d = \(d); 200 \
            held-out states)\n
            """
        )
        print("| pairs n | n / d | \\|Q^ - Q\\|_F / \\|Q\\|_F | median relative error decrypting held-out states |")
        print("|---|---|---|---|")
        for n in [16, 64, 256, 512, 576, 1024, 1536] {
            let r = try LeakageAttacks.knownPlaintext(
                plain: xs, encrypted: ys, rows: n, heldOut: 200, dim: d, rotation: q)
            print(
                """
                | \(n) | \(fixed(Double(n) / Double(d), 2)) | \(String(format: "%.3g", r.matrixError)) | \
                \(String(format: "%.3g", r.decryptError)) |
                """
            )
        }

        // (d) ciphertext-only: covariance of public-model states vs covariance of server states.
        var px: [Float] = []
        var ey: [Float] = []
        while ey.count < 6000 * d {
            let a = Array(try tok.encode(glosses[g]).prefix(120))
            let b = Array(try tok.encode(glosses[g + 1]).prefix(120))
            g += 2
            _ = try plain.forward(a, cache: plain.makeCache(capacity: 128)) { l, x in if l == layer { px += x } }
            _ = try enc.forward(b.map { P[$0] }, cache: enc.makeCache(capacity: 128)) { l, x in
                if l == layer { ey += x }
            }
        }
        print("\n## (d) Ciphertext-only recovery of Q from covariances (no known pairs; held-out pairs only score)\n")
        print(
            """
            | states per side | \\|Q^ - Q\\|_F / \\|Q\\|_F | median relative error, held-out states | same, on \
            the 8 leading directions |
            """
        )
        print("|---|---|---|---|")
        let held = 200
        for n in [1500, 6000] {
            let r = try LeakageAttacks.covarianceMatching(
                plain: Array(px[0..<(n * d)]), encrypted: Array(ey[0..<(n * d)]),
                testPlain: Array(xs[((1800 - held) * d)..<(1800 * d)]),
                testEncrypted: Array(ys[((1800 - held) * d)..<(1800 * d)]),
                dim: d, rotation: q)
            print(
                """
                | \(n) | \(String(format: "%.3g", r.matrixError)) | \(String(format: "%.3g", r.decryptError)) | \
                \(String(format: "%.3g", r.topError)) |
                """
            )
        }
    }
}
