import Engine
import Foundation
import Metrics

/// Batches embedding requests: a worker thread takes every waiting request (up to `maxRows`
/// sentences) and runs them through one `BertModel.embed(ids:)` call, whose linear layers see all
/// their tokens at once.
public final class EmbeddingBatcher: @unchecked Sendable {
    /// The encoder (plain or encrypted).
    public let model: BertModel
    /// Most sentences run in one batch.
    public let maxRows: Int
    /// Requests that may wait before new ones are refused.
    public let queueLimit: Int

    struct Job {
        let ids: [[Int]]
        let done: @Sendable (Result<[Float], any Error>) -> Void
    }

    private let condition = NSCondition()
    private var pending: [Job] = []
    private var stopping = false
    private let finishedGroup = DispatchGroup()
    private let inputCounter = Counter(label: "engine_embedded_inputs_total")
    private let batchRecorder = Recorder(label: "engine_embedding_batch_rows")

    /// A batcher over `model`; call `start()` before use.
    public init(model: BertModel, maxRows: Int = 32, queueLimit: Int = 256) {
        self.model = model
        self.maxRows = max(1, maxRows)
        self.queueLimit = max(1, queueLimit)
    }

    /// Starts the worker thread.
    public func start() {
        finishedGroup.enter()
        let t = Thread { [self] in
            run()
            finishedGroup.leave()
        }
        t.name = "engine-embed"
        t.stackSize = 8 << 20
        t.start()
    }

    /// Finishes queued work and stops the worker.
    public func shutdown() {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
        _ = finishedGroup.wait(timeout: .now() + 30)
    }

    /// Sentence vectors (n x hidden) of token-id sequences, computed in a shared batch.
    public func embed(ids: [[Int]]) async throws -> [Float] {
        let vocab = model.config.vocabSize
        let longest = model.config.maxPositionEmbeddings
        for (i, s) in ids.enumerated() {
            guard !s.isEmpty else { throw APIError.badRequest("input \(i) has no tokens") }
            guard s.count <= longest else {
                throw APIError.badRequest("input \(i) has \(s.count) tokens; the model takes at most \(longest)")
            }
            for t in s where t < 0 || t >= vocab {
                throw APIError.badRequest("input \(i): token id \(t) is out of range 0..<\(vocab)")
            }
        }
        // the vectors come back through a lock-protected box (visible to ThreadSanitizer), the
        // continuation only wakes the request
        let box = ResultBox<[Float]>()
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            let refusal: APIError? = condition.withLock {
                if stopping { return APIError(.serviceUnavailable, "the server is shutting down", retryAfter: 1) }
                if pending.count >= queueLimit {
                    return APIError(.serviceUnavailable, "\(queueLimit) embedding requests are waiting", retryAfter: 1)
                }
                pending.append(
                    Job(ids: ids) {
                        box.set($0)
                        c.resume()
                    })
                condition.broadcast()
                return nil
            }
            if let refusal { c.resume(throwing: refusal) }
        }
        return try box.take()
    }

    private func run() {
        while true {
            condition.lock()
            while pending.isEmpty && !stopping { condition.wait() }
            if pending.isEmpty {
                condition.unlock()
                return
            }
            var jobs: [Job] = [pending.removeFirst()]
            var rows = jobs[0].ids.count
            while let next = pending.first, rows + next.ids.count <= maxRows {
                jobs.append(pending.removeFirst())
                rows += next.ids.count
            }
            condition.unlock()
            batchRecorder.record(rows)
            do {
                let all = try model.embed(ids: jobs.flatMap(\.ids))
                let d = model.config.hiddenSize
                var row = 0
                for j in jobs {
                    j.done(.success(Array(all[(row * d)..<((row + j.ids.count) * d)])))
                    row += j.ids.count
                }
                inputCounter.increment(by: rows)
            } catch {
                for j in jobs { j.done(.failure(error)) }
            }
        }
    }
}
