#!/usr/bin/env python3
"""Sharded search on Ray: Fashion-MNIST (60,000 x 784) partitioned into 3 shards, each built by a
Ray task and served by 2 replica actors (each supervising `engine serve`); the routed, merged
answers against the single-machine index's, then faults.

One node (no NODES): a replica killed by its process id (answers stay complete), both replicas of
a shard killed (answers flagged partial). On a cluster (NODES = comma-separated network
namespaces of the nodes 1..3, as cluster/test_local.sh makes them; the driver runs in node 1's):
replicas of a shard on different nodes (STRICT_SPREAD); node 3 cut off (its link down): complete;
node 2 killed too (every process `ip netns pids` lists): the shards with no live replica are
flagged partial; node 3 back: complete again.

usage: python3 cluster/test_search.py ENGINE WORKDIR [RAY_ADDRESS NODES]
(prints `cluster: N passed, M failed` last)
"""
import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import ray

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_cluster.cluster import build_shard, start_replicas, stop_replicas  # noqa: E402
from engine_cluster.routing import Routing  # noqa: E402
from engine_cluster.search import ShardedSearcher  # noqa: E402

engine, work = os.path.abspath(sys.argv[1]), sys.argv[2]
address = sys.argv[3] if len(sys.argv) > 3 else None
nodes = sys.argv[4].split(",") if len(sys.argv) > 4 else []
FM = "/usr/share/datasets/fashion-mnist"
passed, failed = 0, 0


def check(ok, what):
    global passed, failed
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    passed, failed = passed + bool(ok), failed + (not ok)


def idx_images(path, limit):
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
if address:
    ray.init(address=address, configure_logging=False)
else:
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
t0 = time.time()
dirs = [os.path.join(work, f"shard-{s}.idx") for s in range(3)]
todo = [build_shard.remote(engine, part, s, dirs[s], ("--payload", "f16")) for s in range(3)
        if not os.path.exists(dirs[s])]
ray.get(todo)
print(f"shards built in {time.time() - t0:.1f} s", flush=True)
# on the cluster, replica r of shard s goes to node (s + r) % 3 + 1: shard 1 lives on nodes 2 and 3
actors, infos = start_replicas(engine, dirs, replicas=2, spread=bool(address),
                               pin=(lambda s, r: f"node{(s + r) % 3 + 1}") if address else None)
searcher = ShardedSearcher(routing, [[i["url"] for i in row] for row in infos], deadline=3)
if address:
    check(all(row[0]["node"] != row[1]["node"] for row in infos), "a shard's two replicas are on different nodes")

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

# bad input: a routing table whose shards do not match the replicas
from engine_cluster.routing import RoutingError  # noqa: E402

urls = [[i["url"] for i in row] for row in infos]
try:
    ShardedSearcher(routing, [urls[1], urls[0], urls[2]])
    check(False, "swapped shards refused")
except RoutingError as e:
    check("does not hold shard 0" in str(e), f"swapped shards refused: {e}")
# a shard index that fails its checksum: the replica does not start, and says why
bad = os.path.join(work, "corrupt.idx")
subprocess.run(["rm", "-rf", bad])
subprocess.run(["cp", "-r", dirs[0], bad], check=True)
with open(os.path.join(bad, "heads.bin"), "r+b") as f:
    f.seek(200)
    b = f.read(1)
    f.seek(200)
    f.write(bytes([b[0] ^ 0xFF]))
try:
    from engine_cluster.cluster import ShardReplica  # noqa: E402
    ray.get(ShardReplica.remote(engine, 0, bad).info.remote(), timeout=120)
    check(False, "a corrupt shard index is refused")
except ray.exceptions.RayActorError as e:
    check("checksum" in str(e) or "corrupt" in str(e), f"a corrupt shard index is refused ({str(e)[-160:]!r})")
if address:
    # more replicas on different nodes than there are nodes: a clear error, not a hang
    try:
        start_replicas(engine, dirs[:1], replicas=4, spread=True, timeout=10)
        check(False, "4 replicas on 3 nodes refused")
    except RuntimeError as e:
        check("cannot be placed" in str(e), "4 replicas on 3 nodes refused with a clear error")

if address:
    # the router as a Ray Serve deployment: the same answers over HTTP, bad requests refused
    from ray import serve

    from engine_cluster.serve_app import SearchRouter

    # proxy and router on node 1 (the faults below take nodes 2 and 3)
    serve.start(proxy_location="HeadOnly", http_options={"host": "10.77.0.11", "port": 8011})
    router = SearchRouter.options(ray_actor_options={"num_cpus": 0.1, "resources": {"node1": 0.01}})
    serve.run(router.bind(part, [[i["url"] for i in row] for row in infos]), route_prefix="/search", name="search")

    def post(body):
        req = urllib.request.Request("http://10.77.0.11:8011/search", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    st, out = post({"vectors": [q.tolist() for q in queries[:100]], "k": 10, "nprobe": 32, "probes": 4})
    check(st == 200 and [[h["id"] for h in r] for r in out["results"]] == ids[:100],
          "Serve router: the same answers over HTTP")
    # router restart: its replica killed; Serve starts another; answers in between are errors
    # (never short lists presented as complete), and afterwards the same answers again
    named = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SearchRouter" in a["name"]]
    ray.kill(ray.get_actor(named[0]["name"], namespace=named[0]["namespace"]), no_restart=True)
    statuses, deadline = [], time.time() + 120
    while time.time() < deadline:
        try:
            st, out = post({"vectors": [q.tolist() for q in queries[:100]], "k": 10, "nprobe": 32, "probes": 4})
        except OSError:
            st, out = 0, None
        statuses.append(st)
        if st == 200:
            break
        time.sleep(0.5)
    same = st == 200 and [[h["id"] for h in r] for r in out["results"]] == ids[:100] and not out["partial"]
    check(same and all(x in (0, 200, 500, 502, 503, 504) for x in statuses),
          f"Serve router restarted: same answers again (statuses while it restarted: {sorted(set(statuses))})")
    st1, _ = post({"vectors": [[1.0, 2.0]], "k": 10})
    st2, _ = post({"vectors": [q.tolist() for q in queries[:1]], "k": 0})
    check(st1 == 400 and st2 == 400, f"Serve router: wrong dimension and k=0 refused ({st1}, {st2})")



def cut(node, up):
    """Node `node`'s link (its end of the veth pair, inside its namespace) down or up."""
    subprocess.run(["ip", "-n", node, "link", "set", "v" + node + "p", "up" if up else "down"], check=True)


def node_of(url):
    return {f"10.77.0.1{i + 1}": i + 1 for i in range(3)}.get(url.split("//")[1].split(":")[0])


if not nodes:
    # a replica killed by its process id: every answer still complete
    os.kill(infos[0][0]["pid"], signal.SIGKILL)
    res2, ids2 = sharded(queries[:200])
    check(not res2["partial"] and recall(ids2) == recall(ids[:200]),
          "one replica of shard 0 killed: complete, same answers")
    # both replicas of shard 1 killed: the queries that need it are flagged partial
    os.kill(infos[1][0]["pid"], signal.SIGKILL)
    os.kill(infos[1][1]["pid"], signal.SIGKILL)
    res3, _ = sharded(queries[:200])
    check(res3["partial"] and res3["missing"] == [1], f"shard 1 down: partial, missing {res3['missing']}")
else:
    homes = [sorted(node_of(i["url"]) for i in row) for row in infos]
    print(f"replica nodes per shard: {homes}", flush=True)
    # node 3 cut off: its link goes down
    cut(nodes[2], up=False)
    t0 = time.time()
    res2, ids2 = sharded(queries[:200])
    check(not res2["partial"] and recall(ids2) == recall(ids[:200]),
          f"node 3 cut off: complete, same answers ({time.time() - t0:.1f} s with failover)")
    # node 2 killed: every process in its namespace, by the ids `ip netns pids` lists
    pids = subprocess.run(["ip", "netns", "pids", nodes[1]], capture_output=True, text=True).stdout.split()
    for p in pids:
        try:
            os.kill(int(p), signal.SIGKILL)
        except ProcessLookupError:
            pass
    lost = sorted(s for s, h in enumerate(homes) if set(h) <= {2, 3})
    check(bool(lost), f"some shard lives only on nodes 2 and 3 (placement {homes})")
    res3, _ = sharded(queries[:200])
    check(res3["partial"] == bool(lost) and res3["missing"] == lost,
          f"node 2 killed, node 3 cut off: missing {res3['missing']}, expected {lost}")
    cut(nodes[2], up=True)
    time.sleep(1)
    res4, ids4 = sharded(queries[:200])
    check(not res4["partial"] and recall(ids4) == recall(ids[:200]), "node 3 back: complete again")

if address:
    # inference replicas on Serve: an encrypted model; the key stays with the client (the
    # `engine generate --server A,B --key` process here); a replica killed mid-stream, the client
    # fails over to the other and prints the same greedy text as a local run
    from engine_cluster.inference import ModelReplica

    key, enc = os.path.join(work, "llm.key"), os.path.join(work, "enc.gguf")
    if not os.path.exists(enc):
        run("keygen", "--output", key)
        run("encrypt-model", "--key", key, "--type", "q8_0", "--output", enc)
    serve.run(ModelReplica.options(ray_actor_options={"num_cpus": 0.1, "resources": {"node3": 0.01}})
              .bind(engine, enc), route_prefix="/locate", name="models")

    def locate(avoid=None):
        for _ in range(60):
            with urllib.request.urlopen("http://10.77.0.11:8011/locate", timeout=30) as r:
                u = json.load(r)
            if u["url"] != avoid:
                try:
                    urllib.request.urlopen(u["url"] + "/health", timeout=2).read()
                    return u
                except OSError:
                    pass
            time.sleep(0.5)
        raise RuntimeError("no live inference replica")

    prompt = "Write a short story about a lighthouse keeper."
    local = subprocess.run([engine, "generate", "--model", enc, "--key", key, "--prompt", prompt,
                            "--max-tokens", "160", "--chat", "--threads", "1"], capture_output=True, text=True).stdout
    first = locate()
    second = locate(avoid=first["url"])
    # the client is given both replicas; when the first dies mid-stream it starts over on the
    # second by itself and does not repeat the text it already printed
    client = subprocess.Popen([engine, "generate", "--server", first["url"] + "," + second["url"], "--key", key,
                               "--prompt", prompt, "--max-tokens", "160", "--chat"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(0.6)
    os.kill(first["pid"], signal.SIGKILL)  # the replica's engine serve, mid-stream
    out, err = client.communicate(timeout=300)
    check(client.returncode == 0 and out == local and len(local) > 20,
          f"inference replica killed mid-stream: the client failed over to {second['url']} by itself, "
          f"same text as a local run ({len(local)} characters)")
    serve.delete("models")

if address:
    serve.shutdown()
stop_replicas(actors, timeout=10)
ray.shutdown()
print(f"cluster: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
