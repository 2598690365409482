/// A model's chat template (GGUF `tokenizer.chat_template`), applied to one conversation turn.
///
/// Only the ChatML family (`<|im_start|>role\ncontent<|im_end|>\n`, as SmolLM2 uses) is supported;
/// any other template is refused rather than approximated.
public struct ChatTemplate: Sendable, Equatable {
    /// The Jinja source stored in the model file, if any.
    public let source: String?

    /// The template stored in a GGUF file's metadata.
    public init(gguf: GGUFFile) { source = gguf.metadata["tokenizer.chat_template"]?.string }

    /// A template from its Jinja source.
    public init(source: String?) { self.source = source }

    /// The prompt for one user turn (after an optional system turn), ending where the assistant's
    /// reply begins.
    public func prompt(user: String, system: String? = nil) throws(EngineError) -> String {
        var turns: [(role: String, content: String)] = []
        if let system { turns.append((role: "system", content: system)) }
        turns.append((role: "user", content: user))
        return try prompt(messages: turns)
    }

    /// The prompt for a conversation (roles `system`, `user`, `assistant`, in any order), ending
    /// where the assistant's next reply begins.
    public func prompt(messages: [(role: String, content: String)]) throws(EngineError) -> String {
        guard let t = source, t.contains("<|im_start|>") else {
            throw EngineError.unsupported("this model's chat template is not ChatML; pass the prompt without --chat")
        }
        try require(!messages.isEmpty, "a conversation needs at least one message")
        var s = ""
        for m in messages {
            try require(
                ["system", "user", "assistant"].contains(m.role),
                "message role must be system, user or assistant, got \(m.role.debugDescription)")
            s += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n"
        }
        return s + "<|im_start|>assistant\n"
    }
}
