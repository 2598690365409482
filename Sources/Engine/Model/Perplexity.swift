import Foundation

/// Perplexity as llama.cpp's perplexity tool measures it, so figures compare: the token stream
/// is cut into chunks of `context` tokens (a trailing partial chunk is dropped); each chunk runs
/// through a fresh cache from position 0 (its first token replaced by BOS when the model's
/// tokenizer adds one); the tokens of the second half of each chunk are scored, each by the
/// logits of the position before it: positions first ..< context - 1 with first = context / 2,
/// so context - 1 - context / 2 tokens per chunk. Perplexity = exp(mean negative log-likelihood).
public struct PerplexityResult: Sendable, Codable {
    /// exp of the mean negative log-likelihood.
    public var perplexity: Double
    /// Tokens scored.
    public var tokens: Int
    /// Chunks processed.
    public var chunks: Int
    /// Mean negative log-likelihood of each chunk's scored tokens.
    public var chunkNLL: [Double]
    /// The argmax of the logits at each scored position (for top-1 agreement between runs).
    public var argmax: [Int]
}

/// Runs plain ids at a cache's next positions and returns logits for every one of them
/// (T x vocab): a plain model, or an encrypted server wrapped by its client.
public typealias LogitsStep = (_ ids: [Int], _ cache: any KVCache) throws -> [Float]

/// Evaluates perplexity over `tokens` (already tokenized) in chunks of `context`; `step` ids go
/// through the model `stepTokens` at a time (1: token by token; larger steps see the cache as a
/// token-by-token pass would, up to float rounding). `makeCache` gives each chunk a fresh cache.
public func evaluatePerplexity(
    tokens: [Int], context: Int, vocab: Int, bos: Int?, stepTokens: Int = 1, maxChunks: Int? = nil,
    makeCache: () throws -> any KVCache, step: LogitsStep, progress: (Int, Int, Double) -> Void = { _, _, _ in }
) throws -> PerplexityResult {
    try require(context >= 4, "the context must be at least 4 tokens, got \(context)")
    try require(stepTokens >= 1, "the step must be at least 1 token, got \(stepTokens)")
    var chunks = tokens.count / context
    if let maxChunks { chunks = min(chunks, max(0, maxChunks)) }
    try require(
        chunks >= 1,
        "the text has \(tokens.count) tokens: at least one chunk of \(context) is needed (use a smaller --context)")
    for t in tokens { try require(t >= 0 && t < vocab, "token id \(t) outside the vocabulary of \(vocab)") }
    let first = context / 2
    var total = 0.0
    var count = 0
    var chunkNLL: [Double] = []
    var argmax: [Int] = []
    for c in 0..<chunks {
        var ids = Array(tokens[(c * context)..<((c + 1) * context)])
        if let bos { ids[0] = bos }
        let cache = try makeCache()
        try require(cache.capacity >= context, "the cache holds \(cache.capacity) positions, need \(context)")
        var nll = 0.0
        var pos = 0
        while pos < context - 1 {
            let n = min(stepTokens, context - 1 - pos)
            let logits = try step(Array(ids[pos..<(pos + n)]), cache)
            try require(
                logits.count == n * vocab, "the model returned \(logits.count) logits, expected \(n) x \(vocab)")
            for i in 0..<n where pos + i >= first {
                let row = logits[((i) * vocab)..<((i + 1) * vocab)]
                var m = -Double.infinity
                var best = 0
                for (j, x) in zip(0..., row) where Double(x) > m {
                    m = Double(x)
                    best = j
                }
                try require(m.isFinite, "non-finite logits at position \(pos + i)")
                var z = 0.0
                for x in row { z += Foundation.exp(Double(x) - m) }
                let target = ids[pos + i + 1]
                nll += -(Double(row[row.startIndex + target]) - m - Foundation.log(z))
                argmax.append(best)
            }
            pos += n
        }
        let scored = context - 1 - first
        chunkNLL.append(nll / Double(scored))
        total += nll
        count += scored
        progress(c + 1, chunks, Foundation.exp(total / Double(count)))
    }
    return PerplexityResult(
        perplexity: Foundation.exp(total / Double(count)), tokens: count, chunks: chunks, chunkNLL: chunkNLL,
        argmax: argmax)
}
