"""`python -m engine_cluster search --partition DIR --engine PATH ...`: on a running Ray cluster
(`ray start --head` on one machine, `ray start --address HEAD:6379` on the others), build every
shard of a partition as a Ray task, start its replicas on different nodes, and serve the
sharded-search router over HTTP (Ray Serve) until interrupted. The partition directory and the
engine binary must be at the same path on every node (a shared or replicated file system)."""
import argparse
import os
import signal
import sys
import time

import ray
from ray import serve

from .cluster import build_shard, start_replicas, stop_replicas
from .routing import Routing
from .serve_app import SearchRouter


def main():
    p = argparse.ArgumentParser(prog="python -m engine_cluster", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="build the shards of a partition and serve sharded search")
    s.add_argument("--partition", required=True, help="output of `engine index partition`")
    s.add_argument("--engine", required=True, help="path of the engine binary (same on every node)")
    s.add_argument("--indexes", help="where shard indexes go (default: PARTITION/indexes)")
    s.add_argument("--replicas", type=int, default=2, help="replicas per shard, on different nodes")
    s.add_argument("--threads", type=int, default=1, help="kernel threads per shard server")
    s.add_argument("--host", default="127.0.0.1", help="address of the router's HTTP endpoint")
    s.add_argument("--port", type=int, default=8000, help="port of the router's HTTP endpoint")
    s.add_argument("--address", default="auto", help="Ray cluster address")
    s.add_argument("--build-args", default="--payload f16", help="extra `engine index build` options")
    a = p.parse_args()
    if not 1 <= a.replicas <= 16 or not 1 <= a.threads <= 256:
        p.error("--replicas must be in 1...16 and --threads in 1...256")
    routing = Routing(a.partition)  # verified before anything starts
    ray.init(address=a.address, configure_logging=False)
    out = a.indexes or os.path.join(a.partition, "indexes")
    os.makedirs(out, exist_ok=True)
    dirs = [os.path.join(out, f"shard-{k}.idx") for k in range(routing.shards)]
    t0 = time.time()
    ray.get([build_shard.remote(a.engine, a.partition, k, dirs[k], tuple(a.build_args.split()))
             for k in range(routing.shards) if not os.path.exists(dirs[k])])
    print(f"{routing.shards} shards built in {time.time() - t0:.0f} s", flush=True)
    actors, infos = start_replicas(a.engine, dirs, replicas=a.replicas, spread=a.replicas > 1,
                                   threads=a.threads)
    serve.start(http_options={"host": a.host, "port": a.port})
    serve.run(SearchRouter.bind(a.partition, [[i["url"] for i in row] for row in infos]), route_prefix="/search",
              name="search")
    print(f"sharded search on http://{a.host}:{a.port}/search "
          f"({routing.shards} shards x {a.replicas} replicas); Ctrl-C stops it", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    stop_replicas(actors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
