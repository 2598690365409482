#!/usr/bin/env python3
"""Search throughput through HTTP: C concurrent clients, each on one keep-alive connection, send
single-query POST /v1/indexes/{name}/search requests (k, nprobe) with Fashion-MNIST test images
(IDX, gzip) until every query has been sent; prints queries/s, latency p50/p99, errors.
Standard library only.

    python3 scripts/search_load.py --url http://127.0.0.1:8080 --index fm \
        --queries /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz --clients 16 --limit 2000
"""
import argparse
import asyncio
import gzip
import json
import struct
import sys
import time
from urllib.parse import urlparse


def read_idx(path, limit):
    with gzip.open(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803, "not an IDX image file"
        n = min(n, limit) if limit else n
        d = rows * cols
        raw = f.read(n * d)
    return [list(raw[i * d:(i + 1) * d]) for i in range(n)]


async def client(host, port, path, bodies, next_index, lat, errors, key):
    reader, writer = await asyncio.open_connection(host, port)
    while True:
        i = next_index[0]
        if i >= len(bodies):
            break
        next_index[0] += 1
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(bodies[i])}\r\n"
        if key:
            head += f"Authorization: Bearer {key}\r\n"
        t0 = time.perf_counter()
        writer.write(head.encode() + b"\r\n" + bodies[i])
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        body = await reader.readexactly(length)
        lat.append(time.perf_counter() - t0)
        if status != 200 or not json.loads(body).get("results"):
            errors.append(status)
    writer.close()


async def run(args):
    u = urlparse(args.url)
    vecs = read_idx(args.queries, args.limit)
    bodies = [json.dumps({"vector": v, "k": args.k, "nprobe": args.nprobe}).encode() for v in vecs]
    lat, errors, nxt = [], [], [0]
    path = f"/v1/indexes/{args.index}/search"
    # warm-up: one pass over 200 queries
    await client(u.hostname, u.port, path, bodies[:200], [0], [], [], args.api_key)
    t0 = time.perf_counter()
    await asyncio.gather(*(client(u.hostname, u.port, path, bodies, nxt, lat, errors, args.api_key)
                           for _ in range(args.clients)))
    wall = time.perf_counter() - t0
    lat.sort()
    print(f"search clients {args.clients}: {len(lat) / wall:.0f} queries/s, latency p50 "
          f"{1e3 * lat[len(lat) // 2]:.2f} ms p99 {1e3 * lat[int(0.99 * (len(lat) - 1))]:.2f} ms, "
          f"{len(lat)} queries, errors {len(errors)}")
    return 1 if errors else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--api-key")
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
