#!/usr/bin/env python3
"""Real English prose for the KV cache benchmark (scripts/bench_kv.py), from Debian
documentation packages: the Python tutorial, HOWTOs and FAQ (package python3.11-doc, their
reStructuredText sources), then Debian's license texts (/usr/share/common-licenses). Markup is
stripped: directives, code blocks (after "::" and ">>>" sessions), tables and role syntax are
dropped, hard-wrapped lines are joined into paragraphs. Sources are read in a fixed order, so
the output is the same on every machine with the same packages.

Usage: sudo apt-get install python3.11-doc
       python3 scripts/kv_corpus.py OUT.txt [--min-chars 200000]
"""
import argparse
import re
import sys
from pathlib import Path

DOC = Path("/usr/share/doc/python3.11-doc/html/_sources")
LICENSES = ["GPL-3", "Apache-2.0", "MPL-2.0", "GFDL-1.3", "Artistic", "CC0-1.0"]


def rst_to_prose(text):
    out, para = [], []
    in_code = False
    code_indent = 0
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if in_code:
            if stripped and indent <= code_indent:
                in_code = False
            else:
                continue
        if not stripped:
            if para:
                out.append(" ".join(para))
                para = []
            continue
        if stripped.startswith(".. ") or stripped.startswith(">>>") or stripped.startswith("..."):
            if stripped.startswith(".. ") and stripped.endswith("::"):
                in_code, code_indent = True, indent
            continue
        if re.fullmatch(r"[=\-~^\"'`#*+<>_]{3,}", stripped) or stripped.startswith(("+-", "|", "==")):
            continue  # section underlines, tables
        if stripped.endswith("::"):
            stripped = stripped[:-1] if not stripped.endswith(" ::") else stripped[:-3]
            in_code, code_indent = True, indent
        s = re.sub(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", stripped)  # :role:`text <target>`
        s = re.sub(r"`([^`<]*?)\s*<[^>]*>`_+", r"\1", s)  # `text <url>`_
        s = s.replace("``", "").replace("`", "").replace("**", "").replace("*", "")
        para.append(s)
    if para:
        out.append(" ".join(para))
    return "\n\n".join(p for p in out if len(p) > 40)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--min-chars", type=int, default=200_000)
    args = ap.parse_args()
    parts = []
    if DOC.is_dir():
        for sub in ["tutorial", "howto", "faq"]:
            for f in sorted((DOC / sub).glob("*.rst.txt")):
                parts.append(rst_to_prose(f.read_text(encoding="utf-8", errors="replace")))
    else:
        print(f"{DOC} missing (apt-get install python3.11-doc): licenses only", file=sys.stderr)
    for name in LICENSES:
        p = Path("/usr/share/common-licenses") / name
        if p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace")
            paras = [" ".join(x.split()) for x in re.split(r"\n\s*\n", text)]
            parts.append("\n\n".join(x for x in paras if x))
    text = "\n\n".join(p for p in parts if p) + "\n"
    if len(text) < args.min_chars:
        sys.exit(f"only {len(text)} characters of prose found; need {args.min_chars}")
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(text)} characters", file=sys.stderr)


if __name__ == "__main__":
    main()
