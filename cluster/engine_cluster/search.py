"""Sharded search: each query goes only to the shards owning its nearest coarse clusters (the
routing table), to one live replica of each (failing over to the next within a deadline), and
the per-shard top-k lists are merged by distance. An answer that misses a shard says so:
`partial: true` and the shards in `missing`, never a silent short list."""
import concurrent.futures
import json
import urllib.error
import urllib.request


class ShardedSearcher:
    def __init__(self, routing, replicas, deadline=2.0, index_name="shard", api_key=None, verify=True,
                 per_query=0.01):
        """`replicas`: for each shard, the base URLs of the `engine serve` processes holding it.
        With `verify`, every replica that answers must hold its shard as the routing table
        describes it (dimension, metric, vector count); a mismatch raises RoutingError.
        A replica has `deadline` seconds plus `per_query` seconds for each query of the batch
        sent to it to answer before the next replica is asked: a fixed deadline alone made a
        large batch on a freshly started (cold) replica fail over, and then come back partial,
        although nothing was wrong but its size."""
        from .routing import RoutingError
        if len(replicas) != routing.shards:
            raise RoutingError(f"{len(replicas)} replica lists for the {routing.shards} shards of the routing table")
        self.routing = routing
        self.replicas = [list(r) for r in replicas]
        self.deadline = deadline
        self.per_query = per_query
        self.index_name = index_name
        self.api_key = api_key
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=32)
        if verify:
            for shard, urls in enumerate(self.replicas):
                for url in urls:
                    try:
                        st = self._get(f"{url}/v1/indexes/{index_name}")
                    except (urllib.error.URLError, OSError, ValueError):
                        continue  # down now: a failover candidate, checked by its answers' absence
                    want = routing.vectors_per_shard[shard]
                    if st.get("dimension") != routing.dim or st.get("metric") != routing.metric or \
                            st.get("count") != want:
                        raise RoutingError(
                            f"{url} does not hold shard {shard} of this routing table: it has {st.get('count')} "
                            f"{st.get('dimension')}-d {st.get('metric')} vectors, the table says {want} "
                            f"{routing.dim}-d {routing.metric}")

    def _get(self, url):
        req = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})
        with urllib.request.urlopen(req, timeout=self.deadline) as r:
            return json.load(r)

    def _post(self, url, body):
        req = urllib.request.Request(
            f"{url}/v1/indexes/{self.index_name}/search", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})})
        timeout = self.deadline + self.per_query * len(body["vectors"])
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)["results"]

    def _shard(self, shard, queries, k, nprobe):
        """Results of one shard for the queries, from the first replica that answers in time."""
        errors = []
        for url in self.replicas[shard]:
            try:
                return self._post(url, {"vectors": queries, "k": k, "nprobe": nprobe}), url
            except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
                errors.append(f"{url}: {e}")
        raise RuntimeError("; ".join(errors) or "no replica")

    def search(self, queries, k=10, nprobe=32, probes=4):
        """Top-k per query: {"results": [[{"id", "distance"}...]...], "partial", "missing", "shards"}."""
        targets = [self.routing.route(q, probes) for q in queries]
        by_shard = {}
        for qi, ts in enumerate(targets):
            for s in ts:
                by_shard.setdefault(s, []).append(qi)
        futures = {s: self.pool.submit(self._shard, s, [queries[i] for i in qs], k, nprobe)
                   for s, qs in by_shard.items()}
        merged = [dict() for _ in queries]
        missing = {}
        for s, f in futures.items():
            try:
                results, _ = f.result()
            except RuntimeError as e:
                missing[s] = str(e)
                continue
            for qi, hits in zip(by_shard[s], results):
                for h in hits:
                    i, d = int(h["id"]), float(h["distance"])
                    if d < merged[qi].get(i, float("inf")):
                        merged[qi][i] = d
        out = []
        for m in merged:
            top = sorted(m.items(), key=lambda t: (t[1], t[0]))[:k]
            out.append([{"id": i, "distance": d} for i, d in top])
        return {"results": out, "partial": bool(missing), "missing": sorted(missing),
                "shards": [len(t) for t in targets]}
