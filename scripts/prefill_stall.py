#!/usr/bin/env python3
"""How long a running stream stalls when a long prompt arrives (chunked prefill, engine serve).

One client streams a greedy completion; after it has received 20 tokens a second client sends a
prompt of about PROMPT_TOKENS tokens. Prints the running stream's inter-token gaps before and
during the other prompt's prefill (max and median, ms). Run against a server started with
different --prefill-chunk values to compare.

usage: prefill_stall.py URL [PROMPT_TOKENS]   (standard library only)
"""
import json
import statistics
import sys
import threading
import time
import urllib.request

url = sys.argv[1].rstrip("/")
prompt_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 1500


def post(body, stream=False):
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=600)


times = []
started = threading.Event()


def runner():
    r = post({"prompt": "Once upon a time", "max_tokens": 160, "temperature": 0, "stream": True,
              "ignore_eos": True})
    for line in r:
        if line.startswith(b"data: {"):
            times.append(time.perf_counter())
            if len(times) == 20:
                started.set()


t = threading.Thread(target=runner)
t.start()
started.wait()
long_prompt = " ".join(f"word{i % 97}" for i in range(prompt_tokens // 3))
t0 = time.perf_counter()
post({"prompt": long_prompt, "max_tokens": 1, "temperature": 0}).read()
t1 = time.perf_counter()
t.join()
gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
before = [g for g, b in zip(gaps, times[1:]) if b < t0]
during = [g for g, b in zip(gaps, times[1:]) if t0 <= b <= t1 + 0.05]
print(json.dumps({
    "long_prompt_seconds": round(t1 - t0, 3),
    "gap_ms_before": {"median": round(statistics.median(before), 1), "max": round(max(before), 1)},
    "gap_ms_during": {"median": round(statistics.median(during), 1) if during else None,
                      "max": round(max(during), 1) if during else None, "count": len(during)},
}))
