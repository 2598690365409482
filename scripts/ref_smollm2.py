#!/usr/bin/env python3
"""Independent reference for the Llama-family decoder: a plain numpy forward pass of a GGUF
model (weights read and dequantized by gguf-py, the ggml project's reader), written from the
architecture description, not from Engine's code.

Writes Tests/EngineTests/Fixtures/smollm2_logits.bin (little-endian):
  u32 n_prompts, u32 vocab, u32 n_sampled, u32[n_sampled] sampled vocabulary ids
  per prompt: u32 T, u32[T] token ids, then per position t < T:
      f32 logit max, f32 logit min, u32 argmax, f32[n_sampled] logits at the sampled ids
  then per prompt: u32 n_gen, u32[n_gen] greedy continuation (argmax, full-precision reference)
Logits are computed in float64 from the dequantized weights (the "f32 path" reference).

Token ids come from the Hugging Face `tokenizers` library built from the GGUF vocabulary and
merges (byte-level BPE), so the fixture does not depend on Engine's tokenizer.

With --perplexity TEXT it writes Tests/EngineTests/Fixtures/smollm2_perplexity.json instead:
the token ids of TEXT's first --chunks x --context tokens and the perplexity computed as
llama.cpp's perplexity tool does (chunks of --context tokens, each from position 0, the second
half of each chunk scored by the logits of the position before; BOS replaces a chunk's first
token only when the GGUF says add_bos_token), in float64.

Usage: pip install numpy gguf tokenizers
       python3 scripts/ref_smollm2.py MODEL.gguf [--gen 32]
       python3 scripts/ref_smollm2.py MODEL.gguf --perplexity /usr/share/common-licenses/GPL-3 \
           --context 128 --chunks 2
"""
import argparse
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, quants

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Once upon a time, in a small village by the sea,",
    "Water boils at 100 degrees Celsius. At what temperature does it freeze?",
    "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n",
]


def field(r, key):
    f = r.fields[key]
    if f.types[0].name == "STRING":
        return bytes(f.parts[f.data[0]]).decode()
    if f.types[0].name == "ARRAY":
        if f.types[1].name == "STRING":
            return [bytes(f.parts[i]).decode() for i in f.data]
        return [f.parts[i][0] for i in f.data]
    return f.parts[f.data[0]][0]


def tokenizer_from_gguf(r):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, Regex
    tokens = field(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # SmolLM2 (tokenizer.json): digits split individually, then GPT-2 byte-level pre-tokenization.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    types = field(r, "tokenizer.ggml.token_type")
    specials = [t for t, ty in zip(tokens, types) if ty == 3]  # CONTROL tokens
    tok.add_special_tokens(specials)
    return tok


class Model:
    def __init__(self, path):
        r = GGUFReader(path)
        self.r = r
        a = "llama"
        self.dim = int(field(r, f"{a}.embedding_length"))
        self.n_layers = int(field(r, f"{a}.block_count"))
        self.n_heads = int(field(r, f"{a}.attention.head_count"))
        self.n_kv = int(field(r, f"{a}.attention.head_count_kv"))
        self.eps = float(field(r, f"{a}.attention.layer_norm_rms_epsilon"))
        self.base = float(field(r, f"{a}.rope.freq_base"))
        self.hd = self.dim // self.n_heads
        self.t = {}
        for t in r.tensors:
            w = quants.dequantize(t.data, t.tensor_type).astype(np.float64)
            # ggml dims are (ne0 = row length, ne1 = rows): numpy shape is (rows, ne0)
            self.t[t.name] = w.reshape([int(d) for d in reversed(t.shape.tolist())])
        self.out = self.t.get("output.weight", self.t["token_embd.weight"])  # tied embeddings

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        # GGUF llama tensors are stored for ggml's "normal" RoPE: adjacent pairs (2i, 2i+1)
        # (the converter permutes Hugging Face's q/k weights, whose pairing is i <-> i + d/2).
        T, H, D = x.shape
        inv = self.base ** (-np.arange(0, D, 2) / D)
        ang = pos[:, None] * inv[None, :]  # T x D/2
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def product_input(self, x):
        """The input of a layer's weight products as they see it (scripts/act_quant_sim.py
        rounds it as int8 activations are); the reference takes it as it is."""
        return x

    def forward(self, ids):
        T = len(ids)
        x = self.t["token_embd.weight"][ids]
        pos = np.arange(T, dtype=np.float64)
        g = self.n_heads // self.n_kv
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(self.n_layers):
            p = f"blk.{l}."
            h = self.product_input(self.rmsnorm(x, self.t[p + "attn_norm.weight"]))
            q = (h @ self.t[p + "attn_q.weight"].T).reshape(T, self.n_heads, self.hd)
            k = (h @ self.t[p + "attn_k.weight"].T).reshape(T, self.n_kv, self.hd)
            v = (h @ self.t[p + "attn_v.weight"].T).reshape(T, self.n_kv, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            o = np.empty((T, self.n_heads, self.hd))
            for hh in range(self.n_heads):
                kv = hh // g
                s = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(self.hd) + mask
                s = np.exp(s - s.max(axis=1, keepdims=True))
                s /= s.sum(axis=1, keepdims=True)
                o[:, hh, :] = s @ v[:, kv, :]
            x = x + self.product_input(o.reshape(T, self.dim)) @ self.t[p + "attn_output.weight"].T
            h = self.product_input(self.rmsnorm(x, self.t[p + "ffn_norm.weight"]))
            gt = h @ self.t[p + "ffn_gate.weight"].T
            up = h @ self.t[p + "ffn_up.weight"].T
            x = x + self.product_input(gt / (1 + np.exp(-gt)) * up) @ self.t[p + "ffn_down.weight"].T
        x = self.rmsnorm(x, self.t["output_norm.weight"])
        return x @ self.out.T


def perplexity(m, tok, path, context, chunks):
    import json
    text = Path(path).read_text(encoding="utf-8")
    ids = tok.encode(text).ids[: context * chunks]
    assert len(ids) == context * chunks, f"{path} has fewer than {context * chunks} tokens"
    add_bos = "tokenizer.ggml.add_bos_token" in m.r.fields and bool(field(m.r, "tokenizer.ggml.add_bos_token"))
    bos = int(field(m.r, "tokenizer.ggml.bos_token_id")) if add_bos else None
    first = context // 2
    nlls = []
    for c in range(chunks):
        chunk = list(ids[c * context:(c + 1) * context])
        if bos is not None:
            chunk[0] = bos
        logits = m.forward(chunk)
        nll = 0.0
        for j in range(first, context - 1):
            row = logits[j]
            mx = row.max()
            nll -= row[chunk[j + 1]] - mx - np.log(np.exp(row - mx).sum())
        nlls.append(nll / (context - 1 - first))
        print(f"chunk {c}: mean nll {nlls[-1]:.6f}", file=sys.stderr)
    ppl = float(np.exp(np.mean(nlls)))
    out = Path(__file__).resolve().parent.parent / "Tests/EngineTests/Fixtures/smollm2_perplexity.json"
    out.write_text(json.dumps({
        "source": f"the first {context * chunks} tokens of {path} (Debian common-licenses)",
        "context": context, "chunks": chunks, "bos": bos, "tokens": ids,
        "chunk_nll": nlls, "perplexity": ppl,
    }) + "\n")
    print(f"perplexity {ppl:.6f}; wrote {out}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--sampled", type=int, default=2048)
    ap.add_argument("--perplexity", metavar="TEXT")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--chunks", type=int, default=2)
    args = ap.parse_args()
    m = Model(args.model)
    tok = tokenizer_from_gguf(m.r)
    if args.perplexity:
        perplexity(m, tok, args.perplexity, args.context, args.chunks)
        return
    vocab = m.out.shape[0]
    rng = np.random.default_rng(7)
    sampled = np.sort(rng.choice(vocab, size=args.sampled, replace=False)).astype(np.uint32)
    out = Path(__file__).resolve().parent.parent / "Tests/EngineTests/Fixtures/smollm2_logits.bin"
    gens = []
    with open(out, "wb") as f:
        f.write(struct.pack("<III", len(PROMPTS), vocab, len(sampled)))
        f.write(sampled.tobytes())
        for prompt in PROMPTS:
            ids = tok.encode(prompt).ids
            print(f"{len(ids):3d} tokens: {prompt!r}", file=sys.stderr)
            logits = m.forward(ids)
            f.write(struct.pack("<I", len(ids)))
            f.write(np.asarray(ids, dtype=np.uint32).tobytes())
            for t in range(len(ids)):
                row = logits[t]
                f.write(struct.pack("<ffI", row.max(), row.min(), int(row.argmax())))
                f.write(row[sampled].astype(np.float32).tobytes())
            # greedy continuation (full recompute each step: slow but plainly correct)
            seq = list(ids)
            for _ in range(args.gen):
                seq.append(int(m.forward(seq)[-1].argmax()))
            gens.append(seq[len(ids):])
            print("   ->", repr(tok.decode(gens[-1])), file=sys.stderr)
        for g in gens:
            f.write(struct.pack("<I", len(g)))
            f.write(np.asarray(g, dtype=np.uint32).tobytes())
    print(f"wrote {out} ({out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
