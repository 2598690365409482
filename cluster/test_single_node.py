#!/usr/bin/env python3
"""Sharded search on Ray, one node: Fashion-MNIST (60,000 x 784) partitioned into 3 shards, each
built by a Ray task and served by 2 replica actors (each supervising `engine serve`); the routed,
merged answers against the single-machine index's, then faults: a replica killed by its process
id (answers stay complete), both replicas of a shard killed (answers flagged partial).

usage: python3 cluster/test_single_node.py ENGINE WORKDIR   (prints `cluster: N passed, M failed`)
"""
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import ray

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_cluster.cluster import build_shard, start_replicas  # noqa: E402
from engine_cluster.routing import Routing  # noqa: E402
from engine_cluster.search import ShardedSearcher  # noqa: E402

engine, work = os.path.abspath(sys.argv[1]), sys.argv[2]
FM = "/usr/share/datasets/fashion-mnist"
passed, failed = 0, 0


def check(ok, what):
    global passed, failed
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    passed, failed = passed + bool(ok), failed + (not ok)


def idx_images(path, limit):
    import gzip
    with gzip.open(path, "rb") as f:
        _, n, r, c = struct.unpack(">IIII", f.read(16))
        n = min(n, limit)
        return np.frombuffer(f.read(n * r * c), dtype=np.uint8).reshape(n, r * c).astype(np.float32)


def run(*args):
    r = subprocess.run([engine, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"engine {' '.join(args)}: {r.stderr.strip()[-400:]}")
    return r.stdout


os.makedirs(work, exist_ok=True)
part = os.path.join(work, "parts")
if not os.path.exists(part):
    run("index", "partition", "--input", f"{FM}/train-images-idx3-ubyte.gz", "--shards", "3", "--output", part)
routing = Routing(part)
ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
t0 = time.time()
dirs = [os.path.join(work, f"shard-{s}.idx") for s in range(3)]
todo = [build_shard.remote(engine, part, s, dirs[s], ("--payload", "f16")) for s in range(3)
        if not os.path.exists(dirs[s])]
ray.get(todo)
print(f"shards built in {time.time() - t0:.1f} s", flush=True)
actors, infos = start_replicas(engine, dirs, replicas=2, spread=False)
searcher = ShardedSearcher(routing, [[i["url"] for i in row] for row in infos], deadline=5)

queries = idx_images(f"{FM}/t10k-images-idx3-ubyte.gz", 500)
gt = np.fromfile(os.path.join(work, "gt.ivecs"), dtype=np.int32).reshape(-1, 11)[:500, 1:]
single_ids = np.load(os.path.join(work, "single.npy"))[:500]


def recall(results):
    return np.mean([len(set(r) & set(g)) / 10 for r, g in zip(results, gt)])


def sharded(qs, **kw):
    out = searcher.search([q.tolist() for q in qs], k=10, nprobe=32, probes=4, **kw)
    return out, [[h["id"] for h in r] for r in out["results"]]


t0 = time.time()
res, ids = sharded(queries)
dt = time.time() - t0
rs, r1 = recall(ids), recall(single_ids)
print(f"recall@10 sharded {rs:.4f} single {r1:.4f}; {np.mean(res['shards']):.2f} shards per query; "
      f"{len(queries) / dt:.0f} queries/s in one batch", flush=True)
check(not res["partial"], "all shards answered")
check(rs >= r1 - 0.005, f"sharded recall {rs:.4f} within 0.005 of the single index {r1:.4f}")
check(np.mean(res["shards"]) < 3, "queries routed, not broadcast")

# a replica killed by its process id: every answer still complete
os.kill(infos[0][0]["pid"], signal.SIGKILL)
res2, ids2 = sharded(queries[:200])
check(not res2["partial"] and recall(ids2) == recall(ids[:200]), "one replica of shard 0 killed: complete, same answers")
# both replicas of shard 1 killed: the queries that need it are flagged partial
os.kill(infos[1][0]["pid"], signal.SIGKILL)
os.kill(infos[1][1]["pid"], signal.SIGKILL)
res3, _ = sharded(queries[:200])
check(res3["partial"] and res3["missing"] == [1], f"shard 1 down: partial, missing {res3['missing']}")

for row in actors:
    for a in row:
        try:
            ray.get(a.stop.remote(), timeout=60)
        except Exception:
            pass
ray.shutdown()
print(f"cluster: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
