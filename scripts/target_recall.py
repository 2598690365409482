#!/usr/bin/env python3
"""What `engine index search --target-recall T` delivers, and what the whole command costs.

For one data set: ground truth by numpy brute force (independent of Engine), an index built
with the defaults (its calibration table included), then for each target T:
  - `engine index search --target-recall T` over the queries, its ids read back and scored
    against the ground truth (recall@10), its CPU time (user + sys of the child process, from
    getrusage: opening, verification, query loading, output included);
  - `engine bench ann --target-recall T` on the same index and queries, 1 thread: its
    steady-state QPS (after an untimed warm-up pass), turned into CPU seconds for the same queries;
  - --rounds R (default 3) alternated runs of both, and the medians of each.
Prints a markdown table and, with --json, appends one line per target.

Sets: fashion-mnist (apt-get install dataset-fashion-mnist; 60k x 784, test images as queries),
synth (n x 128 clustered Gaussian as scripts/bench_ann.py draws it), wordnet (--wordnet-npy FILE
written by `engine embed`, cosine; a seeded held-out part as queries), or --base/--queries files.

Usage: python3 scripts/target_recall.py --dataset fashion-mnist --queries 5000 --targets 0.9,0.95
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ann import dataset, write_ivecs  # noqa: E402  (the same sets, drawn the same way)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.environ.get("ENGINE", os.path.join(ROOT, ".build/release/engine"))


def ground_truth(base, queries, metric, k=10):
    """Exact top-k by numpy, in blocks of base rows."""
    if metric == "cos":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_d = np.full((len(queries), k), np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    qn = (queries.astype(np.float64) ** 2).sum(1)
    for s in range(0, len(base), 100_000):
        b = base[s: s + 100_000]
        dots = queries @ b.T
        if metric == "l2":
            d = (b.astype(np.float64) ** 2).sum(1)[None, :] - 2 * dots + qn[:, None]
        else:
            d = -dots
        d = d.astype(np.float32)
        cand_d = np.concatenate([best_d, d], axis=1)
        cand_i = np.concatenate([best_i, np.arange(s, s + len(b))[None, :].repeat(len(queries), 0)], axis=1)
        sel = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
        best_d = np.take_along_axis(cand_d, sel, 1)
        best_i = np.take_along_axis(cand_i, sel, 1)
    return best_i


def read_ivecs(path):
    a = np.fromfile(path, dtype=np.int32)
    k = a[0]
    return a.reshape(-1, k + 1)[:, 1:]


def child_cpu(cmd, threads=1):
    """Runs cmd with ENGINE_THREADS=threads; returns (stdout+stderr, CPU seconds of the child, wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "ENGINE_THREADS": str(threads)})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout + r.stderr, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "synth", "wordnet"])
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--synth-n", type=int, default=1_000_000)
    ap.add_argument("--wordnet-npy")
    ap.add_argument("--targets", default="0.9,0.95")
    ap.add_argument("--build-args", default="", help="extra `engine index build` arguments")
    ap.add_argument("--rounds", type=int, default=3,
                    help="search and bench runs per target, alternated; the table gives their medians "
                         "(this VM's speed drifts by 10-20%% within minutes)")
    ap.add_argument("--json")
    a = ap.parse_args()
    base, queries, metric = dataset(a)
    print(f"# {a.dataset}: {base.shape[0]} x {base.shape[1]} ({metric}), {len(queries)} queries; "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    gt = ground_truth(base, queries, metric)
    d = tempfile.mkdtemp(prefix="engine-target-")
    try:
        np.save(f"{d}/base.npy", base)
        np.save(f"{d}/queries.npy", queries)
        write_ivecs(f"{d}/gt.ivecs", gt)
        del base
        t = time.perf_counter()
        out, build_cpu, build_wall = child_cpu([ENGINE, "index", "build", "--input", f"{d}/base.npy", "--output",
                                                f"{d}/idx", "--metric", metric] + a.build_args.split(),
                                               threads=os.cpu_count())
        calib = [l for l in out.splitlines() if l.startswith("calibration")]
        print(f"# build {build_wall:.1f} s; {calib[0] if calib else 'no calibration line'}", file=sys.stderr)
        # the fixed cost of one process: open, one query, output (median of 5)
        np.save(f"{d}/one.npy", queries[:1])
        one = sorted(child_cpu([ENGINE, "index", "search", "--index", f"{d}/idx", "--queries", f"{d}/one.npy",
                                "--output", f"{d}/one.ivecs", "--force"])[1] for _ in range(5))[2]
        print("| set | target | nprobe | recall@10 delivered | - target | search CPU s | of which 1-query process | "
              "bench ann QPS | bench CPU s (same queries) | search / bench |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for target in [float(x) for x in a.targets.split(",")]:
            cpus, walls, qpss = [], [], []
            for _ in range(a.rounds):
                out, cpu, wall = child_cpu([ENGINE, "index", "search", "--index", f"{d}/idx", "--queries",
                                            f"{d}/queries.npy", "--target-recall", str(target), "--output",
                                            f"{d}/ids.ivecs", "--force"])
                bench, _, _ = child_cpu([ENGINE, "bench", "ann", "--index", f"{d}/idx", "--queries", f"{d}/queries.npy",
                                         "--gt", f"{d}/gt.ivecs", "--nprobe", "1", "--target-recall", str(target)])
                row = [l for l in bench.splitlines() if l.startswith("| target")][0]
                cells = [c.strip() for c in row.strip("|").split("|")]
                cpus.append(cpu)
                walls.append(wall)
                qpss.append(float(cells[3]))
            nprobe = out.split("nprobe ")[-1].split()[0]
            found = read_ivecs(f"{d}/ids.ivecs")
            rec = np.mean([len(set(found[i]) & set(gt[i])) / 10 for i in range(len(gt))])
            cpu, qps = float(np.median(cpus)), float(np.median(qpss))
            bench_cpu = len(gt) / qps
            print(f"| {a.dataset} | {target} | {nprobe} | {rec:.4f} | {rec - target:+.4f} | {cpu:.3f} | {one:.3f} | {qps:.0f} | "
                  f"{bench_cpu:.3f} | {cpu / bench_cpu:.2f} |")
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps({"set": a.dataset, "target": target, "nprobe": nprobe, "recall": rec,
                                        "search_cpu_s": cpu, "search_wall_s": float(np.median(walls)),
                                        "one_query_cpu_s": one, "bench_qps": qps,
                                        "bench_recall": float(cells[2]), "queries": len(gt), "rounds": a.rounds,
                                        "search_cpu_s_rounds": cpus, "bench_qps_rounds": qpss,
                                        "build_s": build_wall, "calibration": calib[0] if calib else None,
                                        "load": os.getloadavg()[0]}) + "\n")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
