#!/usr/bin/env python3
"""Reference token ids for the byte-level BPE tokenizer, from Hugging Face `tokenizers`
(its own BPE and pre-tokenizers, configured as SmolLM2's tokenizer: individual digits, then
GPT-2 byte-level) over the vocabulary and merges stored in the GGUF file.

Strings: WordNet glosses (apt-get install wordnet-base; real English text) plus hand-written
edge cases (accents, emoji, CJK, whitespace runs, digits, contractions, control tokens).
Writes Tests/EngineTests/Fixtures/smollm2_tokens.jsonl: {"text": ..., "ids": [...]} per line.
Usage: python3 scripts/gen_tokenizer_fixture.py MODEL.gguf [--n 2000]
"""
import argparse
import json
import random
import sys
from pathlib import Path

from gguf import GGUFReader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ref_smollm2 import tokenizer_from_gguf  # noqa: E402

EDGE = [
    "", " ", "  ", "\n", "\n\n\n", "\t\tindented", "trailing spaces   ", "   leading", "a  b   c    d",
    "café naïve résumé Æsop coöperate", "Ünïcödé ÀÉÎÕÜ ñ ç ß", "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦",
    "中文测试：你好，世界！", "日本語のテキストです。", "한국어 문장입니다.", "Ελληνικά και русский текст",
    "digits 1234567890 and 3.14159 and 1,000,000", "x² + y³ = z⁴ ½ ¾ Ⅻ ٣٤٥", "It's they're we've I'm you'll he'd",
    "IT'S THEY'RE (upper-case contractions)", "don't won't can't", "email: someone@example.com, url: https://a.b/c?d=e&f=g",
    "code: for (int i = 0; i < n; ++i) { x[i] += 1; }", "tabs\tand\r\nwindows line ends\r\n", "punctuation!!! ??? ... ---",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>after", "mixed<|im_start|>inside",
    "    def f(x):\n        return x * 2\n", "$100.00 €50 £20 ¥1000", "‘curly quotes’ “double” «guillemets»",
    "zero\u200bwidth space", "non\u00a0breaking space", "combining e\u0301 accent", "a" * 300, "ab " * 100,
]


def wordnet_glosses():
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        p = Path(f"/usr/share/wordnet/data.{pos}")
        if not p.exists():
            continue
        for line in p.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            out.append(line.split("|", 1)[1].strip())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    tok = tokenizer_from_gguf(GGUFReader(args.model))
    glosses = wordnet_glosses()
    if not glosses:
        sys.exit("WordNet glosses not found: apt-get install wordnet-base")
    random.seed(20261127)
    texts = EDGE + random.sample(glosses, args.n)
    out = Path(__file__).resolve().parent.parent / "Tests/EngineTests/Fixtures/smollm2_tokens.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        for t in texts:
            ids = tok.encode(t).ids
            assert tok.decode(ids, skip_special_tokens=False) == t or "<|" in t, repr(t)
            f.write(json.dumps({"text": t, "ids": ids}, ensure_ascii=False) + "\n")
    print(f"wrote {out}: {len(texts)} strings", file=sys.stderr)


if __name__ == "__main__":
    main()
