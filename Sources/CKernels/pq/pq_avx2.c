#include "ck_pq.h"
#include "ck_internal.h"
#if CK_X86

/* Tables: vectorised over 8 centroids at a time (the transposed codebook makes them contiguous). */
CK_TARGET_AVX2 void ck_pq_table_l2_avx2(const float *restrict q, const float *restrict cent_t, size_t M, size_t ksub,
                                        size_t dsub, float *restrict table) {
    for (size_t m = 0; m < M; m++) {
        float *t = table + m * ksub;
        for (size_t j = 0; j < ksub; j += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (size_t c = 0; c < dsub; c++) {
                __m256 diff =
                    _mm256_sub_ps(_mm256_set1_ps(q[m * dsub + c]), _mm256_loadu_ps(cent_t + (m * dsub + c) * ksub + j));
                acc = _mm256_fmadd_ps(diff, diff, acc);
            }
            _mm256_storeu_ps(t + j, acc);
        }
    }
}

CK_TARGET_AVX2 void ck_pq_table_ip_avx2(const float *restrict q, const float *restrict cent_t, size_t M, size_t ksub,
                                        size_t dsub, float *restrict table) {
    for (size_t m = 0; m < M; m++) {
        float *t = table + m * ksub;
        for (size_t j = 0; j < ksub; j += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (size_t c = 0; c < dsub; c++)
                acc = _mm256_fmadd_ps(_mm256_set1_ps(q[m * dsub + c]),
                                      _mm256_loadu_ps(cent_t + (m * dsub + c) * ksub + j), acc);
            _mm256_storeu_ps(t + j, acc);
        }
    }
}

/* 8-bit scan: four codes at a time so that independent load chains overlap (gathers were
 * slower than plain loads on the machines we measured). */
CK_TARGET_AVX2 void ck_pq_scan8_avx2(const uint8_t *restrict codes, size_t n, size_t M, const float *restrict table,
                                     float *restrict out) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint8_t *c0 = codes + i * M, *c1 = c0 + M, *c2 = c1 + M, *c3 = c2 + M;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t m = 0; m < M; m++) {
            const float *t = table + m * 256;
            s0 += t[c0[m]];
            s1 += t[c1[m]];
            s2 += t[c2[m]];
            s3 += t[c3[m]];
        }
        out[i] = s0;
        out[i + 1] = s1;
        out[i + 2] = s2;
        out[i + 3] = s3;
    }
    for (; i < n; i++) {
        float s = 0;
        for (size_t m = 0; m < M; m++) s += table[m * 256 + codes[i * M + m]];
        out[i] = s;
    }
}

/* 4-bit fast-scan: each 32-byte load holds a sub-quantizer pair for 32 vectors; the pair's two
 * 16-entry tables sit in one register and pshufb looks up 32 codes at once. Sums are kept in
 * uint16 as even/odd byte halves, then the two 128-bit lanes (two sub-quantizers) are added. */
CK_TARGET_AVX2 void ck_pq_scan4_avx2(const uint8_t *restrict packed, size_t nblocks, size_t m_pad,
                                     const uint8_t *restrict qtable, uint16_t *restrict out) {
    const __m256i low = _mm256_set1_epi8(0x0f), even = _mm256_set1_epi16(0x00ff);
    for (size_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = packed + b * 16 * m_pad;
        __m256i lo_e = _mm256_setzero_si256(), lo_o = lo_e, hi_e = lo_e, hi_o = lo_e;
        for (size_t p = 0; p < m_pad / 2; p++) {
            __m256i lut = _mm256_loadu_si256((const __m256i *)(qtable + p * 32));
            __m256i c = _mm256_loadu_si256((const __m256i *)(blk + p * 32));
            __m256i rlo = _mm256_shuffle_epi8(lut, _mm256_and_si256(c, low));
            __m256i rhi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(c, 4), low));
            lo_e = _mm256_add_epi16(lo_e, _mm256_and_si256(rlo, even));
            lo_o = _mm256_add_epi16(lo_o, _mm256_srli_epi16(rlo, 8));
            hi_e = _mm256_add_epi16(hi_e, _mm256_and_si256(rhi, even));
            hi_o = _mm256_add_epi16(hi_o, _mm256_srli_epi16(rhi, 8));
        }
        __m128i le = _mm_add_epi16(_mm256_castsi256_si128(lo_e), _mm256_extracti128_si256(lo_e, 1));
        __m128i lod = _mm_add_epi16(_mm256_castsi256_si128(lo_o), _mm256_extracti128_si256(lo_o, 1));
        __m128i he = _mm_add_epi16(_mm256_castsi256_si128(hi_e), _mm256_extracti128_si256(hi_e, 1));
        __m128i hod = _mm_add_epi16(_mm256_castsi256_si128(hi_o), _mm256_extracti128_si256(hi_o, 1));
        uint16_t *o = out + b * CK_PQ4_BLOCK;
        _mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(le, lod));
        _mm_storeu_si128((__m128i *)(o + 8), _mm_unpackhi_epi16(le, lod));
        _mm_storeu_si128((__m128i *)(o + 16), _mm_unpacklo_epi16(he, hod));
        _mm_storeu_si128((__m128i *)(o + 24), _mm_unpackhi_epi16(he, hod));
    }
}

/* 16 sums per step: s <= limit as min(s, limit) == s (AVX2 has no unsigned 16-bit compare);
 * the byte mask has two bits per lane, so set bits are walked two at a time. */
CK_TARGET_AVX2 size_t ck_pq_below4_avx2(const uint16_t *restrict sums, size_t n, uint16_t limit,
                                        uint32_t *restrict idx) {
    const __m256i lim = _mm256_set1_epi16((short)limit);
    size_t c = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i s = _mm256_loadu_si256((const __m256i *)(sums + i));
        uint32_t m = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_min_epu16(s, lim), s));
        while (m) {
            idx[c++] = (uint32_t)(i + (size_t)(__builtin_ctz(m) >> 1));
            m &= m - 1;
            m &= m - 1;
        }
    }
    for (; i < n; i++)
        if (sums[i] <= limit) idx[c++] = (uint32_t)i;
    return c;
}

/* ck_pq_quantize_table4 with two registers per sub-space: the minimum and maximum exactly as the
 * serial loop finds them (finite values: order does not matter), a non-finite entry caught by
 * x - x (NaN for infinities and NaN) before anything is written, and the bytes by the hardware
 * conversion, which rounds to nearest even like the serial code's 2^23 trick on [0, 255]. */
CK_TARGET_AVX2 ck_status ck_pq_quantize4_avx2(const float *restrict table, size_t M, uint8_t *restrict qtable,
                                              float *scale, float *bias) {
    if (M == 0 || M > 256) return CK_ERR_ARGUMENT;
    size_t m_pad = ck_pq_padded_m4(M);
    float maxrange = 0, b = 0, mins[256];
    __m256 bad = _mm256_setzero_ps();
    for (size_t m = 0; m < M; m++) {
        __m256 x0 = _mm256_loadu_ps(table + m * 16), x1 = _mm256_loadu_ps(table + m * 16 + 8);
        bad = _mm256_add_ps(bad, _mm256_add_ps(_mm256_sub_ps(x0, x0), _mm256_sub_ps(x1, x1)));
        __m256 mn = _mm256_min_ps(x0, x1), mx = _mm256_max_ps(x0, x1);
        mn = _mm256_min_ps(mn, _mm256_permute2f128_ps(mn, mn, 1));
        mx = _mm256_max_ps(mx, _mm256_permute2f128_ps(mx, mx, 1));
        mn = _mm256_min_ps(mn, _mm256_shuffle_ps(mn, mn, _MM_SHUFFLE(1, 0, 3, 2)));
        mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, _MM_SHUFFLE(1, 0, 3, 2)));
        mn = _mm256_min_ps(mn, _mm256_shuffle_ps(mn, mn, _MM_SHUFFLE(2, 3, 0, 1)));
        mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, _MM_SHUFFLE(2, 3, 0, 1)));
        float lo = _mm256_cvtss_f32(mn), r = _mm256_cvtss_f32(mx) - lo;
        mins[m] = lo;
        maxrange = r > maxrange ? r : maxrange;
        b += lo;
    }
    if (_mm256_movemask_ps(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q))) return CK_ERR_NAN;
    float a = maxrange > 0 ? 255.0f / maxrange : 1.0f;
    const __m256 av = _mm256_set1_ps(a);
    for (size_t m = 0; m < M; m++) {
        __m256 mn = _mm256_set1_ps(mins[m]);
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(table + m * 16), mn), av));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(table + m * 16 + 8), mn), av));
        __m128i w0 = _mm_packs_epi32(_mm256_castsi256_si128(i0), _mm256_extracti128_si256(i0, 1));
        __m128i w1 = _mm_packs_epi32(_mm256_castsi256_si128(i1), _mm256_extracti128_si256(i1, 1));
        _mm_storeu_si128((__m128i *)(qtable + m * 16), _mm_packus_epi16(w0, w1));
    }
    for (size_t m = M; m < m_pad; m++) memset(qtable + m * 16, 0, 16);
    *scale = a;
    *bias = b;
    return CK_OK;
}

const ck_pq_kernels ck_pq_avx2 = {ck_pq_table_l2_avx2, ck_pq_table_ip_avx2, ck_pq_scan8_avx2,
                                  ck_pq_scan4_avx2,    ck_pq_below4_avx2,   ck_pq_quantize4_avx2};
#endif
