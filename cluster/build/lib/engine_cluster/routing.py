"""The routing table `engine index partition` writes: coarse centroids and the shard owning each."""
import hashlib
import json
import os

import numpy as np


class RoutingError(Exception):
    """A routing table that is missing, corrupt, or does not match the shards."""


class Routing:
    def __init__(self, directory):
        path = os.path.join(directory, "routing.json")
        try:
            with open(path) as f:
                m = json.load(f)
        except (OSError, ValueError) as e:
            raise RoutingError(f"{path}: cannot read the routing table ({e})") from e
        if m.get("format") != "engine-shard-routing" or m.get("version") != 1:
            raise RoutingError(f"{path}: not an engine routing table (format/version)")
        cpath = os.path.join(directory, m["centroids_file"])
        with open(cpath, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != m["centroids_sha256"]:
            raise RoutingError(f"{cpath}: checksum mismatch (not this routing table's centroids)")
        self.centroids = np.load(cpath).astype(np.float32)
        self.dim = int(m["dim"])
        self.shards = int(m["shards"])
        self.metric = m["metric"]
        self.owner = np.asarray(m["owner"], dtype=np.int64)
        if self.centroids.shape != (len(self.owner), self.dim):
            raise RoutingError(f"{cpath}: shape {self.centroids.shape} does not match the table")
        if len(self.owner) == 0 or self.owner.min() < 0 or self.owner.max() >= self.shards:
            raise RoutingError(f"{path}: an owner is not one of the {self.shards} shards")
        self.vectors_per_shard = list(m["vectors_per_shard"])

    def route(self, query, probes):
        """Shards owning the `probes` nearest coarse centroids, nearest first, each once."""
        q = np.asarray(query, dtype=np.float32)
        if q.shape != (self.dim,) or not np.all(np.isfinite(q)):
            raise ValueError(f"a query is {self.dim} finite values")
        if self.metric == "cosine":
            n = np.linalg.norm(q)
            if n > 0:
                q = q / n
        d = ((self.centroids - q) ** 2).sum(axis=1)
        order = np.lexsort((np.arange(len(d)), d))[:probes]
        out = []
        for c in order:
            s = int(self.owner[c])
            if s not in out:
                out.append(s)
        return out
