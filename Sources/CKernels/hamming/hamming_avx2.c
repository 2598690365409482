#include "ck_hamming.h"
#include "ck_internal.h"
#if CK_X86

/* Byte-wise popcount by nibble lookup (Mula), summed into four 64-bit lanes by psadbw. */
CK_TARGET_AVX2 static inline __m256i popcnt_sad(__m256i x) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256i lo = _mm256_and_si256(x, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
    __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
    return _mm256_sad_epu8(cnt, _mm256_setzero_si256());
}

CK_TARGET_AVX2 static inline uint32_t ham_popcnt(const uint64_t *a, const uint64_t *b, size_t words) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t w = 0;
    for (; w + 4 <= words; w += 4) {
        s0 += (uint64_t)_mm_popcnt_u64(a[w] ^ b[w]);
        s1 += (uint64_t)_mm_popcnt_u64(a[w + 1] ^ b[w + 1]);
        s2 += (uint64_t)_mm_popcnt_u64(a[w + 2] ^ b[w + 2]);
        s3 += (uint64_t)_mm_popcnt_u64(a[w + 3] ^ b[w + 3]);
    }
    for (; w < words; w++) s0 += (uint64_t)_mm_popcnt_u64(a[w] ^ b[w]);
    return (uint32_t)(s0 + s1 + s2 + s3);
}

/* 256-bit codes: four codes per step; the four 4-lane sums are transposed into one vector. */
CK_TARGET_AVX2 static void dist_256(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n,
                                    uint32_t *restrict out) {
    const __m256i qv = _mm256_loadu_si256((const __m256i *)q);
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256i *c = (const __m256i *)(codes + i * 4);
        __m256i a = popcnt_sad(_mm256_xor_si256(qv, _mm256_loadu_si256(c)));
        __m256i b = popcnt_sad(_mm256_xor_si256(qv, _mm256_loadu_si256(c + 1)));
        __m256i cc = popcnt_sad(_mm256_xor_si256(qv, _mm256_loadu_si256(c + 2)));
        __m256i d = popcnt_sad(_mm256_xor_si256(qv, _mm256_loadu_si256(c + 3)));
        /* per 128-bit lane: [a0+a1, b0+b1] / [a2+a3, b2+b3] */
        __m256i t0 = _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
        __m256i t1 = _mm256_add_epi64(_mm256_unpacklo_epi64(cc, d), _mm256_unpackhi_epi64(cc, d));
        __m256i u = _mm256_add_epi64(_mm256_permute2x128_si256(t0, t1, 0x20), _mm256_permute2x128_si256(t0, t1, 0x31));
        __m256i packed = _mm256_permutevar8x32_epi32(u, pick);
        _mm_storeu_si128((__m128i *)(out + i), _mm256_castsi256_si128(packed));
    }
    for (; i < n; i++) out[i] = ham_popcnt(q, codes + i * 4, 4);
}

CK_TARGET_AVX2 void ck_hamming_dist_1xn_avx2(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n,
                                             size_t words, uint32_t *restrict out) {
    if (words == 4) {
        dist_256(q, codes, n, out);
        return;
    }
    for (size_t i = 0; i < n; i++) out[i] = ham_popcnt(q, codes + i * words, words);
}

/* Tiles of codes stay in L1/L2 while every query passes over them. */
#define MXN_TILE_BYTES (32 * 1024)
CK_TARGET_AVX2 void ck_hamming_dist_mxn_avx2(const uint64_t *restrict q, size_t m, const uint64_t *restrict codes,
                                             size_t n, size_t words, uint32_t *restrict out) {
    size_t tile = MXN_TILE_BYTES / (words * 8);
    if (tile == 0) tile = 1;
    for (size_t j0 = 0; j0 < n; j0 += tile) {
        size_t len = ck_min_sz(tile, n - j0);
        for (size_t i = 0; i < m; i++)
            ck_hamming_dist_1xn_avx2(q + i * words, codes + j0 * words, len, words, out + i * n + j0);
    }
}

CK_TARGET_AVX2 void ck_hamming_weighted_1xn_avx2(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n,
                                                 size_t words, size_t levels, const float *restrict w,
                                                 float *restrict out) {
    for (size_t i = 0; i < n; i++) {
        const uint64_t *c = codes + i * words * levels;
        float s = 0;
        for (size_t l = 0; l < levels; l++) s += w[l] * (float)ham_popcnt(q + l * words, c + l * words, words);
        out[i] = s;
    }
}

const ck_hamming_kernels ck_hamming_avx2 = {
    ck_hamming_dist_1xn_avx2,
    ck_hamming_dist_mxn_avx2,
    ck_hamming_weighted_1xn_avx2,
};
#endif
