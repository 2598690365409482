#!/usr/bin/env bash
# Builds the libFuzzer harnesses (Fuzz/, sanitizers: fuzzer + address; UBSan on the C kernels)
# and runs each on a fresh seed corpus for SECONDS (default 60). Findings (crash-*, leak-*, timeout-*) are kept under
# .build-fuzz/findings/<harness>/ and fail the run.
#   bash scripts/fuzz.sh [SECONDS] [HARNESS...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(FuzzGGUF FuzzSafeTensors FuzzVectorFiles FuzzIndex FuzzDeltaLog FuzzKeyFile FuzzTokenizers)
swift build -c release --sanitize=fuzzer --sanitize=address --package-path Fuzz 2>&1 | grep -E "error|Build complete" || true
bin=Fuzz/.build/release
work=.build-fuzz
rm -rf "$work/seeds"; mkdir -p "$work/findings"
engine=""
[ -x .build/release/engine ] && engine=$(pwd)/.build/release/engine
ENGINE=$engine python3 scripts/fuzz_seeds.py "$work/seeds"
status=0
for h in "${harnesses[@]}"; do
  mkdir -p "$work/corpus/$h" "$work/findings/$h"
  cp -n "$work/seeds/$h"/* "$work/corpus/$h/" 2>/dev/null || true
  log="$work/findings/$h/log.txt"
  if ASAN_OPTIONS=detect_leaks=0 "$bin/$h" -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
      -artifact_prefix="$work/findings/$h/" "$work/corpus/$h" > "$log" 2>&1; then
    echo "fuzz $h: $(grep -Eo 'stat::number_of_executed_units: [0-9]+|Done [0-9]+ runs' "$log" | tail -1), no finding"
  else
    echo "fuzz $h: FINDING (see $log)"; tail -20 "$log"; status=1
  fi
done
exit $status
