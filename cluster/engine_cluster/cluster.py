"""Ray side: shard builds as tasks, shard replicas as actors (each supervising one `engine serve`),
replicas of a shard on different nodes (a placement group per replica set, STRICT_SPREAD)."""
import os
import subprocess

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .supervisor import EngineProcess


@ray.remote(num_cpus=1)
def build_shard(engine, partition_dir, shard, output, extra_args=()):
    """`engine index build` of one shard of a partition, on whichever node Ray picks."""
    d = os.path.join(partition_dir, f"shard-{shard}")
    r = subprocess.run(
        [engine, "index", "build", "--input", f"{d}/base.npy", "--ids", f"{d}/ids.npy", "--output", output,
         *extra_args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"shard {shard} build failed: {r.stderr.strip()[-500:]}")
    return output


@ray.remote(num_cpus=0.1, max_restarts=0)
class ShardReplica:
    """One replica of one shard: an `engine serve --index shard=DIR` process on this actor's node."""

    def __init__(self, engine, shard, index_dir, host=None, threads=1):
        self.shard = shard
        host = host or ray.util.get_node_ip_address()
        self.proc = EngineProcess(engine, ["--index", f"shard={index_dir}", "--read-only-indexes",
                                           "--threads", str(threads)], host=host)

    def info(self):
        return {"shard": self.shard, "url": self.proc.url, "pid": self.proc.pid,
                "node": ray.get_runtime_context().get_node_id(), "alive": self.proc.alive()}

    def stop(self):
        return self.proc.stop()


def start_replicas(engine, index_dirs, replicas=2, spread=True, threads=1, pin=None, timeout=120):
    """Actors for every shard x replica; with `spread`, a shard's replicas are on different nodes
    (STRICT_SPREAD: the placement group waits until the cluster has that many nodes). `pin`, if
    given, names for shard s and replica r a custom node resource (`ray start --resources`) its
    bundle must hold: pin(s, r) -> "node2" places that replica on the node started with it."""
    actors = []
    for shard, index_dir in enumerate(index_dirs):
        opts = {}
        if spread:
            bundles = [{"CPU": 0.1, **({pin(shard, r): 0.01} if pin else {})} for r in range(replicas)]
            pg = placement_group(bundles, strategy="STRICT_SPREAD")
            try:
                ray.get(pg.ready(), timeout=timeout)
            except ray.exceptions.GetTimeoutError:
                ray.util.remove_placement_group(pg)
                raise RuntimeError(
                    f"shard {shard}: {replicas} replicas on different nodes cannot be placed within {timeout} s "
                    f"(the cluster has {len([n for n in ray.nodes() if n['Alive']])} live nodes; a node never joined?)")
        row = []
        for r in range(replicas):
            if spread:
                opts = {"scheduling_strategy": PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=r)}
            row.append(ShardReplica.options(**opts).remote(engine, shard, index_dir, threads=threads))
        actors.append(row)
    infos = [[ray.get(a.info.remote(), timeout=300) for a in row] for row in actors]
    return actors, infos


def stop_replicas(actors, timeout=30):
    """Stops every replica's `engine serve` (actors whose node is gone are skipped)."""
    for row in actors:
        for actor in row:
            try:
                ray.get(actor.stop.remote(), timeout=timeout)
            except Exception:
                pass
