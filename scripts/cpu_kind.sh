#!/usr/bin/env bash
# Prints the CPU kind that names a benchmark baseline (Benchmarks/Thresholds/<kind>): zen4 (AMD
# family 25 with AVX-512), xeon-emr (Intel Emerald Rapids, family 6 model 207), otherwise
# vendor-family-model (e.g. intel-6-143), which has no baseline until one is recorded. A forced
# kernel level (CK_ISA) is a different configuration: its name is appended (zen4-avx2).
set -euo pipefail
field() { grep -m1 "^$1[[:space:]]*:" /proc/cpuinfo | sed 's/^[^:]*:[[:space:]]*//'; }
vendor=$(field vendor_id)
family=$(field "cpu family")
model=$(field model)
flags=" $(field flags) "
case "$vendor" in
AuthenticAMD) kind="amd-$family-$model"; [ "$family" = 25 ] && [[ $flags == *" avx512f "* ]] && kind=zen4 ;;
GenuineIntel) kind="intel-$family-$model"; [ "$family" = 6 ] && [ "$model" = 207 ] && kind=xeon-emr ;;
*) kind="other-$family-$model" ;;
esac
echo "$kind${CK_ISA:+-$CK_ISA}"
