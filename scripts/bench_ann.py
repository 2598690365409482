#!/usr/bin/env python3
"""Side-by-side ANN benchmark: Engine's hybrid index vs faiss IVF-Flat, faiss IVF-PQ fast-scan
with exact re-ranking (--systems ...,faiss-fastscan), hnswlib, usearch and DiskANN (diskannpy-rust's disk index) on the same vectors, queries and ground truth, in one run.

Datasets:
  fashion-mnist  60k x 784 (apt-get install dataset-fashion-mnist), 10k test queries, L2
  synth          n x 128 clustered Gaussian (default 1M; --synth-n), 1k queries, L2
  wordnet        WordNet glosses embedded by Engine's MiniLM (engine embed), cosine;
                 needs --wordnet-npy FILE (n x 384) written by `engine embed`

Ground truth comes from faiss IndexFlat (exact, independent of Engine). Recall@10 is measured
against it for every system (a misbehaving peer shows up as low recall). QPS: queries run one by
one from Python for the peers (batch calls of 1), and one by one inside `engine bench ann` for
Engine. RAM is what each index keeps in memory to answer (peers: index bytes; DiskANN: its
in-memory PQ codes + cache; Engine: heads + list directory). Posting lists / DiskANN's graph
are read through the page cache (warm) unless --cold, which drops caches before each setting
(root only).

Usage: python3 scripts/bench_ann.py --dataset fashion-mnist --threads 1,2 > results.md
Needs: pip install faiss-cpu hnswlib usearch diskannpy-rust numpy; a release build of engine.
"""
import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RUST_LOG", "error")  # diskannpy logs every query at INFO

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / ".build/release/engine"
ENGINE_IO = "mapped"  # --engine-io


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    n, r, c = int.from_bytes(b[4:8], "big"), int.from_bytes(b[8:12], "big"), int.from_bytes(b[12:16], "big")
    return np.frombuffer(b, dtype=np.uint8, offset=16).reshape(n, r * c).astype(np.float32)


def dataset(args):
    if args.dataset == "fashion-mnist":
        d = "/usr/share/datasets/fashion-mnist"
        return read_idx(f"{d}/train-images-idx3-ubyte.gz"), read_idx(f"{d}/t10k-images-idx3-ubyte.gz")[: args.queries], "l2"
    if args.dataset == "synth":
        rng = np.random.default_rng(7)
        n, d, k = args.synth_n, 128, 1000
        centres = rng.normal(size=(k, d)).astype(np.float32) * 4
        def draw(m):
            # the same numbers as one draw of m rows (the normal stream is consumed in order), in
            # chunks: a 10M set would otherwise hold ~20 GB of float64 temporaries
            labels = rng.integers(0, k, m)
            out = np.empty((m, d), dtype=np.float32)
            for s in range(0, m, 1 << 18):
                e = min(m, s + (1 << 18))
                out[s:e] = centres[labels[s:e]] + rng.normal(size=(e - s, d)).astype(np.float32)
            return out
        return draw(n), draw(args.queries), "l2"
    if args.dataset == "wordnet":
        x = np.load(args.wordnet_npy).astype(np.float32)
        rng = np.random.default_rng(3)
        perm = rng.permutation(len(x))
        q = x[perm[: args.queries]]
        return x[perm[args.queries:]], q, "cos"
    raise SystemExit("unknown dataset")


def ground_truth(base, queries, metric, k=100):
    import faiss
    if metric == "cos":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        index = faiss.IndexFlatIP(base.shape[1])
    else:
        index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    _, ids = index.search(queries, k)
    return ids


def recall(found, gt, k=10):
    return float(np.mean([len(set(f[:k]) & set(g[:k])) / k for f, g in zip(found, gt)]))


def write_ivecs(path, a):
    a = np.asarray(a, dtype=np.int32)
    out = np.empty((a.shape[0], a.shape[1] + 1), dtype=np.int32)
    out[:, 0] = a.shape[1]
    out[:, 1:] = a
    out.tofile(path)


def drop_caches():
    subprocess.run(["sync"])
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        log("cannot drop caches:", e)


def timed_queries(fn, queries, threads):
    """Runs fn(q) per query with `threads` Python threads (the peers release the GIL); returns
    (results, qps, mean ms, p99 ms)."""
    from concurrent.futures import ThreadPoolExecutor
    lat = np.zeros(len(queries))
    res = [None] * len(queries)

    def run(i):
        s = time.perf_counter()
        res[i] = fn(queries[i])
        lat[i] = (time.perf_counter() - s) * 1e3

    t0 = time.perf_counter()
    if threads == 1:
        for i in range(len(queries)):
            run(i)
    else:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(run, range(len(queries))))
    wall = time.perf_counter() - t0
    return res, len(queries) / wall, float(lat.mean()), float(np.percentile(lat, 99))


def row(system, setting, threads, rec, qps, mean, p99, ram, disk, build):
    return {"system": system, "setting": setting, "threads": threads, "recall10": rec, "qps": qps, "mean_ms": mean,
            "p99_ms": p99, "ram_bytes": ram, "disk_bytes": disk, "build_s": build}


def faiss_inputs(base, queries, metric):
    """Vectors as faiss indexes them (unit length for cosine, searched by inner product), the
    coarse quantizer, the metric and nlist = 4 sqrt(n)."""
    import faiss
    d = base.shape[1]
    b, q = base, queries
    if metric == "cos":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    quant = faiss.IndexFlatIP(d) if metric == "cos" else faiss.IndexFlatL2(d)
    fm = faiss.METRIC_INNER_PRODUCT if metric == "cos" else faiss.METRIC_L2
    return b, q, quant, fm, int(4 * np.sqrt(len(base)))


def faiss_build(index, b):
    """Trains and fills a faiss index; returns (build seconds, serialized bytes = RAM)."""
    import faiss
    t = time.perf_counter()
    index.train(b)
    index.add(b)
    build = time.perf_counter() - t
    return build, len(faiss.serialize_index(index))


def faiss_rows(system, setting, index, q, gt, threads, ram, build):
    """One setting of a faiss index: queries one by one from Python, then faiss's own batch
    call (OpenMP over queries, no per-query Python overhead)."""
    res, qps, mean, p99 = timed_queries(lambda x: index.search(x[None], 10)[1][0], q, threads)
    t0 = time.perf_counter()
    _, ids = index.search(q, 10)
    wall = time.perf_counter() - t0
    return [row(system, setting, threads, recall(res, gt), qps, mean, p99, ram, 0, build),
            row(system + " (batch call)", setting, threads, recall(ids, gt), len(q) / wall, float("nan"), float("nan"), ram, 0,
                build)]


def bench_faiss(base, queries, gt, metric, threads_list):
    import faiss
    b, q, quant, fm, nlist = faiss_inputs(base, queries, metric)
    index = faiss.IndexIVFFlat(quant, base.shape[1], nlist, fm)
    build, ram = faiss_build(index, b)
    out = []
    for threads in threads_list:
        faiss.omp_set_num_threads(threads)
        for nprobe in [1, 2, 4, 8, 16, 32, 64]:
            index.nprobe = nprobe
            out += faiss_rows("faiss IVF-Flat", f"nlist {nlist}, nprobe {nprobe}", index, q, gt, threads, ram, build)
    return out


def bench_faiss_fastscan(base, queries, gt, metric, threads_list, k_factors=(2, 5, 10)):
    """faiss IVF-PQ fast-scan (4-bit codes, residuals, SIMD look-up in registers) with exact
    re-ranking of k_factor x 10 candidates from the raw vectors (IndexRefineFlat, which keeps
    them in RAM). M as Engine's pq4 default: d / 2, halved until <= 256."""
    import faiss
    d = base.shape[1]
    m = d // 2
    while m > 256:
        m //= 2
    b, q, quant, fm, nlist = faiss_inputs(base, queries, metric)
    ivf = faiss.IndexIVFPQFastScan(quant, d, nlist, m, 4, fm)
    index = faiss.IndexRefineFlat(ivf)
    build, ram = faiss_build(index, b)
    out = []
    for threads in threads_list:
        faiss.omp_set_num_threads(threads)
        for kf in k_factors:
            index.k_factor = kf
            for nprobe in [1, 2, 4, 8, 16, 32, 64]:
                ivf.nprobe = nprobe
                setting = f"nlist {nlist}, M {m} x 4 bit, re-rank {kf * 10}, nprobe {nprobe}"
                out += faiss_rows("faiss IVF-PQ fast-scan + refine", setting, index, q, gt, threads, ram, build)
    return out


def bench_hnswlib(base, queries, gt, metric, threads_list):
    import hnswlib
    index = hnswlib.Index(space="cosine" if metric == "cos" else "l2", dim=base.shape[1])
    t = time.perf_counter()
    index.init_index(max_elements=len(base), M=16, ef_construction=200)
    index.set_num_threads(2)
    index.add_items(base)
    build = time.perf_counter() - t
    with tempfile.NamedTemporaryFile() as f:
        index.save_index(f.name)
        ram = os.path.getsize(f.name)
    out = []
    for threads in threads_list:
        index.set_num_threads(1)
        for ef in [10, 20, 40, 80, 160]:
            index.set_ef(ef)
            res, qps, mean, p99 = timed_queries(lambda x: index.knn_query(x[None], k=10)[0][0], queries, threads)
            out.append(row("hnswlib", f"M 16, ef {ef}", threads, recall(res, gt), qps, mean, p99, ram, 0, build))
            index.set_num_threads(threads)
            t0 = time.perf_counter()
            ids, _ = index.knn_query(queries, k=10)
            wall = time.perf_counter() - t0
            index.set_num_threads(1)
            out.append(row("hnswlib (batch call)", f"M 16, ef {ef}", threads, recall(ids, gt), len(queries) / wall, float("nan"), float("nan"), ram, 0, build))
    return out


def bench_usearch(base, queries, gt, metric, threads_list):
    from usearch.index import Index
    index = Index(ndim=base.shape[1], metric="cos" if metric == "cos" else "l2sq", connectivity=16, expansion_add=128)
    t = time.perf_counter()
    index.add(np.arange(len(base)), base, threads=2)
    build = time.perf_counter() - t
    ram = index.memory_usage
    out = []
    for threads in threads_list:
        for ef in [16, 32, 64, 128]:
            index.expansion_search = ef
            res, qps, mean, p99 = timed_queries(lambda x: index.search(x, 10).keys, queries, threads)
            out.append(row("usearch", f"M 16, ef {ef}", threads, recall(res, gt), qps, mean, p99, ram, 0, build))
    return out


def bench_diskann(base, queries, gt, metric, threads_list, cold):
    import diskannpy
    d = tempfile.mkdtemp(prefix="diskann-")
    try:
        b = base if metric != "cos" else base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries if metric != "cos" else queries / np.linalg.norm(queries, axis=1, keepdims=True)
        pq_bytes = max(8, base.shape[1] // 8)
        t = time.perf_counter()
        diskannpy.build_disk_index(data=b, distance_metric="l2", index_directory=d, complexity=100, graph_degree=64,
                                   build_memory_maximum=4.0, num_threads=2, num_of_pq_chunks=pq_bytes)
        build = time.perf_counter() - t
        disk = sum(p.stat().st_size for p in Path(d).iterdir())
        pq = sum(p.stat().st_size for p in Path(d).iterdir() if "pq" in p.name and "compressed" in p.name)
        out = []
        for threads in threads_list:
            index = diskannpy.StaticDiskIndex(index_directory=d, num_threads=threads, beam_width=4, num_nodes_to_cache=0,
                                              distance_metric="l2", vector_dtype=np.float32, dimensions=base.shape[1])
            for L in [10, 20, 40, 80, 160]:
                if cold:
                    drop_caches()
                res, qps, mean, p99 = timed_queries(lambda x: index.search(x, 10, L).identifiers, q, threads)
                out.append(row("DiskANN (disk index)", f"R 64, PQ {pq_bytes} B, L {L}", threads, recall(res, gt), qps, mean, p99, pq, disk, build))
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def parse_bench_ann(stdout):
    """`engine bench ann` output: (RAM bytes, disk bytes, rows), each row the cells of one nprobe
    line as strings: nprobe, recall@1, recall@10, QPS, mean ms, p99 ms, lists, KiB."""
    ram = int(stdout.split("RAM ")[1].split(" bytes")[0])
    disk = int(stdout.split("disk ")[1].split(" bytes")[0])
    rows = []
    for line in stdout.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0].isdigit():
            rows.append(cells)
    return ram, disk, rows


def bench_engine(base, queries, gt, metric, threads_list, cold, extra, search_args=()):
    search_args = list(search_args)
    d = tempfile.mkdtemp(prefix="engine-ann-")
    try:
        np.save(f"{d}/base.npy", base)
        np.save(f"{d}/queries.npy", queries)
        write_ivecs(f"{d}/gt.ivecs", gt)
        t = time.perf_counter()
        subprocess.run([str(ENGINE), "index", "build", "--input", f"{d}/base.npy", "--output", f"{d}/idx", "--metric", metric] + extra,
                       check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        build = time.perf_counter() - t
        out = []
        sweep = ["2,4,8,16,32,64"] if not cold else ["2", "4", "8", "16", "32", "64"]
        for threads, nprobes in [(t, s) for t in threads_list for s in sweep]:
            if cold:
                # as for DiskANN: page cache dropped before each setting, no warm-up pass
                drop_caches()
            else:
                pass  # one process per thread count: an untimed warm-up pass (checksums verified
                # once, page cache warm, as in a running server), then the whole nprobe sweep
            r = subprocess.run([str(ENGINE), "bench", "ann", "--index", f"{d}/idx", "--queries", f"{d}/queries.npy", "--gt", f"{d}/gt.ivecs",
                                "--nprobe", nprobes, "--threads", str(threads), "--io", ENGINE_IO] + search_args + (["--no-warmup"] if cold else []),
                               check=True, capture_output=True, text=True).stdout
            ram, disk, lines = parse_bench_ann(r)
            for cells in lines:
                rec10, qps, mean, p99 = float(cells[2]), float(cells[3]), float(cells[4]), float(cells[5])
                out.append(row("Engine hybrid" + (" " + " ".join(extra + search_args) if extra or search_args else "") + (f" --io {ENGINE_IO}" if ENGINE_IO != "mapped" else ""), f"nprobe {cells[0]} ({cells[6]} lists, {cells[7]} KiB)",
                               threads, rec10, qps, mean, p99, ram, disk, build))
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "synth", "wordnet"])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--synth-n", type=int, default=1_000_000)
    ap.add_argument("--wordnet-npy")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--systems", default="engine,faiss,hnswlib,usearch,diskann")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each disk-index setting (root)")
    ap.add_argument("--json", help="also write rows as JSON lines here")
    ap.add_argument("--engine-variants", default="f32,f16,pq8,pq4,binary,f16-10",
                    help="Engine index variants: f32, f16, pq8, pq4, binary (re-rank 50), f16-10 / f16-1 (10%% / 1%% heads)")
    ap.add_argument("--engine-io", default="mapped", choices=["mapped", "pread", "uring"], help="Engine's posting-list reads")
    args = ap.parse_args()
    if args.dataset == "wordnet" and not args.wordnet_npy:
        ap.error("--dataset wordnet needs --wordnet-npy FILE (n x 384 MiniLM vectors from `engine embed`)")
    global ENGINE_IO
    ENGINE_IO = args.engine_io
    base, queries, metric = dataset(args)
    threads_list = [int(t) for t in args.threads.split(",")]
    log(f"{args.dataset}: base {base.shape}, queries {queries.shape}, metric {metric}; uptime: {os.getloadavg()}")
    gt = ground_truth(base, queries, metric)
    rows = []
    systems = args.systems.split(",")
    for s in systems:
        log("running", s)
        if s == "engine":
            variants = {
                "f32": ([], []), "f16": (["--payload", "f16"], []),
                "pq8": (["--payload", "pq8"], []),
                "pq4": (["--payload", "pq4"], ["--rerank", "50"]), "binary": (["--payload", "binary"], ["--rerank", "50"]),
                # SPANN's head fraction, for reference (the default is 0.03)
                "f16-10": (["--payload", "f16", "--head-fraction", "0.1"], []),
                "f16-1": (["--payload", "f16", "--head-fraction", "0.01"], []),
                # the same with 8 coarse clusters ranked per query (synthetic set: neighbours
                # spread over more coarse clusters than the default max(4, nprobe / 4))
                "f16-1-cp8": (["--payload", "f16", "--head-fraction", "0.01"], ["--coarse-probe", "8"]),
            }
            for v in args.engine_variants.split(","):
                rows += bench_engine(base, queries, gt, metric, threads_list, args.cold, *variants[v])
        elif s == "faiss":
            rows += bench_faiss(base, queries, gt, metric, threads_list)
        elif s == "faiss-fastscan":
            rows += bench_faiss_fastscan(base, queries, gt, metric, threads_list)
        elif s == "hnswlib":
            rows += bench_hnswlib(base, queries, gt, metric, threads_list)
        elif s == "usearch":
            rows += bench_usearch(base, queries, gt, metric, threads_list)
        elif s == "diskann":
            rows += bench_diskann(base, queries, gt, metric, threads_list, args.cold)
    raw = base.nbytes
    print(f"Dataset {args.dataset}: {base.shape[0]} x {base.shape[1]} ({metric}), {len(queries)} queries, raw f32 vectors {raw / 2**20:.1f} MiB; "
          f"load average at start {os.getloadavg()[0]:.2f}\n")
    print("| system | setting | threads | recall@10 | QPS | mean ms | p99 ms | RAM MiB (% of raw) | disk MiB | build s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['setting']} | {r['threads']} | {r['recall10']:.4f} | {r['qps']:.0f} | {r['mean_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['ram_bytes'] / 2**20:.1f} ({100 * r['ram_bytes'] / raw:.1f}%) | {r['disk_bytes'] / 2**20:.1f} | {r['build_s']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(dict(r, raw_bytes=raw)) + "\n")


if __name__ == "__main__":
    main()
