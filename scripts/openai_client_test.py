#!/usr/bin/env python3
"""Checks `engine serve` with the official `openai` Python package (PyPI), unchanged.

The expected texts and vectors come from the caller (ServerTests computes them in process with
the same model); this script only talks to the server through the client library and compares.

    python3 scripts/openai_client_test.py --base-url http://127.0.0.1:PORT/v1 --api-key KEY \
        --expect expected.json

expected.json: {"model", "embedding_model", "prompt", "completion", "max_tokens", "question",
"chat", "chat_max_tokens", "texts", "embeddings"}. Exits 1 with a message on the first mismatch.
"""
import argparse
import array
import json
import sys

import openai


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--expect", required=True)
    a = ap.parse_args()
    e = json.load(open(a.expect))
    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=300)
    checks = 0

    def check(ok, what):
        nonlocal checks
        if not ok:
            print(f"openai client: FAILED: {what}")
            sys.exit(1)
        checks += 1

    ids = [m.id for m in client.models.list().data]
    check(e["model"] in ids and e["embedding_model"] in ids, f"models.list: {ids}")

    r = client.completions.create(model=e["model"], prompt=e["prompt"], max_tokens=e["max_tokens"], temperature=0)
    check(r.choices[0].text == e["completion"], f"completion {r.choices[0].text!r} != {e['completion']!r}")
    check(r.usage.completion_tokens == e["max_tokens"], f"usage {r.usage}")

    msgs = [{"role": "user", "content": e["question"]}]
    r = client.chat.completions.create(model=e["model"], messages=msgs, max_tokens=e["chat_max_tokens"], temperature=0)
    check(r.choices[0].message.content == e["chat"], f"chat {r.choices[0].message.content!r} != {e['chat']!r}")

    parts, reasons = [], []
    for chunk in client.chat.completions.create(
        model=e["model"], messages=msgs, max_tokens=e["chat_max_tokens"], temperature=0, stream=True
    ):
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                reasons.append(c.finish_reason)
    check("".join(parts) == e["chat"], f"streamed chat {''.join(parts)!r} != {e['chat']!r}")
    check(len(reasons) == 1 and reasons[0] in ("stop", "length"), f"finish reasons {reasons}")

    for fmt in (None, "float"):  # None: the client's default, base64
        kw = {} if fmt is None else {"encoding_format": fmt}
        r = client.embeddings.create(model=e["embedding_model"], input=e["texts"], **kw)
        check(len(r.data) == len(e["texts"]), "embedding count")
        for got, want in zip(r.data, e["embeddings"]):
            # both sides rounded to float32 (JSON carries the shortest decimal of each float32):
            # through JSON or base64 the server's vectors must come back exactly
            g, w = array.array("f", got.embedding), array.array("f", want)
            worst = max(abs(x - y) for x, y in zip(g, w))
            check(len(got.embedding) == len(want) and worst == 0, f"embedding ({fmt}) differs by {worst}")

    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        check(False, "unknown model accepted")
    except openai.NotFoundError:
        checks += 1
    try:
        openai.OpenAI(base_url=a.base_url, api_key="wrong-key-xxxxxxxxxxxx", max_retries=0).models.list()
        check(False, "wrong key accepted")
    except openai.AuthenticationError:
        checks += 1
    print(f"openai client {openai.__version__}: {checks} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
