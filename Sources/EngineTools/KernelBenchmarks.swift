import Engine
import CKernels
import Foundation

/// Kernel throughput measured side by side with this machine's limits (stream read bandwidth,
/// OpenBLAS sgemm) in the same run. Release builds only; medians of repeated runs.
public enum KernelBenchmarks {
    /// One line of the report.
    public struct Row: Sendable {
        /// What was measured.
        public var name: String
        /// The measured value.
        public var value: Double
        /// Its unit.
        public var unit: String
        /// value / reference, with what the reference is.
        public var ratio: Double?
        /// What the ratio compares with.
        public var ratioOf: String
        /// The project goal for this figure, if any (docs/benchmarks.md), and whether it was met.
        public var target: String
        /// Whether the target was met (nil: no target).
        public var met: Bool?
    }

    /// OpenBLAS sgemm 1024^3 on one thread, GFLOP/s (median of `reps`): the f32 matrix-product
    /// limit the model benchmarks compare with. Sets OpenBLAS's pool to one thread (callers
    /// restore their own count).
    public static func sgemmLimit(reps: Int = 5) -> Double {
        ck_blas_set_threads(1)
        let gm = 1024
        var rng = SeededRandom(seed: 7)
        let a = rng.uniform(gm * gm)
        let bm = rng.uniform(gm * gm)
        var c = [Float](repeating: 0, count: gm * gm)
        let tg = a.withUnsafeBufferPointer { ap in
            bm.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    median(reps: reps) {
                        ck_blas_sgemm(
                            false, false, gm, gm, gm, 1, ap.baseAddress, gm, bp.baseAddress, gm, 0, cp.baseAddress, gm)
                    }
                }
            }
        }
        return 2 * Double(gm * gm * gm) / tg / 1e9
    }

    /// Median wall time in seconds of `reps` runs after one warm-up.
    static func median(reps: Int, _ body: () -> Void) -> Double {
        body()
        var t: [Double] = []
        for _ in 0..<reps {
            let s = DispatchTime.now().uptimeNanoseconds
            body()
            t.append(Double(DispatchTime.now().uptimeNanoseconds - s) * 1e-9)
        }
        t.sort()
        return t[t.count / 2]
    }

    /// Keeps a value observable so the optimiser cannot drop the work.
    @inline(never) static func sink<T>(_ x: T) { withExtendedLifetime(x) {} }

    /// Runs every benchmark (smaller buffers with `quick`); `progress` names each as it starts.
    public static func run(quick: Bool = false, progress: (String) -> Void = { _ in }) throws -> [Row] {
        let reps = quick ? 3 : 9
        let big = quick ? 64 << 20 : 256 << 20 // bytes of the RAM-resident buffers
        var rows: [Row] = []
        let k1 = try Kernels.selected(threads: 1)
        let k2 = try Kernels.selected(threads: 2)
        var rng = SeededRandom(seed: 99)

        // --- machine limits ---
        progress("stream read")
        let n = big / 4
        let buf = [Float](repeating: 1, count: n)
        let tRead = buf.withUnsafeBufferPointer { b in
            median(reps: reps) { sink(ck_membw_stream_read_f32(b.baseAddress, n)) }
        }
        let readBW = Double(big) / tRead / 1e9
        // The machine is shared and its bandwidth drifts: every DRAM-bound kernel is compared
        // with a stream read measured right before and right after it (mean of the two medians).
        func streamNow() -> Double {
            let t = buf.withUnsafeBufferPointer { b in
                median(reps: 3) { sink(ck_membw_stream_read_f32(b.baseAddress, n)) }
            }
            return Double(big) / t / 1e9
        }
        func adjacent(_ body: () throws -> Double) rethrows -> (Double, Double) {
            let before = streamNow()
            let t = try body()
            return (t, (before + streamNow()) / 2)
        }
        rows.append(
            Row(
                name: "stream read, 1 thread (limit)", value: readBW, unit: "GB/s", ratio: nil, ratioOf: "", target: "",
                met: nil))
        let tRead2 = buf.withUnsafeBufferPointer { b in
            median(reps: reps) {
                Threads.parallelFor(2, threads: 2) { p in
                    let r = Threads.range(n, parts: 2, index: p)
                    sink(ck_membw_stream_read_f32(b.baseAddress! + r.lowerBound, r.count))
                }
            }
        }
        let readBW2 = Double(big) / tRead2 / 1e9
        rows.append(
            Row(
                name: "stream read, 2 threads (limit)", value: readBW2, unit: "GB/s", ratio: nil, ratioOf: "",
                target: "", met: nil))

        progress("sgemm")
        ck_blas_set_threads(1)
        let sgemmPeak = sgemmLimit(reps: reps)
        rows.append(
            Row(
                name: "OpenBLAS sgemm 1024^3, 1 thread (limit)", value: sgemmPeak, unit: "GFLOP/s", ratio: nil,
                ratioOf: "", target: "", met: nil))

        // --- Hamming ---
        progress("hamming")
        do {
            let nL2 = 8192 // 256 KiB of 256-bit codes: resident in L2
            let codes = rng.words(nL2 * 4)
            let q = rng.words(4)
            var out = [UInt32](repeating: 0, count: nL2)
            let inner = 200
            let t = try codes.withUnsafeBufferPointer { cp in
                try q.withUnsafeBufferPointer { qp in
                    try out.withUnsafeMutableBufferPointer { op in
                        var err: Error?
                        let t = median(reps: reps) {
                            for _ in 0..<inner {
                                do { try k1.hammingDistances(query: qp, codes: cp, bits: 256, into: op) } catch {
                                    err = error
                                }
                            }
                        }
                        if let err { throw err }
                        return t
                    }
                }
            }
            let rate = Double(nL2 * inner) / t / 1e9
            rows.append(
                Row(
                    name: "hamming 256-bit, L2-resident, 1 thread", value: rate, unit: "G dist/s", ratio: nil,
                    ratioOf: "", target: ">= 2.0 G/s", met: rate >= 2.0))

            let nRAM = big / 32
            let bigCodes = rng.words(nRAM * 4)
            var bigOut = [UInt32](repeating: 0, count: nRAM)
            let (tb, bwNow) = try adjacent {
                try bigCodes.withUnsafeBufferPointer { cp in
                    try q.withUnsafeBufferPointer { qp in
                        try bigOut.withUnsafeMutableBufferPointer { op in
                            var err: Error?
                            let t = median(reps: reps) {
                                do { try k1.hammingDistances(query: qp, codes: cp, bits: 256, into: op) } catch {
                                    err = error
                                }
                            }
                            if let err { throw err }
                            return t
                        }
                    }
                }
            }
            let bw = Double(nRAM * 32) / tb / 1e9
            rows.append(
                Row(
                    name: "hamming 256-bit, from RAM, 1 thread", value: bw, unit: "GB/s", ratio: bw / bwNow,
                    ratioOf: "adjacent stream read (\(String(format: "%.1f", bwNow)) GB/s)",
                    target: ">= 0.80 of read BW", met: bw / bwNow >= 0.8))
        }

        // --- attention decode ---
        progress("attention decode")
        // (heads, kvHeads, d): Llama-2-7B (MHA), Llama-3-8B (GQA 4), SmolLM2-135M (GQA 3).
        for (h, kvh, d) in [(32, 32, 128), (32, 8, 128), (9, 3, 64)] {
            let shape = try AttentionShape(heads: h, kvHeads: kvh, headDim: d)
            // T = 8192 (MHA: K + V = 256 MiB, GQA-4: 64 MiB, SmolLM2: 12 MiB).
            let T = quick ? 2048 : 8192
            let kv = rng.uniform(T * kvh * d)
            let kv2 = rng.uniform(T * kvh * d)
            let q = rng.uniform(h * d)
            var out = [Float](repeating: 0, count: h * d)
            let kq = try QuantizedMatrix(quantizing: kv, rows: T * kvh, cols: d, type: .q8_0, kernels: k1)
            let vq = try QuantizedMatrix(quantizing: kv2, rows: T * kvh, cols: d, type: .q8_0, kernels: k1)
            func time(_ k: Kernels, quantized: Bool, int8: Bool) throws -> Double {
                var err: Error?
                let t: Double
                if quantized {
                    t = kq.withUnsafeBytes { kp in
                        vq.withUnsafeBytes { vp in
                            q.withUnsafeBufferPointer { qp in
                                out.withUnsafeMutableBufferPointer { op in
                                    median(reps: reps) {
                                        do {
                                            try k.attentionDecode(
                                                shape: shape, q: qp, keys: kp, keyType: .q8_0, values: vp,
                                                valueType: .q8_0, length: T, int8Scores: int8, into: op)
                                        } catch { err = error }
                                    }
                                }
                            }
                        }
                    }
                } else {
                    t = kv.withUnsafeBytes { kp in
                        kv2.withUnsafeBytes { vp in
                            q.withUnsafeBufferPointer { qp in
                                out.withUnsafeMutableBufferPointer { op in
                                    median(reps: reps) {
                                        do {
                                            try k.attentionDecode(
                                                shape: shape, q: qp, keys: kp, keyType: .f32, values: vp,
                                                valueType: .f32, length: T, into: op)
                                        } catch { err = error }
                                    }
                                }
                            }
                        }
                    }
                }
                if let err { throw err }
                return t
            }
            let label = "\(h)/\(kvh) heads, d=\(d), T=\(T)"
            let (tf, bwNow) = try adjacent { try time(k1, quantized: false, int8: false) }
            let bwF = Double(2 * T * kvh * d * 4) / tf / 1e9
            let flopBound = kvh == h ? "" : " (GQA: \(h / kvh) FMAs per cached value)"
            let cached =
                2 * T * kvh * d * 4 < 64 << 20 ? " [K+V \((2 * T * kvh * d * 4) >> 20) MiB: may be cache-resident]" : ""
            rows.append(
                Row(
                    name: "attention decode f32 KV, \(label), 1 thread\(flopBound)\(cached)", value: tf * 1e3,
                    unit: "ms", ratio: bwF / bwNow,
                    ratioOf: "adjacent stream read (kernel \(String(format: "%.1f", bwF)) GB/s)",
                    target: ">= 0.70 of read BW", met: bwF / bwNow >= 0.7))
            let tq = try time(k1, quantized: true, int8: true)
            rows.append(
                Row(
                    name: "attention decode Q8_0 KV (int8 scores), \(label), 1 thread", value: tq * 1e3, unit: "ms",
                    ratio: tf / tq,
                    ratioOf: "speed-up over f32 KV", target: ">= 2x f32 KV", met: tf / tq >= 2))
            if kvh == 8 {
                let tqe = try time(k1, quantized: true, int8: false)
                rows.append(
                    Row(
                        name: "attention decode Q8_0 KV (f32 scores), \(label), 1 thread", value: tqe * 1e3, unit: "ms",
                        ratio: tf / tqe, ratioOf: "speed-up over f32 KV", target: "", met: nil))
                let tf2 = try time(k2, quantized: false, int8: false)
                let bwF2 = Double(2 * T * kvh * d * 4) / tf2 / 1e9
                rows.append(
                    Row(
                        name: "attention decode f32 KV, \(label), 2 threads", value: tf2 * 1e3, unit: "ms",
                        ratio: bwF2 / readBW2, ratioOf: "2-thread stream read", target: "", met: nil))
            }
        }

        // --- attention prefill ---
        progress("attention prefill")
        do {
            let shape = try AttentionShape(heads: 9, kvHeads: 3, headDim: 64) // SmolLM2-135M
            let T = quick ? 256 : 1024
            let q = rng.uniform(T * 9 * 64)
            let kk = rng.uniform(T * 3 * 64)
            let v = rng.uniform(T * 3 * 64)
            var out = [Float](repeating: 0, count: q.count)
            var err: Error?
            let t = q.withUnsafeBufferPointer { qp in
                kk.withUnsafeBufferPointer { kp in
                    v.withUnsafeBufferPointer { vp in
                        out.withUnsafeMutableBufferPointer { op in
                            median(reps: reps) {
                                do { try k1.attentionPrefill(shape: shape, q: qp, k: kp, v: vp, into: op) } catch {
                                    err = error
                                }
                            }
                        }
                    }
                }
            }
            if let err { throw err }
            let flops = 2.0 * 2.0 * Double(T) * Double(T + 1) / 2 * 9 * 64 // QK^T and PV over the causal triangle
            let gf = flops / t / 1e9
            rows.append(
                Row(
                    name: "attention prefill T=\(T), 9/3 heads, d=64, 1 thread", value: gf, unit: "GFLOP/s",
                    ratio: gf / sgemmPeak, ratioOf: "sgemm peak", target: "", met: nil))
        }

        // --- quantized GEMV ---
        progress("gemv")
        do {
            // 32768 x 4096: every format (>= 75 MB) exceeds the last-level cache, so this is DRAM.
            let r = quick ? 4096 : 32768
            let cdim = 4096
            let w = rng.uniform(r * cdim)
            let x = rng.uniform(cdim)
            var y = [Float](repeating: 0, count: r)
            let (tBlas, bwB) = adjacent {
                w.withUnsafeBufferPointer { wp in
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { yp in
                            median(reps: reps) {
                                ck_blas_sgemv(
                                    false, r, cdim, 1, wp.baseAddress, cdim, xp.baseAddress, 0, yp.baseAddress)
                            }
                        }
                    }
                }
            }
            let bwBlas = Double(r * cdim * 4) / tBlas / 1e9
            rows.append(
                Row(
                    name: "OpenBLAS sgemv f32 \(r)x4096, 1 thread (peer)", value: bwBlas, unit: "GB/s",
                    ratio: bwBlas / bwB, ratioOf: "adjacent stream read", target: "", met: nil))
            for t in [RowType.f32, .q8_0, .q4_0, .q4_1] {
                let plain = try QuantizedMatrix(quantizing: w, rows: r, cols: cdim, type: t, kernels: k1)
                // 4-bit: the plain rows, then the interleaved decode layout (same bytes)
                let variants: [(QuantizedMatrix, Numerics)] =
                    t.isQuantized
                    ? [(plain, .exact), (plain, .int8)]
                        + (t == .q4_0 || t == .q4_1 ? [(plain.interleaved(), .int8)] : [])
                    : [(plain, .exact)]
                for (m, numerics) in variants {
                    var err: Error?
                    let (tt, bwNow) = adjacent {
                        x.withUnsafeBufferPointer { xp in
                            y.withUnsafeMutableBufferPointer { yp in
                                median(reps: reps) {
                                    do { try k1.gemv(m, x: xp, into: yp, numerics: numerics) } catch { err = error }
                                }
                            }
                        }
                    }
                    if let err { throw err }
                    let bw = Double(m.rows * m.rowStride) / tt / 1e9
                    rows.append(
                        Row(
                            name:
                                """
                                gemv \(t)\(m.isInterleaved ? " interleaved x8" : "") \(r)x4096 \
                                (\(numerics == .exact ? "exact f32" : "int8") activations), 1 thread
                                """,
                            value: tt * 1e6, unit: "us",
                            ratio: bw / bwNow,
                            ratioOf: "adjacent stream read (kernel \(String(format: "%.1f", bw)) GB/s)", target: "",
                            met: nil))
                }
            }
        }

        // --- int8 GEMM (prefill) against the core's int8 multiply-add peak ---
        progress("int8 gemm")
        do {
            var width: Int32 = 0
            let iters = quick ? 1 << 20 : 1 << 22
            var macs: UInt64 = 0
            let tPeak = median(reps: reps) { macs = ck_membw_int8_dot_peak(iters, &width) }
            if macs > 0 {
                let peak = Double(macs) / tPeak / 1e9
                let instruction = width == 512 ? "vpdpbusd" : "vpmaddubsw"
                rows.append(
                    Row(
                        name: "int8 multiply-add peak (\(instruction) \(width)-bit), 1 thread (limit)",
                        value: peak, unit: "G MAC/s", ratio: nil, ratioOf: "", target: "", met: nil))
                // SmolLM2's MLP up projection (1536 x 576) on a 128-token prompt: the interleaved
                // Q4_1 layout and int8 activations, as prefill runs it
                let (r, c, tokens) = (1536, 576, 128)
                let w = try QuantizedMatrix(quantizing: rng.uniform(r * c), rows: r, cols: c, type: .q4_1, kernels: k1)
                    .interleaved()
                let x = rng.uniform(tokens * c)
                var y = [Float](repeating: 0, count: tokens * r)
                var err: Error?
                let t = x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        median(reps: reps) {
                            do { try k1.linear(w, x: xp, tokens: tokens, into: yp, numerics: .int8) } catch {
                                err = error
                            }
                        }
                    }
                }
                if let err { throw err }
                let rate = Double(r * c * tokens) / t / 1e9
                rows.append(
                    Row(
                        name: "linear Q4_1 interleaved x8 \(r)x\(c), \(tokens) tokens (int8 activations), 1 thread",
                        value: rate, unit: "G MAC/s", ratio: rate / peak, ratioOf: "int8 multiply-add peak",
                        target: ">= 0.5 of peak", met: rate / peak >= 0.5))
            }
        }

        // --- PQ scans at equal code bytes (16 bytes per vector) ---
        progress("pq")
        do {
            let nv = quick ? 1 << 18 : 1 << 21
            let codes8 = (0..<(nv * 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let table8 = rng.uniform(16 * 256)
            var out8 = [Float](repeating: 0, count: nv)
            var err: Error?
            let t8 = codes8.withUnsafeBufferPointer { cp in
                table8.withUnsafeBufferPointer { tp in
                    out8.withUnsafeMutableBufferPointer { op in
                        median(reps: reps) {
                            do { try k1.pqScan8(codes: cp, subquantizers: 16, table: tp, into: op) } catch {
                                err = error
                            }
                        }
                    }
                }
            }
            let codes4 = (0..<(nv * 32)).map { _ in UInt8(rng.next() % 16) }
            let packed = try PackedPQ4Codes(codes: codes4, subquantizers: 32)
            let table4 = rng.uniform(32 * 16, 0, 4)
            let qt = try table4.withUnsafeBufferPointer { try QuantizedPQ4Table(table: $0, subquantizers: 32) }
            var out4 = [UInt16](repeating: 0, count: packed.blocks * 32)
            let t4 = out4.withUnsafeMutableBufferPointer { op in
                median(reps: reps) { do { try k1.pqScan4(codes: packed, table: qt, into: op) } catch { err = error } }
            }
            if let err { throw err }
            let r8 = Double(nv) / t8 / 1e6
            let r4 = Double(nv) / t4 / 1e6
            rows.append(
                Row(
                    name: "PQ 8-bit scan, M=16 (16 B/code), 1 thread", value: r8, unit: "M codes/s",
                    ratio: r8 * 16e6 / 1e9 / readBW, ratioOf: "stream read", target: "", met: nil))
            rows.append(
                Row(
                    name: "PQ 4-bit fast-scan, M=32 (16 B/code), 1 thread", value: r4, unit: "M codes/s",
                    ratio: r4 / r8, ratioOf: "8-bit scan codes/s", target: ">= 4x 8-bit", met: r4 / r8 >= 4))
        }
        ck_blas_set_threads(Int32(Threads.defaultCount))
        return rows
    }

    /// Markdown table of the rows.
    public static func markdown(_ rows: [Row]) -> String {
        var s = "| benchmark | value | ratio | ratio of | target | met |\n|---|---|---|---|---|---|\n"
        for r in rows {
            let ratio = r.ratio.map { String(format: "%.2f", $0) } ?? ""
            let met = r.met.map { $0 ? "yes" : "**no**" } ?? ""
            s +=
                """
                | \(r.name) | \(String(format: "%.3g", r.value)) \(r.unit) | \(ratio) | \(r.ratioOf) | \
                \(r.target) | \(met) |\n
                """
        }
        return s
    }
}
