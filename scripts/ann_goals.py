#!/usr/bin/env python3
"""Issue 14 item 6's table from bench_ann.py JSON lines: each system's QPS at recall@10 0.90 and
0.95, and Engine's best (any variant within the RAM budget) as a ratio to each peer.

A system's QPS at recall R is read off its Pareto frontier (settings not beaten on both recall
and QPS by another of its settings), interpolated linearly in recall between the two frontier
points that bracket R. If every setting is above R, the fastest setting's QPS is used and
marked "*" (hnswlib's ef cannot go below k: its fastest setting is the best it offers); if none
reaches R, "-". Peers are their batch calls (no Python
per-query overhead; Engine's own figures are measured inside `engine bench ann`).

Usage: python3 scripts/ann_goals.py RUN.jsonl [--threads 1] [--ram-budget 0.05]
"""
import argparse
import json

PEERS = [("faiss IVF-Flat (batch call)", "faiss IVF-Flat", 1.3),
         ("faiss IVF-PQ fast-scan + refine (batch call)", "faiss IVF-PQ fast-scan + refine", 1.0),
         ("hnswlib (batch call)", "hnswlib", 0.5)]


def frontier(points):
    pts = sorted(points, key=lambda p: (-p[0], -p[1]))
    out, best = [], -1.0
    for r, q in pts:  # descending recall: keep a point only if it is faster than every better one
        if q > best:
            out.append((r, q))
            best = q
    return sorted(out)


def qps_at(points, target):
    f = frontier(points)
    if not f or f[-1][0] < target:
        return None, False
    if f[0][0] >= target:
        return f[0][1], True  # lower bound: the system was not run below the target
    for (r0, q0), (r1, q1) in zip(f, f[1:]):
        if r0 <= target <= r1:
            return q0 + (q1 - q0) * (target - r0) / (r1 - r0), False
    return None, False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ram-budget", type=float, default=0.05, help="Engine variants kept: RAM / raw vectors")
    ap.add_argument("--raw-bytes", type=float, help="raw f32 vector bytes (default: from faiss IVF-Flat's RAM)")
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(a.jsonl) if l.strip()]
    rows = [r for r in rows if r["threads"] == a.threads]
    systems = {}
    for r in rows:
        systems.setdefault(r["system"], []).append(r)
    raw = a.raw_bytes or rows[0].get("raw_bytes")
    if not raw:
        raise SystemExit("no raw_bytes in these rows (older bench_ann.py): pass --raw-bytes")
    print("| system | RAM (% of raw) | QPS at 0.90 | QPS at 0.95 |")
    print("|---|---|---|---|")
    at = {}
    for name, rs in systems.items():
        if "batch call" not in name and not name.startswith("Engine"):
            continue
        pts = [(r["recall10"], r["qps"]) for r in rs]
        cells = []
        for t in (0.90, 0.95):
            q, bound = qps_at(pts, t)
            at[(name, t)] = (q, bound)
            cells.append("-" if q is None else f"{q:,.0f}" + ("*" if bound else ""))
        print(f"| {name} | {100 * rs[0]['ram_bytes'] / raw:.1f}% | {cells[0]} | {cells[1]} |")
    print()
    print("| recall | Engine best (variant) | peer | peer QPS | ratio | goal |")
    print("|---|---|---|---|---|---|")
    for t in (0.90, 0.95):
        eng = [(at[(n, t)][0], n) for n in systems if n.startswith("Engine") and at.get((n, t), (None,))[0] is not None
               and systems[n][0]["ram_bytes"] <= a.ram_budget * raw]
        if not eng:
            continue
        eq, en = max(eng)
        ebound = at[(en, t)][1]
        for key, label, goal in PEERS:
            if (key, t) not in at or at[(key, t)][0] is None:
                continue
            pq, pbound = at[(key, t)]
            ratio = eq / pq
            met = "yes" if ratio >= goal else "no"
            print(f"| {t:.2f} | {eq:,.0f}{'*' if ebound else ''} ({en.replace('Engine hybrid ', '')}) | {label} | "
                  f"{pq:,.0f}{'*' if pbound else ''} | {ratio:.2f} | >= {goal} ({met}) |")
    print("\n\\* every setting of that system is above the recall: its fastest setting's QPS.")


if __name__ == "__main__":
    main()
