#include "ck_hamming.h"
#include "ck_internal.h"
#if CK_X86

CK_TARGET_AVX512 static inline uint32_t ham_any(const uint64_t *a, const uint64_t *b, size_t words) {
    __m512i acc = _mm512_setzero_si512();
    size_t w = 0;
    for (; w + 8 <= words; w += 8) {
        __m512i x = _mm512_xor_si512(_mm512_loadu_si512(a + w), _mm512_loadu_si512(b + w));
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
    }
    if (w < words) {
        __mmask8 m = (__mmask8)((1u << (words - w)) - 1u);
        __m512i x = _mm512_xor_si512(_mm512_maskz_loadu_epi64(m, a + w), _mm512_maskz_loadu_epi64(m, b + w));
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(x));
    }
    return (uint32_t)_mm512_reduce_add_epi64(acc);
}

/* 256-bit codes, sixteen per step. vpopcntq and every cross-lane shuffle issue on one port
 * (p5 on Intel), so the lane sums are packed before they are moved: the four word counts of a
 * code are at most 64 each, so four popcount vectors share one as 16-bit fields (shifts and ORs
 * run on the other port), two shuffles and two adds finish each code's sum in one field, and
 * one word permutation puts the sixteen sums in code order. */
CK_TARGET_AVX512 static inline void dist_256x16(__m512i qv, const uint64_t *restrict c, uint32_t *restrict out) {
    __m512i p[8];
    for (int j = 0; j < 8; j++) p[j] = _mm512_popcnt_epi64(_mm512_xor_si512(qv, _mm512_loadu_si512(c + 8 * j)));
    /* p[j]: words 0-3 of code 2j in qwords 0-3, of code 2j + 1 in qwords 4-7; field f of v1 (v2)
     * holds p[f] (p[4 + f]) */
    __m512i v1 = _mm512_or_si512(_mm512_or_si512(p[0], _mm512_slli_epi64(p[1], 16)),
                                 _mm512_or_si512(_mm512_slli_epi64(p[2], 32), _mm512_slli_epi64(p[3], 48)));
    __m512i v2 = _mm512_or_si512(_mm512_or_si512(p[4], _mm512_slli_epi64(p[5], 16)),
                                 _mm512_or_si512(_mm512_slli_epi64(p[6], 32), _mm512_slli_epi64(p[7], 48)));
    /* 128-bit blocks: v1's words 0-1 + 2-3 of even codes, of odd codes, then the same for v2 */
    __m512i x = _mm512_add_epi64(_mm512_shuffle_i64x2(v1, v2, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_i64x2(v1, v2, _MM_SHUFFLE(3, 1, 3, 1)));
    x = _mm512_add_epi64(x, _mm512_shuffle_epi32(x, _MM_PERM_BADC)); /* qword 0 of each block: sums */
    /* block b's qword 0 is words 8b..8b+3; field f of block 0 is code 2f, block 1 code 2f + 1,
     * block 2 code 8 + 2f, block 3 code 9 + 2f */
    const __m512i order = _mm512_setr_epi32(0 | 8 << 16, 1 | 9 << 16, 2 | 10 << 16, 3 | 11 << 16, 16 | 24 << 16,
                                            17 | 25 << 16, 18 | 26 << 16, 19 | 27 << 16, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i w = _mm512_permutexvar_epi16(order, x);
    _mm512_storeu_si512(out, _mm512_cvtepu16_epi32(_mm512_castsi512_si256(w)));
}

/* Eight 256-bit codes: two per zmm; lane sums transposed so that one vector holds the eight
 * distances (the tail of dist_256). */
CK_TARGET_AVX512 static inline void dist_256x8(__m512i qv, const uint64_t *restrict c, uint32_t *restrict out) {
    /* after the shuffles the qword order is c0,c2,c1,c3,c4,c6,c5,c7 */
    const __m512i order = _mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7);
    __m512i a = _mm512_popcnt_epi64(_mm512_xor_si512(qv, _mm512_loadu_si512(c)));       /* c0 c1 */
    __m512i b = _mm512_popcnt_epi64(_mm512_xor_si512(qv, _mm512_loadu_si512(c + 8)));   /* c2 c3 */
    __m512i cc = _mm512_popcnt_epi64(_mm512_xor_si512(qv, _mm512_loadu_si512(c + 16))); /* c4 c5 */
    __m512i d = _mm512_popcnt_epi64(_mm512_xor_si512(qv, _mm512_loadu_si512(c + 24)));  /* c6 c7 */
    __m512i t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    __m512i t2 = _mm512_add_epi64(_mm512_unpacklo_epi64(cc, d), _mm512_unpackhi_epi64(cc, d));
    __m512i u = _mm512_add_epi64(_mm512_shuffle_i64x2(t1, t2, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_i64x2(t1, t2, _MM_SHUFFLE(3, 1, 3, 1)));
    u = _mm512_permutexvar_epi64(order, u);
    _mm256_storeu_si256((__m256i *)out, _mm512_cvtepi64_epi32(u));
}

CK_TARGET_AVX512 static void dist_256(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n,
                                      uint32_t *restrict out) {
    const __m512i qv = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)q));
    size_t i = 0;
    for (; i + 16 <= n; i += 16) dist_256x16(qv, codes + i * 4, out + i);
    for (; i + 8 <= n; i += 8) dist_256x8(qv, codes + i * 4, out + i);
    for (; i < n; i++) out[i] = ham_any(q, codes + i * 4, 4);
}

CK_TARGET_AVX512 void ck_hamming_dist_1xn_avx512(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n,
                                                 size_t words, uint32_t *restrict out) {
    if (words == 4) {
        dist_256(q, codes, n, out);
        return;
    }
    for (size_t i = 0; i < n; i++) out[i] = ham_any(q, codes + i * words, words);
}

#define MXN_TILE_BYTES (32 * 1024)
CK_TARGET_AVX512 void ck_hamming_dist_mxn_avx512(const uint64_t *restrict q, size_t m, const uint64_t *restrict codes,
                                                 size_t n, size_t words, uint32_t *restrict out) {
    size_t tile = MXN_TILE_BYTES / (words * 8);
    if (tile == 0) tile = 1;
    for (size_t j0 = 0; j0 < n; j0 += tile) {
        size_t len = ck_min_sz(tile, n - j0);
        for (size_t i = 0; i < m; i++)
            ck_hamming_dist_1xn_avx512(q + i * words, codes + j0 * words, len, words, out + i * n + j0);
    }
}

CK_TARGET_AVX512 void ck_hamming_weighted_1xn_avx512(const uint64_t *restrict q, const uint64_t *restrict codes,
                                                     size_t n, size_t words, size_t levels, const float *restrict w,
                                                     float *restrict out) {
    for (size_t i = 0; i < n; i++) {
        const uint64_t *c = codes + i * words * levels;
        float s = 0;
        for (size_t l = 0; l < levels; l++) s += w[l] * (float)ham_any(q + l * words, c + l * words, words);
        out[i] = s;
    }
}

const ck_hamming_kernels ck_hamming_avx512 = {
    ck_hamming_dist_1xn_avx512,
    ck_hamming_dist_mxn_avx512,
    ck_hamming_weighted_1xn_avx512,
};
#endif
