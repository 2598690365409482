import Engine
import Foundation
import Metrics

/// What a generation stream yields.
public enum GenerationEvent: Sendable, Equatable {
    /// A generated token id (permuted for an encrypted model); stop tokens are not yielded.
    case token(Int)
    /// The end: why, and how many prompt and generated tokens (a stop token counts).
    case finished(reason: FinishReason, promptTokens: Int, completionTokens: Int)
}

/// Why a generation ended (OpenAI's `finish_reason`).
public enum FinishReason: String, Sendable {
    /// A stop token was generated.
    case stop
    /// `max_tokens` reached or the context is full.
    case length
}

/// Continuous batching over one decoder: up to `slots` sequences run together, each with its own
/// KV cache; every step runs one `LlamaModel.forward(batch:)` in which every decoding sequence
/// brings its last token and sequences still in their prompt bring its next piece, so the weights
/// are read once per step for all of them. Prefill is chunked: a step carries at most
/// `prefillChunk` prompt tokens in all (the first waiting prompt always gets its share), so a long
/// new prompt delays the running streams by one chunk's time per step instead of its whole
/// length. Requests wait in a bounded queue and join at the next step; a sequence whose consumer
/// goes away (client disconnected) is dropped before the next step.
///
/// The quantized kernels compute each row of a batch exactly as they compute it alone, and
/// attention over a chunk against the cached positions computes what the whole prompt would, so a
/// request's tokens equal a local run's whatever else shares the batch and however its prompt is
/// cut (ServerTests checks both with native quantized weights).
public final class GenerationScheduler: @unchecked Sendable {
    /// The decoder.
    public let model: LlamaModel
    /// Positions a sequence may use (the model\'s context, or less with `engine serve --context`).
    public let context: Int
    /// Sequences decoded together.
    public let slots: Int
    /// Requests that may wait for a slot before new ones are refused.
    public let queueLimit: Int
    /// Most prompt tokens one step carries (chunked prefill).
    public let prefillChunk: Int

    final class Sequence: @unchecked Sendable {
        let prompt: [Int]
        var sampler: Sampler
        let stops: Set<Int>
        let maxTokens: Int
        let continuation: AsyncStream<GenerationEvent>.Continuation
        var cache: (any KVCache)?
        var last: Int?
        var generated = 0
        /// Prompt tokens already in the cache.
        var prefilled = 0
        /// Set (under the scheduler's lock) when the consumer went away.
        var cancelled = false

        init(
            prompt: [Int], sampler: Sampler, stops: Set<Int>, maxTokens: Int,
            continuation: AsyncStream<GenerationEvent>.Continuation
        ) {
            self.prompt = prompt
            self.sampler = sampler
            self.stops = stops
            self.maxTokens = maxTokens
            self.continuation = continuation
        }
    }

    private let condition = NSCondition()
    private var pending: [Sequence] = []
    private var active: [Sequence] = []
    private var stopping = false
    private var thread: Thread?
    private let finishedGroup = DispatchGroup()

    private let activeGauge = Gauge(label: "engine_generation_active_sequences")
    private let queueGauge = Gauge(label: "engine_generation_queued_requests")
    private let promptCounter = Counter(label: "engine_prompt_tokens_total")
    private let tokenCounter = Counter(label: "engine_generated_tokens_total")
    private let stepTimer = Metrics.Timer(label: "engine_decode_step_seconds")
    private let batchRecorder = Recorder(label: "engine_decode_batch_rows")

    /// Type of each sequence's KV cache.
    public let kvCache: KVCacheConfig

    /// A scheduler over `model`; call `start()` before submitting.
    public init(
        model: LlamaModel, slots: Int, queueLimit: Int, context: Int? = nil, prefillChunk: Int = 128,
        kvCache: KVCacheConfig = .f32
    ) {
        self.kvCache = kvCache
        self.model = model
        self.prefillChunk = max(1, prefillChunk)
        self.context = min(context ?? model.config.contextLength, model.config.contextLength)
        self.slots = max(1, slots)
        self.queueLimit = max(0, queueLimit)
    }

    /// Starts the decode thread.
    public func start() {
        finishedGroup.enter()
        let t = Thread { [self] in
            run()
            finishedGroup.leave()
        }
        t.name = "engine-decode"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    /// Refuses new requests, lets running and queued sequences finish, and waits for the decode
    /// thread (at most `timeout` seconds; then streams still running are ended).
    public func shutdown(timeout: Double = 30) {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
        if finishedGroup.wait(timeout: .now() + timeout) == .timedOut {
            condition.withLock {
                for s in active + pending { s.cancelled = true }
                condition.broadcast()
            }
            _ = finishedGroup.wait(timeout: .now() + 5)
        }
    }

    /// Queues a generation. Throws 503 (with Retry-After) when the queue is full or the server is
    /// shutting down, 400 for a prompt the context cannot hold.
    public func submit(prompt: [Int], parameters: GenerationParameters, stops: Set<Int>) throws(APIError)
        -> AsyncStream<GenerationEvent>
    {
        let ctx = context
        guard !prompt.isEmpty else { throw .badRequest("the prompt is empty") }
        guard prompt.count <= ctx else {
            throw .badRequest("the prompt has \(prompt.count) tokens but the context holds \(ctx)")
        }
        for t in prompt where t < 0 || t >= model.config.vocab {
            throw .badRequest("token id \(t) is out of range 0..<\(model.config.vocab)")
        }
        let sampler: Sampler
        do { sampler = try Sampler(parameters) } catch { throw .badRequest("\(error)") }
        let (stream, continuation) = AsyncStream<GenerationEvent>.makeStream()
        let s = Sequence(
            prompt: prompt, sampler: sampler, stops: stops, maxTokens: parameters.maxTokens, continuation: continuation)
        let refusal: APIError? = condition.withLock {
            if stopping { return APIError(.serviceUnavailable, "the server is shutting down", retryAfter: 1) }
            // admitted but not yet running counts too: a burst must not all land in the queue
            if active.count + pending.count >= slots + queueLimit {
                return APIError(
                    .serviceUnavailable,
                    "all \(slots) generation slots are busy and \(queueLimit) requests are waiting; retry later",
                    retryAfter: 1)
            }
            pending.append(s)
            queueGauge.record(pending.count)
            condition.broadcast()
            return nil
        }
        if let refusal { throw refusal }
        continuation.onTermination = { [weak self, weak s] reason in
            guard case .cancelled = reason, let self, let s else { return }
            self.condition.withLock { s.cancelled = true }
        }
        return stream
    }

    private func run() {
        while true {
            condition.lock()
            while active.isEmpty && pending.isEmpty && !stopping { condition.wait() }
            if stopping && active.isEmpty && pending.isEmpty {
                condition.unlock()
                return
            }
            for s in active + pending where s.cancelled { s.continuation.finish() }
            active.removeAll { $0.cancelled }
            pending.removeAll { $0.cancelled }
            while active.count < slots && !pending.isEmpty { active.append(pending.removeFirst()) }
            let batch = active
            activeGauge.record(active.count)
            queueGauge.record(pending.count)
            condition.unlock()
            if batch.isEmpty { continue }
            step(batch)
        }
    }

    /// One forward step for `batch` and one sampled token for each sequence.
    private func step(_ batch: [Sequence]) {
        var rows: [(tokens: [Int], cache: any KVCache)] = []
        var ready: [Sequence] = []
        var budget = prefillChunk
        for s in batch {
            if s.cache == nil {
                // as TextGenerator sizes it: the prompt plus what may be generated, within the context
                let ctx = context
                let cap = min(ctx, s.prompt.count + min(s.maxTokens, ctx))
                do { s.cache = try model.makeCache(capacity: max(cap, 1), config: kvCache) } catch {
                    finish(s, error: error)
                    continue
                }
            }
            if s.prefilled < s.prompt.count {
                guard budget > 0 else { continue } // waits for the next step
                let n = min(budget, s.prompt.count - s.prefilled)
                rows.append((tokens: Array(s.prompt[s.prefilled..<(s.prefilled + n)]), cache: s.cache!))
                s.prefilled += n
                budget -= n
                promptCounter.increment(by: n)
            } else {
                rows.append((tokens: [s.last!], cache: s.cache!))
            }
            ready.append(s)
        }
        guard !rows.isEmpty else { return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let logits: [[Float]]
        do { logits = try model.forward(batch: rows) } catch {
            for s in ready { finish(s, error: error) }
            return
        }
        stepTimer.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - t0))
        batchRecorder.record(rows.count)
        for (s, l) in zip(ready, logits) where s.prefilled == s.prompt.count && s.cache != nil {
            let cache = s.cache!
            // the loop of TextGenerator: sample while tokens are wanted and the cache has room
            guard s.generated < s.maxTokens && cache.length < cache.capacity else {
                finish(s, reason: .length)
                continue
            }
            let next = s.sampler.next(l)
            s.generated += 1
            tokenCounter.increment()
            if s.stops.contains(next) {
                finish(s, reason: .stop)
                continue
            }
            s.continuation.yield(.token(next))
            if s.generated >= s.maxTokens || cache.length >= cache.capacity {
                finish(s, reason: .length)
            } else {
                s.last = next
            }
        }
    }

    private func finish(_ s: Sequence, reason: FinishReason) {
        s.continuation.yield(.finished(reason: reason, promptTokens: s.prompt.count, completionTokens: s.generated))
        s.continuation.finish()
        remove(s)
    }

    private func finish(_ s: Sequence, error: any Error) {
        // a failed step ends the stream without a finished event; the handler reports it
        s.continuation.finish()
        remove(s)
    }

    private func remove(_ s: Sequence) {
        condition.withLock {
            active.removeAll { $0 === s }
            s.cache = nil
            activeGauge.record(active.count)
        }
    }
}
