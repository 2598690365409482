"""Inference replicas on Ray Serve: each replica supervises one `engine serve --model` (plain or
encrypted) on its node, with Serve health checks (a replica whose process died or stopped
answering /health is replaced). Clients ask the deployment where to go (`GET` on its route
returns one live replica's URL) and then talk to that `engine serve` directly: tokens never pass
through Ray, and an encrypted model's key stays with the client. A client whose replica dies
mid-stream locates another and starts over; greedy decoding gives it the same text."""
import json
import urllib.request

import ray
from ray import serve

from .supervisor import EngineProcess


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.1}, health_check_period_s=1,
                  health_check_timeout_s=5)
class ModelReplica:
    def __init__(self, engine, model, threads=1, extra_args=()):
        self.proc = EngineProcess(engine, ["--model", model, "--threads", str(threads), *extra_args],
                                  host=ray.util.get_node_ip_address())

    def check_health(self):
        if not self.proc.alive():
            raise RuntimeError(f"engine serve (pid {self.proc.pid}) exited")
        with urllib.request.urlopen(self.proc.url + "/health", timeout=3) as r:
            if json.load(r).get("status") != "ok":
                raise RuntimeError("engine serve is not healthy")

    async def __call__(self, request):
        return {"url": self.proc.url, "pid": self.proc.pid}

    def __del__(self):
        try:
            self.proc.stop(timeout=10)
        except Exception:
            pass
