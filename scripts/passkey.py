#!/usr/bin/env python3
"""Pass-key retrieval with each KV cache type: a five-digit key is stated once inside a long
stretch of real prose (Debian's license texts) and asked for at the end; a cache passes a prompt
when the greedy continuation contains the key as a number of its own (not inside a longer one). The prose before and after the needle, the key
and its position vary from prompt to prompt (seeded), so no single placement decides.

    python3 scripts/passkey.py --engine .build/release/engine --types f16,q2,mikv,h2o \
        --prompts 12 --chars 9000 [--extra "--kv-important 0.1"] [--json out.jsonl]

Prints one line per cache type: passed / prompts, and the key's token position range.
Uses only the standard library; `engine generate` does the work (greedy, 7 new tokens).
"""
import argparse
import json
import random
import re
import subprocess
import sys

LICENSES = ["GPL-3", "LGPL-3", "Apache-2.0", "MPL-2.0", "GPL-2", "Artistic", "GFDL-1.3"]


def corpus():
    text = ""
    for name in LICENSES:
        try:
            with open(f"/usr/share/common-licenses/{name}", encoding="utf-8") as f:
                text += f.read() + "\n\n"
        except OSError:
            pass
    if len(text) < 50000:
        sys.exit("passkey.py: too little text under /usr/share/common-licenses")
    return text


def prompts(n, chars, seed):
    text = corpus()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randrange(0, len(text) - chars - 1)
        hay = text[start : start + chars]
        # the needle lands between 15% and 60% of the prose, at a paragraph-free cut
        cut = rng.randrange(int(0.15 * chars), int(0.60 * chars))
        key = str(rng.randrange(10000, 100000))
        needle = f"\n\nHere is a fact to remember: the secret pass key is {key}. Remember the number {key}.\n\n"
        prompt = (hay[:cut] + needle + hay[cut:]
                  + "\n\nQuestion: what is the secret pass key? Answer: the secret pass key is")
        out.append((key, cut / chars, prompt))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default=".build/release/engine")
    ap.add_argument("--types", default="f16,q2,mikv,h2o")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--chars", type=int, default=9000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--extra", default="", help="more engine generate options, e.g. '--kv-important 0.1'")
    ap.add_argument("--json", help="append one JSON line per (type, prompt)")
    a = ap.parse_args()
    cases = prompts(a.prompts, a.chars, a.seed)
    for t in a.types.split(","):
        passed = 0
        for i, (key, frac, prompt) in enumerate(cases):
            cmd = [a.engine, "generate", "--prompt", prompt, "--max-tokens", "7", "--kv-cache", t] + a.extra.split()
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"passkey.py: {' '.join(cmd[:2])} failed: {r.stderr.strip()[-400:]}")
            ok = re.search(rf"(?<!\d){key}(?!\d)", r.stdout) is not None  # the key, not a longer number
            passed += ok
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps({"type": t, "extra": a.extra, "prompt": i, "key": key,
                                        "needle_at": round(frac, 3), "passed": ok,
                                        "output": r.stdout.strip()[-80:]}) + "\n")
        print(f"{t} {a.extra}: {passed}/{len(cases)} keys retrieved", flush=True)


if __name__ == "__main__":
    main()
