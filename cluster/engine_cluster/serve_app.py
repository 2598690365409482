"""The sharded-search router as a Ray Serve deployment: POST {"vectors": [[...]], "k", "nprobe",
"probes"} -> {"results", "partial", "missing", "shards"}; bad requests get 400 with a message.
Queries and results travel over HTTP between the client, the router and the `engine serve`
processes, never through Ray's object store."""
import asyncio

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from .routing import Routing
from .search import ShardedSearcher


def _error(message, status=400):
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class SearchRouter:
    def __init__(self, routing_dir, replicas, deadline=3.0):
        self.searcher = ShardedSearcher(Routing(routing_dir), replicas, deadline=deadline)
        self.dim = self.searcher.routing.dim

    async def __call__(self, request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error("the body is not JSON")
        if not isinstance(body, dict):
            return _error("the body is a JSON object")
        vectors = body.get("vectors")
        if not isinstance(vectors, list) or not vectors or len(vectors) > 4096:
            return _error("vectors: a list of 1 to 4096 query vectors")
        for v in vectors:
            if not isinstance(v, list) or len(v) != self.dim or not all(
                    isinstance(x, (int, float)) and x == x and abs(x) != float("inf") for x in v):
                return _error(f"every query is {self.dim} finite numbers")
        k, nprobe, probes = body.get("k", 10), body.get("nprobe", 32), body.get("probes", 4)
        for name, value, hi in (("k", k, 1000), ("nprobe", nprobe, 65536), ("probes", probes, 4096)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= hi:
                return _error(f"{name} must be an integer in 1...{hi}")
        result = await asyncio.to_thread(self.searcher.search, vectors, k, nprobe, probes)
        return JSONResponse(result)
