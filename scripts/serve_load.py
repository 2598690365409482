#!/usr/bin/env python3
"""Load, overload and fault driver for an OpenAI-compatible completion server (engine serve or
llama.cpp's llama-server), standard library only (asyncio sockets, HTTP/1.1, server-sent events).

    python3 scripts/serve_load.py --url http://127.0.0.1:8080 [--api-key KEY] \
        --clients 1,4,16,64 --requests 2 --max-tokens 64 [--json out.json]

Each client sends `--requests` streaming /v1/completions requests one after another (greedy,
`ignore_eos` so every request yields max-tokens tokens) and records the time to the first token
and the gap between tokens. Per concurrency level: TTFT p50/p99, inter-token p50/p99, aggregate
generated tokens/s (all tokens over the wall time of the level), refusals (429/503, which must
carry Retry-After) and errors. `--abort-after N`: each client closes its connection after N
tokens (clients killed mid-stream).
"""
import argparse
import asyncio
import json
import statistics
import sys
import time
from urllib.parse import urlparse

PROMPTS = [
    "The history of the printing press",
    "Once upon a time in a small village",
    "The main ideas of thermodynamics are",
    "A recipe for bread starts with",
    "def quicksort(items):",
    "The capital cities of Europe include",
    "In the year 2050, transport",
    "The best way to learn a language is",
]


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def stream_request(host, port, path, body, api_key, abort_after=None):
    """Returns (status, headers, token_times, finished_with_done)."""
    reader, writer = await asyncio.open_connection(host, port)
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n"
    )
    if api_key:
        head += f"Authorization: Bearer {api_key}\r\n"
    writer.write(head.encode() + b"\r\n" + data)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    times, done = [], False
    if status == 200:
        chunked = headers.get("transfer-encoding", "") == "chunked"
        buf = b""
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    break
                size = int(size_line.strip() or b"0", 16)
                if size == 0:
                    break
                chunk = await reader.readexactly(size + 2)
                buf += chunk[:-2]
            else:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: "):
                        continue
                    payload = line[6:]
                    if payload == b"[DONE]":
                        done = True
                        continue
                    o = json.loads(payload)
                    ch = (o.get("choices") or [{}])[0]
                    if ch.get("text") or ch.get("content"):
                        times.append(time.perf_counter())
            if abort_after is not None and len(times) >= abort_after:
                break
    else:
        await reader.read()
    writer.close()
    try:
        await writer.wait_closed()
    except Exception:
        pass
    return status, headers, times, done


async def client(i, args, host, port, stats):
    for r in range(args.requests):
        body = {
            "prompt": PROMPTS[(i + r) % len(PROMPTS)],
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "stream": True,
            "ignore_eos": True,
        }
        if args.model:
            body["model"] = args.model
        t0 = time.perf_counter()
        try:
            status, headers, times, done = await stream_request(
                host, port, "/v1/completions", body, args.api_key, args.abort_after
            )
        except Exception as e:  # connection refused or reset: an error, not a refusal
            stats["errors"].append(repr(e))
            continue
        if status in (429, 503):
            stats["refused"] += 1
            if "retry-after" not in headers:
                stats["errors"].append(f"{status} without Retry-After")
            await asyncio.sleep(float(headers.get("retry-after", "1")))
            continue
        if status != 200:
            stats["errors"].append(f"status {status}")
            continue
        if args.abort_after is None and not done:
            stats["errors"].append("stream ended without [DONE]")
        if times:
            stats["ttft"].append(times[0] - t0)
            stats["itl"] += [b - a for a, b in zip(times, times[1:])]
            stats["tokens"] += len(times)
            stats["completed"] += 1


async def level(n, args):
    u = urlparse(args.url)
    stats = {"ttft": [], "itl": [], "tokens": 0, "completed": 0, "refused": 0, "errors": []}
    t0 = time.perf_counter()
    await asyncio.gather(*(client(i, args, u.hostname, u.port, stats) for i in range(n)))
    wall = time.perf_counter() - t0
    return {
        "clients": n,
        "completed": stats["completed"],
        "refused": stats["refused"],
        "errors": len(stats["errors"]),
        "error_examples": stats["errors"][:3],
        "tokens": stats["tokens"],
        "seconds": wall,
        "tokens_per_s": stats["tokens"] / wall,
        "ttft_p50_ms": 1e3 * pct(stats["ttft"], 50),
        "ttft_p99_ms": 1e3 * pct(stats["ttft"], 99),
        "itl_p50_ms": 1e3 * pct(stats["itl"], 50),
        "itl_p99_ms": 1e3 * pct(stats["itl"], 99),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key")
    ap.add_argument("--model")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--abort-after", type=int)
    ap.add_argument("--label", default="")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for n in [int(x) for x in args.clients.split(",")]:
        r = asyncio.run(level(n, args))
        r["label"] = args.label
        rows.append(r)
        print(
            f"{args.label:>10} clients {n:3d}: {r['tokens_per_s']:7.1f} tok/s  TTFT p50 {r['ttft_p50_ms']:7.1f} "
            f"p99 {r['ttft_p99_ms']:7.1f} ms  ITL p50 {r['itl_p50_ms']:6.1f} p99 {r['itl_p99_ms']:6.1f} ms  "
            f"completed {r['completed']} refused {r['refused']} errors {r['errors']} {r['error_examples']}",
            flush=True,
        )
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
