import Foundation

/// Byte-level BPE (GPT-2 family) with the SmolLM pre-tokenizer: every Unicode number code point
/// is isolated first, then GPT-2's pattern ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
/// ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+) splits the pieces; bytes map to printable code points
/// (GPT-2's bytes_to_unicode); merges apply by rank. Control tokens (e.g. <|im_start|>) are
/// matched verbatim before pre-tokenization.
public final class BPETokenizer: @unchecked Sendable {
    /// Id to token string (byte-level: bytes mapped to printable characters as GPT-2 does).
    public let tokens: [String]
    let ids: [String: Int]
    /// Merge table over token ids: (left << 32 | right) -> (rank, merged id).
    let merges: [UInt64: (rank: Int32, merged: Int32)]
    /// Token id of each byte's character, -1 where the vocabulary has none.
    let byteIDs: [Int32]
    let specials: [(String, Int)] // longest first
    let byteToChar: [Character]
    let charToByte: [Character: UInt8]
    /// Beginning-of-sequence id, if the model has one.
    public let bosID: Int?
    /// End-of-sequence id, if the model has one.
    public let eosID: Int?
    /// Whether to isolate each number code point first (SmolLM's pre-tokenizer).
    public let isolateNumbers: Bool
    /// Whether the model expects BOS at the start of a sequence (GGUF tokenizer.ggml.add_bos_token;
    /// false when absent, as llama.cpp assumes for byte-level BPE vocabularies).
    public internal(set) var addsBOS = false

    /// A tokenizer from its vocabulary, merge rules ("a b", rank = order) and special token ids.
    public init(tokens: [String], merges: [String], specialIDs: [Int], bos: Int?, eos: Int?, isolateNumbers: Bool)
        throws
    {
        try require(!tokens.isEmpty, "tokenizer has an empty vocabulary")
        self.tokens = tokens
        var ids: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where ids[t] == nil { ids[t] = i }
        self.ids = ids
        try require(
            tokens.count <= Limits.vocabulary, "vocabulary of \(tokens.count) tokens exceeds \(Limits.vocabulary)")
        for (i, t) in tokens.enumerated() {
            // an empty token would match everywhere (special tokens) and never advance the input
            try require(!t.isEmpty, "token \(i) is empty")
            try require(t.utf8.count <= Limits.tokenBytes, "token \(i) is longer than \(Limits.tokenBytes) bytes")
        }
        specials = specialIDs.filter { $0 >= 0 && $0 < tokens.count }.map { (tokens[$0], $0) }.sorted {
            $0.0.count > $1.0.count
        }
        var b2c = [Character](repeating: " ", count: 256)
        var c2b: [Character: UInt8] = [:]
        var n = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            let scalar = printable ? b : 256 + n
            if !printable { n += 1 }
            let ch = Character(Unicode.Scalar(UInt32(scalar))!)
            b2c[b] = ch
            c2b[ch] = UInt8(b)
        }
        byteToChar = b2c
        charToByte = c2b
        // -1: the vocabulary has no token for this byte (real vocabularies omit some control
        // bytes); text containing it is refused by `encode` rather than silently shortened
        let byteIDs = (0..<256).map { b in ids[String(b2c[b])].map { Int32($0) } ?? -1 }
        self.byteIDs = byteIDs
        var table: [UInt64: (rank: Int32, merged: Int32)] = [:]
        table.reserveCapacity(merges.count)
        for (rank, m) in merges.enumerated() {
            let halves = m.split(separator: " ", omittingEmptySubsequences: false)
            guard halves.count == 2, let a = ids[String(halves[0])], let b = ids[String(halves[1])],
                let c = ids[String(halves[0]) + String(halves[1])]
            else { continue } // a merge whose parts or result are not tokens can never apply
            let key = UInt64(a) << 32 | UInt64(b)
            if table[key] == nil { table[key] = (Int32(rank), Int32(c)) }
        }
        self.merges = table
        bosID = bos
        eosID = eos
        self.isolateNumbers = isolateNumbers
    }

    /// The tokenizer stored in GGUF metadata (tokenizer.ggml.*); only model "gpt2" (byte-level BPE).
    public convenience init(gguf f: GGUFFile) throws {
        let model = try f.string("tokenizer.ggml.model")
        guard model == "gpt2" else {
            throw EngineError.unsupported(
                "\(f.file.path): tokenizer model '\(model)'; supported: gpt2 (byte-level BPE)")
        }
        guard let toks = f.metadata["tokenizer.ggml.tokens"]?.array?.compactMap(\.string), !toks.isEmpty else {
            throw EngineError.invalidFile("\(f.file.path): missing tokenizer.ggml.tokens (no tokenizer in this file)")
        }
        guard let merges = f.metadata["tokenizer.ggml.merges"]?.array?.compactMap(\.string) else {
            throw EngineError.invalidFile("\(f.file.path): missing tokenizer.ggml.merges")
        }
        let types = f.metadata["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        // token types 3 and 4: control and user-defined tokens
        let specials = types.enumerated().filter { $0.element == 3 || $0.element == 4 }.map(\.offset)
        let pre = f.metadata["tokenizer.ggml.pre"]?.string ?? "default"
        try self.init(
            tokens: toks, merges: merges, specialIDs: specials,
            bos: f.metadata["tokenizer.ggml.bos_token_id"]?.int, eos: f.metadata["tokenizer.ggml.eos_token_id"]?.int,
            isolateNumbers: pre == "smollm")
        addsBOS = f.metadata["tokenizer.ggml.add_bos_token"]?.bool ?? false
    }

    /// From a Hugging Face tokenizer.json with a byte-level BPE model (vocab, merges as "a b"
    /// strings or [a, b] pairs, added special tokens). Number isolation is enabled when the
    /// pre-tokenizer contains Digits(individual_digits) or a \p{N} Split, as SmolLM's does.
    public convenience init(tokenizerJSON path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EngineError.io("missing tokenizer: cannot read \(path)")
        }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let model = root["model"] as? [String: Any]
        else { throw EngineError.invalidFile("\(path): not a tokenizer.json") }
        guard (model["type"] as? String) == "BPE", let vocab = model["vocab"] as? [String: Int] else {
            throw EngineError.unsupported("\(path): tokenizer model \(model["type"] ?? "?"); expected BPE")
        }
        let merges: [String] = (model["merges"] as? [Any] ?? []).compactMap { m in
            if let s = m as? String { return s }
            if let pair = m as? [String], pair.count == 2 { return pair[0] + " " + pair[1] }
            return nil
        }
        var added = (root["added_tokens"] as? [[String: Any]]) ?? []
        added = added.filter { ($0["special"] as? Bool) ?? false }
        var tokens = [String](
            repeating: "",
            count: max((vocab.values.max() ?? -1), (added.compactMap { $0["id"] as? Int }.max() ?? -1)) + 1)
        for (t, i) in vocab where i >= 0 { tokens[i] = t }
        var specials: [Int] = []
        for a in added {
            if let id = a["id"] as? Int, let c = a["content"] as? String, id >= 0 {
                tokens[id] = c
                specials.append(id)
            }
        }
        let pre = String(
            decoding: (try? JSONSerialization.data(
                withJSONObject: root["pre_tokenizer"] ?? NSNull(), options: [.fragmentsAllowed])) ?? Data(),
            as: UTF8.self)
        let isolate = pre.contains("\"individual_digits\":true") || pre.contains("\\\\p{N}\"")
        func id(_ s: String) -> Int? { specials.first { tokens[$0] == s } }
        try self.init(
            tokens: tokens, merges: merges, specialIDs: specials,
            bos: id("<|endoftext|>") ?? id("<s>") ?? id("<|im_start|>"),
            eos: id("<|endoftext|>") ?? id("</s>") ?? id("<|im_end|>"),
            isolateNumbers: isolate)
    }

    /// Token id of a token string, if present.
    public func id(of token: String) -> Int? { ids[token] }

    /// Token ids of `text` (special tokens matched first, then GPT-2 pre-tokenization and merges).
    /// Throws if the text holds a byte the vocabulary has no token for (it would be dropped).
    public func encode(_ text: String) throws(EngineError) -> [Int] {
        var out: [Int] = []
        for (piece, special) in splitSpecials(text) {
            if let s = special {
                out.append(s)
                continue
            }
            for word in preTokenize(piece) { try bpe(word, into: &out) }
        }
        return out
    }

    /// Text of token ids (control tokens verbatim). Throws on an id out of range.
    public func decode(_ idsIn: [Int]) throws -> String {
        var bytes: [UInt8] = []
        for i in idsIn {
            guard i >= 0 && i < tokens.count else {
                throw EngineError.invalidArgument("token id \(i) is out of range 0..<\(tokens.count)")
            }
            let t = tokens[i]
            if specials.contains(where: { $0.1 == i }) {
                bytes.append(contentsOf: Array(t.utf8))
                continue
            }
            for ch in t {
                if let b = charToByte[ch] { bytes.append(b) } else { bytes.append(contentsOf: Array(String(ch).utf8)) }
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Raw bytes of one token (for streaming output that may split UTF-8 sequences).
    public func bytes(of id: Int) -> [UInt8] {
        guard id >= 0 && id < tokens.count else { return [] }
        if specials.contains(where: { $0.1 == id }) { return Array(tokens[id].utf8) }
        return tokens[id].map { charToByte[$0] ?? 0x3f }
    }

    /// The text cut into plain pieces and special tokens (longest match first), scanning bytes:
    /// only a byte that starts some special token is compared, so plain text costs one pass.
    func splitSpecials(_ text: String) -> [(String, Int?)] {
        guard !specials.isEmpty else { return [(text, nil)] }
        let bytes = Array(text.utf8)
        let specialBytes = specials.map { (Array($0.0.utf8), $0.1) }
        var starts = [Bool](repeating: false, count: 256)
        for (b, _) in specialBytes { starts[Int(b[0])] = true }
        var out: [(String, Int?)] = []
        var plainStart = 0
        var i = 0
        outer: while i < bytes.count {
            if starts[Int(bytes[i])] {
                for (sb, id) in specialBytes where sb.count <= bytes.count - i && sb[0] == bytes[i] {
                    if bytes[i..<(i + sb.count)].elementsEqual(sb) {
                        if plainStart < i { out.append((String(decoding: bytes[plainStart..<i], as: UTF8.self), nil)) }
                        out.append((String(decoding: sb, as: UTF8.self), id))
                        i += sb.count
                        plainStart = i
                        continue outer
                    }
                }
            }
            i += 1
        }
        if plainStart < bytes.count { out.append((String(decoding: bytes[plainStart...], as: UTF8.self), nil)) }
        return out
    }

    static func isLetter(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }
    static func isNumber(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }
    static func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }

    /// Pre-tokenization into words (unicode scalars), GPT-2 pattern, after number isolation.
    func preTokenize(_ text: String) -> [[Unicode.Scalar]] {
        let all = Array(text.unicodeScalars)
        var pieces: [ArraySlice<Unicode.Scalar>] = []
        if isolateNumbers {
            var start = 0
            for (i, s) in all.enumerated() where Self.isNumber(s) {
                if start < i { pieces.append(all[start..<i]) }
                pieces.append(all[i...i])
                start = i + 1
            }
            if start < all.count { pieces.append(all[start...]) }
        } else {
            pieces = [all[...]]
        }
        var words: [[Unicode.Scalar]] = []
        for p in pieces { gpt2Split(Array(p), into: &words) }
        return words
    }

    func gpt2Split(_ s: [Unicode.Scalar], into words: inout [[Unicode.Scalar]]) {
        var i = 0
        let n = s.count
        func run(_ from: Int, _ pred: (Unicode.Scalar) -> Bool) -> Int {
            var j = from
            while j < n && pred(s[j]) { j += 1 }
            return j
        }
        while i < n {
            let c = s[i]
            // contractions (case-sensitive, as GPT-2's pattern)
            if c == "'" && i + 1 < n {
                let rest = String(String.UnicodeScalarView(s[(i + 1)..<min(n, i + 3)]))
                var len = 0
                if rest.hasPrefix("re") || rest.hasPrefix("ve") || rest.hasPrefix("ll") {
                    len = 3
                } else if let f = rest.first, "stmd".contains(f) {
                    len = 2
                }
                if len > 0 {
                    words.append(Array(s[i..<(i + len)]))
                    i += len
                    continue
                }
            }
            let sp = c == " " && i + 1 < n ? 1 : 0
            let head = s[min(i + sp, n - 1)]
            if Self.isLetter(c) || (sp == 1 && Self.isLetter(head)) {
                let j = run(i + sp, Self.isLetter)
                words.append(Array(s[i..<j]))
                i = j
                continue
            }
            if Self.isNumber(c) || (sp == 1 && Self.isNumber(head)) {
                let j = run(i + sp, Self.isNumber)
                words.append(Array(s[i..<j]))
                i = j
                continue
            }
            let other: (Unicode.Scalar) -> Bool = { !Self.isSpace($0) && !Self.isLetter($0) && !Self.isNumber($0) }
            if other(c) || (sp == 1 && other(head)) {
                let j = run(i + sp, other)
                words.append(Array(s[i..<j]))
                i = j
                continue
            }
            // whitespace: \s+(?!\S) then \s+
            let j = run(i, Self.isSpace)
            if j == n || j - i == 1 {
                words.append(Array(s[i..<j]))
                i = j
            } else {
                words.append(Array(s[i..<(j - 1)]))
                i = j - 1
            }
        }
    }

    /// Merges the word's bytes by rank: the lowest-ranked adjacent pair first, the leftmost among
    /// equal ranks, as the reference implementation does; a heap of candidate pairs over a linked
    /// list keeps it O(n log n) in the word's length (a naive rescan is quadratic).
    func bpe(_ word: [Unicode.Scalar], into out: inout [Int]) throws(EngineError) {
        var sym = String(String.UnicodeScalarView(word)).utf8.map { byteIDs[Int($0)] }
        if let bad = sym.firstIndex(of: -1) {
            let byte = Array(String(String.UnicodeScalarView(word)).utf8)[bad]
            throw EngineError.invalidArgument(
                "the text contains byte 0x\(String(byte, radix: 16)), which this vocabulary has no token for")
        }
        let n = sym.count
        if n > 1 {
            var next = Array(1...n) // n marks the end
            var prev = Array(-1..<(n - 1))
            var alive = [Bool](repeating: true, count: n)
            var heap = PairHeap()
            func consider(_ i: Int) {
                let j = next[i]
                guard j < n,
                    let m = merges[UInt64(UInt32(bitPattern: sym[i])) << 32 | UInt64(UInt32(bitPattern: sym[j]))]
                else { return }
                heap.push(rank: m.rank, left: Int32(i), leftID: sym[i], rightID: sym[j])
            }
            for i in 0..<(n - 1) { consider(i) }
            while let e = heap.pop() {
                let i = Int(e.left)
                let j = next[i]
                // stale: the left or right symbol changed since this pair was pushed
                guard alive[i], j < n, sym[i] == e.leftID, sym[j] == e.rightID,
                    let m = merges[UInt64(UInt32(bitPattern: sym[i])) << 32 | UInt64(UInt32(bitPattern: sym[j]))],
                    m.rank == e.rank
                else { continue }
                sym[i] = m.merged
                alive[j] = false
                next[i] = next[j]
                if next[j] < n { prev[next[j]] = i }
                if prev[i] >= 0 { consider(prev[i]) }
                consider(i)
            }
            var i = 0
            while i < n {
                out.append(Int(sym[i]))
                i = next[i]
            }
            return
        }
        out += sym.map { Int($0) }
    }
}

/// A binary min-heap of merge candidates ordered by (rank, left position).
struct PairHeap {
    struct Entry {
        var rank: Int32
        var left: Int32
        var leftID: Int32
        var rightID: Int32
    }
    private var a: [Entry] = []

    private static func less(_ x: Entry, _ y: Entry) -> Bool { x.rank != y.rank ? x.rank < y.rank : x.left < y.left }

    mutating func push(rank: Int32, left: Int32, leftID: Int32, rightID: Int32) {
        a.append(Entry(rank: rank, left: left, leftID: leftID, rightID: rightID))
        var c = a.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            guard Self.less(a[c], a[p]) else { break }
            a.swapAt(c, p)
            c = p
        }
    }

    mutating func pop() -> Entry? {
        guard let top = a.first else { return nil }
        let last = a.removeLast()
        if !a.isEmpty {
            a[0] = last
            var c = 0
            while true {
                let l = 2 * c + 1
                let r = l + 1
                var m = c
                if l < a.count && Self.less(a[l], a[m]) { m = l }
                if r < a.count && Self.less(a[r], a[m]) { m = r }
                if m == c { break }
                a.swapAt(c, m)
                c = m
            }
        }
        return top
    }
}
