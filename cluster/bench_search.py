#!/usr/bin/env python3
"""Per-shard latency and throughput and the router's overhead, on this machine (no Ray: the
router logic is the same `ShardedSearcher` the Serve deployment wraps). Starts one `engine serve`
per shard of a partition (WORK/shard-K.idx, as cluster/test_local.sh builds them) and one for the
one-machine index (WORK/single.idx) on loopback, each with THREADS kernel threads; sends Fashion-MNIST
test queries one at a time (latency) and from 16 threads (throughput), directly to one shard, to
the one-machine index, and through the router. Prints a JSON line per measurement.

usage: bench_search.py ENGINE WORK [QUERIES=1000] [THREADS=1]
"""
import concurrent.futures
import gzip
import json
import os
import statistics
import struct
import sys
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_cluster.routing import Routing  # noqa: E402
from engine_cluster.search import ShardedSearcher  # noqa: E402
from engine_cluster.supervisor import EngineProcess  # noqa: E402

engine, work = sys.argv[1], sys.argv[2]
nq = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
threads = sys.argv[4] if len(sys.argv) > 4 else "1"
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
    _, n, r, c = struct.unpack(">IIII", f.read(16))
    queries = np.frombuffer(f.read(nq * r * c), dtype=np.uint8).reshape(nq, r * c).astype(np.float32).tolist()
routing = Routing(os.path.join(work, "parts"))
procs = [EngineProcess(engine, ["--index", f"shard={work}/shard-{s}.idx", "--read-only-indexes", "--threads", threads])
         for s in range(routing.shards)]
single = EngineProcess(engine, ["--index", f"shard={work}/single.idx", "--read-only-indexes", "--threads", threads])
router = ShardedSearcher(routing, [[p.url] for p in procs], deadline=30)


def direct(url, q):
    req = urllib.request.Request(url + "/v1/indexes/shard/search",
                                 data=json.dumps({"vectors": [q], "k": 10, "nprobe": 32}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def measure(name, fn):
    for q in queries[:50]:
        fn(q)  # warm-up: page cache, connections
    lat = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        lat.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        list(ex.map(fn, queries))
    qps = len(queries) / (time.perf_counter() - t)
    lat.sort()
    print(json.dumps({"what": name, "p50_ms": round(statistics.median(lat), 2),
                      "p99_ms": round(lat[int(0.99 * len(lat)) - 1], 2), "qps_16_clients": round(qps)}), flush=True)


try:
    measure("one shard directly (shard 0, all queries)", lambda q: direct(procs[0].url, q))
    measure("one-machine index directly", lambda q: direct(single.url, q))
    measure("router over 3 shards", lambda q: router.search([q], k=10, nprobe=32, probes=4))
finally:
    for p in procs + [single]:
        p.stop()
