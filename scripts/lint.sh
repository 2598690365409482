#!/usr/bin/env bash
# Formatting and lint gate (run by .ci/run): swift-format (configuration in .swift-format, 120
# columns) in strict lint mode, clang-format (configuration in .clang-format) on the C core, and
# no source line over 120 columns (swift-format cannot break long string literals).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang-format >/dev/null
fi
swift format lint --strict -r Sources Tests Benchmarks/Benchmarks
git ls-files 'Sources/CKernels/*.c' 'Sources/CKernels/*.h' 'Sources/CKernels/*.inc' | xargs clang-format --dry-run --Werror
long=$(git ls-files '*.swift' '*.c' '*.h' '*.inc' | python3 -c '
import sys
for path in sys.stdin.read().split():
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        if len(line.rstrip("\n")) > 120: print(f"{path}:{n}: {len(line.rstrip())} columns")
')
if [ -n "$long" ]; then echo "$long"; echo "lint: lines over 120 columns"; exit 1; fi
echo "lint: clean"
