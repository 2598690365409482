import ArgumentParser
import Engine
import Foundation

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Create a client-only encryption key for a model (256-bit secret from the system CSPRNG, or "
            + "--secret-file).")
    @Option(help: "Model the key is bound to: a GGUF file or a BERT directory (default: SmolLM2).") var model: String?
    @Option(help: "Key file to write (mode 0600).") var output: String
    @Flag(help: "Replace an existing output (otherwise an existing file is never replaced).") var force = false
    @Option(name: .customLong("secret-file"), help: "Use these 32 bytes as the secret instead of the CSPRNG.")
    var secretFile: String?

    func validate() throws {
        try checkEnvironment()
        try checkOutput(output, force: force, inputs: [model, secretFile])
    }

    func run() throws {
        let path = model ?? DefaultModels.smolLM2
        let clock = Stopwatch()
        let shape: ModelShape
        let id: [UInt8]
        if isDirectory(path) {
            shape = ModelShape(try BertModel(directory: path).config)
            id = try EncryptionKey.modelID(bert: path)
        } else {
            let f = try GGUFFile(path: path)
            shape = ModelShape(try LlamaConfig(gguf: f))
            id = try EncryptionKey.modelID(gguf: f)
        }
        let key: EncryptionKey
        if let secretFile {
            guard let s = FileManager.default.contents(atPath: secretFile) else {
                throw EngineError.io("cannot read \(secretFile)")
            }
            key = try EncryptionKey(secret: Array(s), shape: shape, modelID: id)
        } else {
            key = try EncryptionKey(shape: shape, modelID: id)
        }
        try key.write(to: output, replace: force)
        note("wrote key for \(path) to \(output) in \(fixed(clock.seconds, 3)) s")
    }
}

struct EncryptModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encrypt-model",
        abstract:
            "Write the encrypted GGUF of a Llama-family model for a key; the server runs it with the ordinary engine.")
    @Option(help: "Plain model: GGUF file or BERT directory (default: SmolLM2).") var model: String?
    @Option(help: "Key file from engine keygen.") var key: String
    @Option(help: "Encrypted GGUF file, or directory for a BERT model.") var output: String
    @Flag(help: "Replace an existing output (otherwise an existing file is never replaced).") var force = false
    @Option(help: "Matrix type of a GGUF output: f32 (exact), f16 or q8_0 (re-quantized after the transforms).")
    var type: MatrixTypeOption = .f32
    @Flag(
        help:
            """
            GGUF models: split encryption; the server file has no embedding table or head, which go to \
            --client-output.
            """
    ) var split = false
    @Option(
        name: .customLong("client-output"),
        help: "With --split: the client half (rotated embedding table and head, tokenizer) to write.") var clientOutput:
        String?
    @Option(
        help:
            """
            BERT models: rotation (ones-fixing Q, two extra d x d products per layer) or permutation (zero \
            overhead, weaker; see docs/threat-model.md).
            """
    ) var mode: BertEncryption = .rotation

    func validate() throws {
        try checkEnvironment()
        let plain = model ?? DefaultModels.smolLM2
        try checkOutput(output, force: force, inputs: [plain, key])
        if let clientOutput {
            try checkOutput(clientOutput, force: force, inputs: [plain, key], option: "--client-output")
            guard !sameFile(clientOutput, output) else {
                throw ValidationError("--client-output and --output name the same file: each half needs its own")
            }
        }
    }

    func run() throws {
        configureThreads()
        let path = model ?? DefaultModels.smolLM2
        let clock = Stopwatch()
        if isDirectory(path) {
            let k = try EncryptionKey.read(path: key, forModel: EncryptionKey.modelID(bert: path))
            try ModelEncryptor.encryptBert(
                directory: path, key: k, mode: mode, output: output, kernels: Kernels.selected())
            note("wrote \(output)/ (BERT, \(mode.rawValue)) in \(clock.text), peak memory \(Int(peakRSSMiB())) MiB")
            return
        }
        let f = try GGUFFile(path: path)
        let k = try EncryptionKey.read(path: key, forModel: EncryptionKey.modelID(gguf: f))
        if split {
            guard let clientOutput else {
                throw EngineError.invalidArgument("--split needs --client-output FILE for the client half")
            }
            try ModelEncryptor.clientHalf(gguf: f, key: k, type: type.rowType, kernels: Kernels.selected()).write(
                to: clientOutput)
            note(
                """
                wrote the client half to \(clientOutput) (keep it with the key: it holds the rotated vocabulary \
                tensors)
                """
            )
        }
        try ModelEncryptor.encryptLlama(gguf: f, key: k, type: type.rowType, split: split, kernels: Kernels.selected())
            .write(to: output)
        let what = type.rawValue + (split ? ", split server half" : "")
        note("wrote \(output) (\(what)) in \(clock.text), peak memory \(Int(peakRSSMiB())) MiB")
    }
}

struct ConvertModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert-model",
        abstract:
            """
            Re-write a plain GGUF with every matrix as f32, f16 or q8_0 (the same-format baseline for encrypted \
            models).
            """
    )
    @Option(help: "Plain GGUF model (default: SmolLM2).") var model: String?
    @Option(help: "GGUF to write.") var output: String
    @Flag(help: "Replace an existing output (otherwise an existing file is never replaced).") var force = false
    @Option(help: "Matrix type of the output.") var type: MatrixTypeOption = .q8_0

    func validate() throws {
        try checkEnvironment()
        try checkOutput(output, force: force, inputs: [model ?? DefaultModels.smolLM2])
    }

    func run() throws {
        let f = try GGUFFile(path: model ?? DefaultModels.smolLM2)
        try ModelEncryptor.convertLlama(gguf: f, type: type.rowType, kernels: Kernels.selected()).write(to: output)
        note("wrote \(output) (\(type.rawValue))")
    }
}
