#!/usr/bin/env python3
"""Independent reference for the GGUF block formats: quantize and dequantize with gguf-py
(the ggml project's own Python implementation) and store the results as a small fixture.

Layout of Tests/EngineTests/Fixtures/quant_gguf.bin (little-endian):
  u32 rows, u32 cols, f32[rows*cols] input
  then for each of Q8_0, Q4_0, Q4_1:
    u32 ggml type id, u32 nbytes, u8[nbytes] quantized rows, f32[rows*cols] dequantized by gguf-py
Run: pip install gguf numpy && python3 scripts/gen_quant_fixture.py
"""
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

rng = np.random.default_rng(20261127)
rows, cols = 6, 256
x = np.concatenate([
    rng.uniform(-1, 1, (2, cols)),
    rng.normal(0, 3, (2, cols)),
    rng.normal(0, 1e-3, (1, cols)),
    np.zeros((1, cols)),
]).astype(np.float32)
x[5, 64:96] = 0.75  # a constant block (max == min)
x[4, 0:32] = -x[4, 0:32] * 1000  # a block dominated by large magnitudes

out = Path(__file__).resolve().parent.parent / "Tests/EngineTests/Fixtures/quant_gguf.bin"
with open(out, "wb") as f:
    f.write(struct.pack("<II", rows, cols))
    f.write(x.tobytes())
    for t in (T.Q8_0, T.Q4_0, T.Q4_1):
        q = quants.quantize(x, t)
        d = quants.dequantize(q, t).astype(np.float32)
        f.write(struct.pack("<II", int(t), q.nbytes))
        f.write(q.tobytes())
        f.write(d.tobytes())
print(f"wrote {out} ({out.stat().st_size} bytes)", file=sys.stderr)
