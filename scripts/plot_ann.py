#!/usr/bin/env python3
"""Recall@10 vs QPS plot (SVG) from the JSON lines of scripts/bench_ann.py --json.

Usage: python3 scripts/plot_ann.py results.jsonl docs/ann-fashion-mnist.svg "Fashion-MNIST 60k x 784"
Needs matplotlib (pip install matplotlib).
"""
import json
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    src, out, title = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
    rows = [json.loads(l) for l in open(src) if l.strip()]
    series = defaultdict(list)
    for r in rows:
        series[(r["system"], r["threads"])].append((r["recall10"], r["qps"]))
    fig, ax = plt.subplots(figsize=(8, 5))
    for (system, threads), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                linestyle="-" if threads == 1 else "--", label=f"{system}, {threads} thr")
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries per second")
    ax.set_yscale("log")
    ax.set_xlim(0.5, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    main()
