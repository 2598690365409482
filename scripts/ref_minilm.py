#!/usr/bin/env python3
"""Independent reference for the BERT encoder (all-MiniLM-L6-v2): a plain numpy float64 forward
pass over the safetensors weights (read by the `safetensors` package), tokenized by Hugging
Face `tokenizers` from the model's own tokenizer.json (padding off, truncation at 256 as
sentence-transformers does).

Writes Tests/EngineTests/Fixtures/minilm_embeddings.bin (little-endian):
  u32 n, u32 dim, then per sentence: u32 byte length, utf-8 text, u32 T, u32[T] ids, f32[dim] embedding
and Tests/EngineTests/Fixtures/minilm_tokens.jsonl ({"text", "ids"} per line, >= 2,000 strings).
Usage: pip install numpy safetensors tokenizers; apt-get install wordnet-base
       python3 scripts/ref_minilm.py MODEL_DIR [--n 250]
"""
import argparse
import json
import math
import random
import struct
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_tokenizer_fixture import EDGE, wordnet_glosses  # noqa: E402

EDGE_BERT = EDGE + ["Hello, World!", "A.B.C. D-E-F", "İstanbul ŞİŞLİ", "ﬁnancial ﬂow (ligatures)", "Mr. Smith's 3rd-floor office"]


def gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def layer_norm(x, g, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--n", type=int, default=250)
    args = ap.parse_args()
    d = Path(args.model_dir)
    cfg = json.loads((d / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(str(d / "model.safetensors")).items() if v.dtype != np.int64}
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    H, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    hd = H // nh

    def embed(ids):
        T = len(ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for l in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{l}."
            lin = lambda z, n: z @ w[p + n + ".weight"].T + w[p + n + ".bias"]
            q = lin(x, "attention.self.query").reshape(T, nh, hd).transpose(1, 0, 2)
            k = lin(x, "attention.self.key").reshape(T, nh, hd).transpose(1, 0, 2)
            v = lin(x, "attention.self.value").reshape(T, nh, hd).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(T, H)
            x = layer_norm(x + lin(ctx, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"],
                           w[p + "attention.output.LayerNorm.bias"], eps)
            x = layer_norm(x + lin(gelu(lin(x, "intermediate.dense")), "output.dense"), w[p + "output.LayerNorm.weight"],
                           w[p + "output.LayerNorm.bias"], eps)
        e = x.mean(0)
        return e / max(np.linalg.norm(e), 1e-12)

    glosses = wordnet_glosses()
    random.seed(384)
    sentences = random.sample(glosses, args.n - 6) + ["", "Hello, World!", "café naïve résumé", "中文测试：你好，世界！",
                                                       "emoji 😀🎉", "a " * 400]
    fx = Path(__file__).resolve().parent.parent / "Tests/EngineTests/Fixtures"
    with open(fx / "minilm_embeddings.bin", "wb") as f:
        f.write(struct.pack("<II", len(sentences), H))
        for s in sentences:
            ids = tok.encode(s).ids
            b = s.encode("utf-8")
            f.write(struct.pack("<I", len(b)) + b)
            f.write(struct.pack("<I", len(ids)) + np.asarray(ids, dtype=np.uint32).tobytes())
            f.write(embed(ids).astype(np.float32).tobytes())
    random.seed(2000)
    texts = EDGE_BERT + random.sample(glosses, 2000)
    with open(fx / "minilm_tokens.jsonl", "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "ids": tok.encode(t).ids}, ensure_ascii=False) + "\n")
    print(f"wrote {len(sentences)} embeddings and {len(texts)} tokenizations to {fx}", file=sys.stderr)


if __name__ == "__main__":
    main()
