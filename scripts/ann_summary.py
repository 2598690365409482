#!/usr/bin/env python3
"""Engine vs faiss IVF-Flat (batch call) and DiskANN at matched recall, from bench_ann.py JSON.

For every Engine row with recall@10 >= 0.90, the peer's QPS is interpolated linearly (in recall)
between its two settings that bracket Engine's recall; rows outside the peer's measured range
are marked "-". Usage: python3 scripts/ann_summary.py docs/data/ann-fashion-mnist.jsonl
"""
import json
import sys


def interp(points, r):
    points = sorted(points)
    for (r0, q0), (r1, q1) in zip(points, points[1:]):
        if r0 <= r <= r1 and r1 > r0:
            return q0 + (q1 - q0) * (r - r0) / (r1 - r0)
    return None


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    peers = {"faiss IVF-Flat (batch call)": "faiss", "DiskANN (disk index)": "DiskANN"}
    print("| Engine variant | setting | threads | recall@10 | QPS | faiss QPS at that recall | ratio | DiskANN QPS | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["system"].startswith("Engine") or r["recall10"] < 0.90:
            continue
        cells = []
        for name in peers:
            pts = [(p["recall10"], p["qps"]) for p in rows if p["system"] == name and p["threads"] == r["threads"]]
            q = interp(pts, r["recall10"])
            cells += ["-", "-"] if q is None else [f"{q:.0f}", f"{r['qps'] / q:.2f}x"]
        print(f"| {r['system']} | {r['setting'].split(' (')[0]} | {r['threads']} | {r['recall10']:.4f} | {r['qps']:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
