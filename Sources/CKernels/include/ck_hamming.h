/* ck_hamming.h — Hamming distances over packed binary codes.
 *
 * Layout: a code is `words` uint64 words (bits = 64 * words); a set of n codes is n x words,
 * row-major, contiguous. Distances are popcount(a XOR b), exact integers (no rounding).
 * Numerical notes: uint32 results hold codes up to 2^32 bits; weighted distances accumulate in
 * float (exact while sum_l w_l * bits < 2^24 for integer weights).
 * Variants: serial (portable bit counting), avx2 (256-bit codes: nibble-LUT pshufb + psadbw;
 * otherwise hardware popcnt), avx512 (VPOPCNTDQ).
 */
#ifndef CK_HAMMING_H
#define CK_HAMMING_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct ck_hamming_kernels {
    /** out[i] = popcount(q ^ codes[i]), i < n. */
    void (*dist_1xn)(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n, size_t words,
                     uint32_t *restrict out);
    /** out[i*n + j] = popcount(q_i ^ codes_j) for m queries (m x words); tiled over codes. */
    void (*dist_mxn)(const uint64_t *restrict q, size_t m, const uint64_t *restrict codes, size_t n, size_t words,
                     uint32_t *restrict out);
    /** Multi-level codes (residual binarization): each code is `levels` groups of `words` words;
     *  out[i] = sum_l w[l] * popcount(q_l ^ codes[i]_l). */
    void (*weighted_1xn)(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n, size_t words,
                         size_t levels, const float *restrict w, float *restrict out);
} ck_hamming_kernels;

/** The kernels of one ISA level, or NULL if this CPU lacks it. */
const ck_hamming_kernels *ck_hamming_kernels_for(ck_isa level);

/** Number of codes scored per block by ck_hamming_topk; scratch must hold this many uint32. */
#define CK_HAMMING_TOPK_BLOCK 4096

/** k nearest codes to q (ascending distance, ties by smaller index). Writes min(k, n) results
 *  and returns that count. `scratch` holds CK_HAMMING_TOPK_BLOCK uint32. */
size_t ck_hamming_topk(const ck_hamming_kernels *kern, const uint64_t *restrict q, const uint64_t *restrict codes,
                       size_t n, size_t words, size_t k, uint32_t *restrict scratch, uint32_t *restrict out_d,
                       int64_t *restrict out_id);

#ifdef __cplusplus
}
#endif
#endif
