import Foundation

/// BERT's uncased WordPiece: normalise (drop control characters, whitespace to spaces, spaces
/// around CJK ideographs, NFD + drop combining marks, lowercase), split on whitespace and on
/// every punctuation character, then greedy longest-match sub-words with "##" continuations.
/// Encoding adds [CLS] ... [SEP] and truncates to `maxLength` (sentence-transformers' default
/// for all-MiniLM-L6-v2 is 256).
public final class WordPieceTokenizer: @unchecked Sendable {
    /// Token string to id.
    public let vocab: [String: Int]
    /// Id to token string.
    public let tokens: [String]
    public let unkID: Int, clsID: Int, sepID: Int, padID: Int
    /// Longest encoding in tokens, [CLS] and [SEP] included; longer inputs are cut.
    public var maxLength: Int
    let maxCharsPerWord = 100

    /// A tokenizer over `vocabulary` (line order gives the ids); throws if [UNK], [CLS], [SEP] or [PAD] is
    /// missing.
    public init(vocabulary: [String], maxLength: Int = 256) throws(EngineError) {
        tokens = vocabulary
        var v: [String: Int] = [:]
        for (i, t) in vocabulary.enumerated() where v[t] == nil { v[t] = i }
        vocab = v
        func id(_ s: String) throws(EngineError) -> Int {
            guard let i = v[s] else { throw EngineError.invalidFile("WordPiece vocabulary has no \(s) token") }
            return i
        }
        unkID = try id("[UNK]")
        clsID = try id("[CLS]")
        sepID = try id("[SEP]")
        padID = try id("[PAD]")
        try require(maxLength >= 2, "maxLength must be >= 2")
        self.maxLength = maxLength
    }

    /// From a model directory: vocab.txt (one token per line, id = line number).
    public convenience init(directory: String, maxLength: Int = 256) throws(EngineError) {
        let path = directory + "/vocab.txt"
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EngineError.io("missing tokenizer: cannot read \(path)")
        }
        var lines = String(decoding: data, as: UTF8.self).components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        try self.init(vocabulary: lines.map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }, maxLength: maxLength)
    }

    /// From a Hugging Face tokenizer.json whose model is WordPiece (vocabulary: token -> id).
    public convenience init(tokenizerJSON path: String, maxLength: Int = 256) throws(EngineError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EngineError.io("missing tokenizer: cannot read \(path)")
        }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let model = root["model"] as? [String: Any]
        else { throw EngineError.invalidFile("\(path): not a tokenizer.json") }
        guard (model["type"] as? String) == "WordPiece", let vocab = model["vocab"] as? [String: Int] else {
            throw EngineError.unsupported("\(path): tokenizer model \(model["type"] ?? "?"); expected WordPiece")
        }
        var tokens = [String](repeating: "", count: (vocab.values.max() ?? -1) + 1)
        for (t, i) in vocab where i >= 0 { tokens[i] = t }
        try self.init(vocabulary: tokens, maxLength: maxLength)
    }

    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) {
            return true
        }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
            .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default: return false
        }
    }
    static func isCJK(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B920...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }
    static func isControl(_ s: Unicode.Scalar) -> Bool {
        if s == "\t" || s == "\n" || s == "\r" { return false }
        switch s.properties.generalCategory {
        case .control, .format, .privateUse, .surrogate, .unassigned: return true
        default: return false
        }
    }
    static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        s == " " || s == "\t" || s == "\n" || s == "\r" || s.properties.generalCategory == .spaceSeparator
    }

    /// Normalised words (before WordPiece).
    public func basicTokens(_ text: String) -> [String] {
        var cleaned = String.UnicodeScalarView()
        for s in text.unicodeScalars {
            if s.value == 0 || s.value == 0xFFFD || Self.isControl(s) { continue }
            if Self.isWhitespace(s) {
                cleaned.append(" ")
                continue
            }
            if Self.isCJK(s.value) {
                cleaned.append(" ")
                cleaned.append(s)
                cleaned.append(" ")
                continue
            }
            cleaned.append(s)
        }
        // Hugging Face's order: strip accents (NFD, drop non-spacing marks), then lowercase.
        var unaccented = String.UnicodeScalarView()
        for s in String(cleaned).decomposedStringWithCanonicalMapping.unicodeScalars
        where s.properties.generalCategory != .nonspacingMark {
            unaccented.append(s)
        }
        let stripped = String(unaccented).lowercased().unicodeScalars
        var words: [String] = []
        var cur = String.UnicodeScalarView()
        func flush() {
            if !cur.isEmpty {
                words.append(String(cur))
                cur = String.UnicodeScalarView()
            }
        }
        for s in stripped {
            if Self.isWhitespace(s) {
                flush()
                continue
            }
            if Self.isPunctuation(s) {
                flush()
                words.append(String(s))
                continue
            }
            cur.append(s)
        }
        flush()
        return words
    }

    func wordPiece(_ word: String, into out: inout [Int]) {
        let chars = Array(word.unicodeScalars)
        if chars.count > maxCharsPerWord {
            out.append(unkID)
            return
        }
        var pieces: [Int] = []
        var start = 0
        while start < chars.count {
            var end = chars.count
            var found: Int? = nil
            while start < end {
                var s = String(String.UnicodeScalarView(chars[start..<end]))
                if start > 0 { s = "##" + s }
                if let id = vocab[s] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let f = found else {
                out.append(unkID)
                return
            }
            pieces.append(f)
            start = end
        }
        out.append(contentsOf: pieces)
    }

    /// [CLS] pieces [SEP], truncated to maxLength.
    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for w in basicTokens(text) { wordPiece(w, into: &ids) }
        if ids.count > maxLength - 2 { ids.removeLast(ids.count - (maxLength - 2)) }
        return [clsID] + ids + [sepID]
    }
}
