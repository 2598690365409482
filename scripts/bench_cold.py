#!/usr/bin/env python3
"""Cold and larger-than-RAM search: Engine's hybrid index (posting lists mapped or read through
io_uring) against DiskANN's disk index (diskannpy-rust), on the synthetic clustered set.

Every setting starts with the page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`), and its
search runs in a child process inside a memory cgroup whose limit (--memory-mb) covers the
process and every page it reads through the page cache: with a limit below the index's size on
disk, the search cannot keep the index in memory and reads it from the disk as it goes, which
is what a collection larger than RAM does. Both systems get the same limit, and each reports
what its index keeps in memory by design (Engine: heads + coarse level + list directory;
DiskANN: its PQ codes). Per setting: recall@10 against faiss's exact search (independent of
Engine), QPS, mean and p99 latency (one query at a time, one thread), the cgroup's peak usage
and the bytes the process read from the block device (getrusage ru_inblock).

Usage (root: drop_caches and the cgroup need it):
  python3 scripts/bench_cold.py --synth-n 1000000 --queries 1000 --memory-mb 256 --json out.jsonl
Needs: pip install faiss-cpu diskannpy-rust numpy; a release build of engine.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ann  # noqa: E402  (dataset, ground truth, recall, ivecs writer)

os.environ.setdefault("RUST_LOG", "error")  # diskannpy logs every query at INFO


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class MemoryCgroup:
    """A memory cgroup (v2 or v1) with a hard limit that children join before they exec."""

    def __init__(self, limit_bytes):
        name = f"engine-cold-{os.getpid()}"
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        if v2.exists():
            self.path = Path("/sys/fs/cgroup") / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(str(limit_bytes))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")
            self.peak_file = "memory.peak"
        else:
            self.path = Path("/sys/fs/cgroup/memory") / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            self.peak_file = "memory.max_usage_in_bytes"
        self.limit = limit_bytes

    def join(self):
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def reset_peak(self):
        p = self.path / self.peak_file
        try:
            p.write_text("0")
        except OSError:
            pass  # v2 memory.peak is reset per open file on newer kernels only; reported as read

    def peak(self):
        try:
            return int((self.path / self.peak_file).read_text().split()[0])
        except (OSError, ValueError):
            return -1

    def remove(self):
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def run_limited(cmd, cgroup, warm_cmd):
    """Drops the page cache, loads the program's own files again outside the cgroup (warm_cmd:
    the executable and its libraries, as in a running server), then runs cmd in the cgroup, so
    that its limit and its disk reads are the index's; returns (stdout, bytes read from disk)."""
    bench_ann.drop_caches()
    subprocess.run(warm_cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cgroup.reset_peak()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock
    r = subprocess.run(cmd, preexec_fn=cgroup.join, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    read = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock - before) * 512
    return r.stdout, read


def diskann_child(args):
    """Runs inside the cgroup: loads DiskANN's disk index and answers the queries one at a time."""
    import diskannpy
    q = np.load(args.queries_npy)
    idx = diskannpy.StaticDiskIndex(index_directory=args.diskann_child, num_threads=1, beam_width=4, num_nodes_to_cache=0,
                                    distance_metric="l2", vector_dtype=np.float32, dimensions=q.shape[1])
    ids = np.zeros((len(q), 10), dtype=np.int64)
    lat = np.zeros(len(q))
    t0 = time.perf_counter()
    for i in range(len(q)):
        s = time.perf_counter()
        ids[i] = idx.search(q[i], 10, args.L).identifiers
        lat[i] = (time.perf_counter() - s) * 1e3
    wall = time.perf_counter() - t0
    np.save(args.ids_out, ids)
    print(json.dumps({"qps": len(q) / wall, "mean_ms": float(lat.mean()), "p99_ms": float(np.percentile(lat, 99))}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synth-n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--memory-mb", type=int, default=256, help="cgroup limit per search process (process + page cache)")
    ap.add_argument("--nprobe", default="8,16,32,64", help="Engine settings")
    ap.add_argument("--io", default="mapped,uring", help="Engine read paths")
    ap.add_argument("--payloads", default="f16", help="Engine payloads (f16, pq4 with re-rank 50, binary with re-rank 50)")
    ap.add_argument("--diskann-pq", default="16,32", help="DiskANN PQ bytes per vector (one index each)")
    ap.add_argument("--diskann-L", default="40,80,160,320,640", help="DiskANN search list sizes")
    ap.add_argument("--workdir", help="keep indexes here (default: a temporary directory, removed at exit)")
    ap.add_argument("--json", help="also write rows as JSON lines here")
    ap.add_argument("--engine", help="engine binary (default: .build/release/engine)")
    ap.add_argument("--diskann-child", help=argparse.SUPPRESS)
    ap.add_argument("--queries-npy", help=argparse.SUPPRESS)
    ap.add_argument("--ids-out", help=argparse.SUPPRESS)
    ap.add_argument("--L", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.diskann_child:
        return diskann_child(args)
    if args.engine:
        bench_ann.ENGINE = Path(args.engine).resolve()
    if os.geteuid() != 0:
        raise SystemExit("bench_cold.py needs root (drop_caches and a memory cgroup)")
    # a kill (SIGTERM) unwinds through the `finally` below, which removes the cgroup
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.memory_mb < 64:
        raise SystemExit("--memory-mb below 64 leaves no room for the process itself")

    class D:
        dataset = "synth"
        synth_n = args.synth_n
        queries = args.queries
    base, queries, metric = bench_ann.dataset(D)
    log(f"synth: base {base.shape}, queries {queries.shape}; load average {os.getloadavg()}")
    gt = bench_ann.ground_truth(base, queries, metric)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="engine-cold-"))
    work.mkdir(parents=True, exist_ok=True)
    cgroup = MemoryCgroup(args.memory_mb << 20)
    rows = []
    raw = base.nbytes
    try:
        np.save(work / "base.npy", base)
        np.save(work / "queries.npy", queries)
        bench_ann.write_ivecs(work / "gt.ivecs", gt)
        payload_args = {"f16": (["--payload", "f16"], []), "pq4": (["--payload", "pq4"], ["--rerank", "50"]),
                        "binary": (["--payload", "binary"], ["--rerank", "50"])}
        for payload in [p for p in args.payloads.split(",") if p]:
            build_args, search_args = payload_args[payload]
            idx = work / f"engine-{payload}"
            t = time.perf_counter()
            if not (idx / "heads.bin").exists():
                log(f"building Engine index ({payload})")
                subprocess.run([str(bench_ann.ENGINE), "index", "build", "--input", str(work / "base.npy"), "--output", str(idx),
                                "--metric", metric] + build_args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            build = time.perf_counter() - t
            disk = sum(p.stat().st_size for p in idx.iterdir())
            for io in args.io.split(","):
                for nprobe in args.nprobe.split(","):
                    out, read = run_limited([str(bench_ann.ENGINE), "bench", "ann", "--index", str(idx), "--queries",
                                             str(work / "queries.npy"), "--gt", str(work / "gt.ivecs"), "--nprobe", nprobe,
                                             "--threads", "1", "--io", io, "--no-warmup"] + search_args, cgroup,
                                            [str(bench_ann.ENGINE), "bench", "ann", "--help"])
                    ram, _, lines = bench_ann.parse_bench_ann(out)
                    for cells in lines:
                        rows.append({"system": f"Engine {payload}", "setting": f"--io {io}, nprobe {nprobe}",
                                     "recall10": float(cells[2]), "qps": float(cells[3]), "mean_ms": float(cells[4]),
                                     "p99_ms": float(cells[5]), "ram_bytes": ram, "disk_bytes": disk, "build_s": build,
                                     "cgroup_peak_bytes": cgroup.peak(), "read_bytes": read})
                        log(json.dumps(rows[-1]))
        import diskannpy
        for pq in [int(x) for x in args.diskann_pq.split(",") if x]:
            d = work / f"diskann-pq{pq}"
            t = time.perf_counter()
            if not d.exists():
                log(f"building DiskANN index (PQ {pq} B)")
                d.mkdir()
                diskannpy.build_disk_index(data=base, distance_metric="l2", index_directory=str(d), complexity=100,
                                           graph_degree=64, build_memory_maximum=4.0, num_threads=2, num_of_pq_chunks=pq)
            build = time.perf_counter() - t
            disk = sum(p.stat().st_size for p in d.iterdir())
            ram = sum(p.stat().st_size for p in d.iterdir() if "pq" in p.name and "compressed" in p.name)
            for L in [int(x) for x in args.diskann_L.split(",")]:
                ids_out = work / "diskann-ids.npy"
                out, read = run_limited([sys.executable, __file__, "--diskann-child", str(d), "--queries-npy",
                                         str(work / "queries.npy"), "--ids-out", str(ids_out), "--L", str(L)], cgroup,
                                        [sys.executable, "-c", "import numpy, diskannpy"])
                m = json.loads(out.strip().splitlines()[-1])
                rows.append({"system": "DiskANN disk index", "setting": f"R 64, PQ {pq} B, beam 4, L {L}",
                             "recall10": bench_ann.recall(np.load(ids_out), gt), "qps": m["qps"], "mean_ms": m["mean_ms"],
                             "p99_ms": m["p99_ms"], "ram_bytes": ram, "disk_bytes": disk, "build_s": build,
                             "cgroup_peak_bytes": cgroup.peak(), "read_bytes": read})
                log(json.dumps(rows[-1]))
    finally:
        cgroup.remove()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(f"Synthetic {base.shape[0]} x {base.shape[1]} (L2), {len(queries)} queries, raw f32 vectors {raw / 2**20:.1f} MiB; "
          f"cgroup limit {args.memory_mb} MiB per search process; page cache dropped before each setting; "
          f"load average at start {os.getloadavg()[0]:.2f}\n")
    print("| system | setting | recall@10 | QPS | mean ms | p99 ms | index RAM MiB (% of raw) | cgroup peak MiB | "
          "read from disk MiB | disk MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['setting']} | {r['recall10']:.4f} | {r['qps']:.0f} | {r['mean_ms']:.3f} | {r['p99_ms']:.3f} | "
              f"{r['ram_bytes'] / 2**20:.1f} ({100 * r['ram_bytes'] / raw:.1f}%) | {r['cgroup_peak_bytes'] / 2**20:.0f} | "
              f"{r['read_bytes'] / 2**20:.0f} | {r['disk_bytes'] / 2**20:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            for r in rows:
                f.write(json.dumps(dict(r, raw_bytes=raw, memory_limit_bytes=args.memory_mb << 20)) + "\n")


if __name__ == "__main__":
    main()
