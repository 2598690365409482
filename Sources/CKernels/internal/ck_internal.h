/* Internal helpers shared by the kernel bodies: ISA target attributes, fp16 conversion. */
#ifndef CK_INTERNAL_H
#define CK_INTERNAL_H

#include <math.h>
#include <string.h>
#include "ck_common.h"

#if defined(__x86_64__) || defined(_M_X64)
#define CK_X86 1
#include <immintrin.h>
#else
#define CK_X86 0
#endif

/* Per-function targets: the translation unit is compiled for the baseline, and each SIMD
 * body opts into its instructions. Dispatch guarantees it is only called on a CPU that has them. */
#define CK_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,popcnt,bmi,bmi2")))
#define CK_TARGET_AVX512                                                                                               \
    __attribute__((                                                                                                    \
        target("avx512f,avx512bw,avx512vl,avx512dq,avx512vpopcntdq,avx512vnni,avx2,fma,f16c,popcnt,bmi,bmi2")))

/* How ISA variants are written (one way for every family):
 *  - <family>_serial.c holds the reference bodies, named ck_<family>_<op>[_<types>]_serial, and the
 *    table ck_<family>_serial; its ck_<family>_kernels_for is CK_DEFINE_KERNELS_FOR(<family>).
 *  - <family>_avx2.c and <family>_avx512.c hold the SIMD bodies (named ..._avx2 / ..._avx512) and
 *    the tables ck_<family>_avx2 / ck_<family>_avx512. When both widths share an algorithm, the
 *    body is written once in <family>_simd.inc, which each file includes after defining TGT (the
 *    target attribute) and SFX(name) (the suffix); when a level adds nothing (the work is a small
 *    share of a layer), its table points at the lower level's bodies and the header says so.
 *  - Shared SIMD helpers (horizontal sums, exp) live in ck_simd.h, nowhere else. */

/* The per-level tables of every family (defined in the family's files). */
#include "ck_attention.h"
#include "ck_hamming.h"
#include "ck_ops.h"
#include "ck_pq.h"
#include "ck_qmatmul.h"
#include "ck_vec.h"
#define CK_DECLARE_TABLES(fam) extern const ck_##fam##_kernels ck_##fam##_serial, ck_##fam##_avx2, ck_##fam##_avx512;
CK_DECLARE_TABLES(attention)
CK_DECLARE_TABLES(hamming)
CK_DECLARE_TABLES(ops)
CK_DECLARE_TABLES(pq)
CK_DECLARE_TABLES(qmatmul)
CK_DECLARE_TABLES(vec)

/* The table of a level, or NULL when this CPU (or build) lacks it. */
#if CK_X86
#define CK_DEFINE_KERNELS_FOR(fam)                                                                                     \
    const ck_##fam##_kernels *ck_##fam##_kernels_for(ck_isa level) {                                                   \
        if (!ck_isa_supported(level)) return NULL;                                                                     \
        switch (level) {                                                                                               \
        case CK_ISA_SCALAR:                                                                                            \
            return &ck_##fam##_serial;                                                                                 \
        case CK_ISA_AVX2:                                                                                              \
            return &ck_##fam##_avx2;                                                                                   \
        case CK_ISA_AVX512:                                                                                            \
            return &ck_##fam##_avx512;                                                                                 \
        }                                                                                                              \
        return NULL;                                                                                                   \
    }
#else
#define CK_DEFINE_KERNELS_FOR(fam)                                                                                     \
    const ck_##fam##_kernels *ck_##fam##_kernels_for(ck_isa level) {                                                   \
        return ck_isa_supported(level) && level == CK_ISA_SCALAR ? &ck_##fam##_serial : NULL;                          \
    }
#endif

/* x^p for p >= 0 by repeated squaring (Power-Softmax numerators; p is small and even). */
static inline float ck_powi(float x, int p) {
    float r = 1, b = x;
    while (p) {
        if (p & 1) r *= b;
        b *= b;
        p >>= 1;
    }
    return r;
}

/* Hot scan loops start on a 64-byte boundary, so their inner loops sit at the same offset in
 * every build (their alignment moved throughput by ~7% between otherwise identical binaries). */
#define CK_HOT __attribute__((aligned(64)))

/* Prefetch for reading (into every cache level) of the 64-byte lines of [p, p + n): starts the
 * DRAM misses of bytes a loop will reach shortly. A hint: never faults. */
static inline void ck_prefetch_lines(const void *p, size_t n) {
    const char *c = (const char *)p;
    for (size_t o = 0; o < n; o += 64) __builtin_prefetch(c + o, 0, 3);
}

/* IEEE binary16 <-> binary32, round to nearest even; portable reference used by the serial
 * kernels. F16C instructions produce the same bits. */
static inline float ck_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400u) == 0);
            man &= 0x3ffu;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t ck_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((absx >> 13) & 0x3ffu)); /* NaN */
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf (>= 65520) */
    if (absx < 0x38800000u) {                                   /* below the smallest normal half: subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign;          /* < 2^-25 rounds to zero */
        uint32_t e = absx >> 23;
        uint32_t man = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* value = man * 2^(e-150) = q * 2^-24 */
        uint32_t q = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t q = (absx - 0x38000000u) >> 13; /* rebias exponent 127 -> 15 */
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

static inline size_t ck_min_sz(size_t a, size_t b) {
    return a < b ? a : b;
}

#endif
