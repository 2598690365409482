#!/usr/bin/env bash
# Shows the engine's OpenBLAS kernel-table fix at work on any x86 machine with AVX2: OpenBLAS is
# made to load with the SSE-era Prescott table (what Debian 12's 0.3.21 picks by itself on
# Sapphire/Emerald Rapids), the variable is then cleared as if OpenBLAS had chosen it, and the
# engine's first BLAS call switches the table (ck_blas.h). Prints the tables and sgemm GFLOP/s
# (512 x 512 x 512, one thread, best of 7) with each.
#   bash scripts/blas_core_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
inc=Sources/CKernels/include
cc -O2 -I"$inc" -ISources/CKernels/internal scripts/blas_core_check.c Sources/CKernels/blas/blas.c Sources/CKernels/dispatch.c \
    -lopenblas -llapacke -lm -o "$out/check"
OPENBLAS_CORETYPE=Prescott "$out/check"
