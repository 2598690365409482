#include "ck_pq.h"
#include "ck_internal.h"
#if CK_X86

CK_TARGET_AVX512 void ck_pq_table_l2_avx512(const float *restrict q, const float *restrict cent_t, size_t M,
                                            size_t ksub, size_t dsub, float *restrict table) {
    for (size_t m = 0; m < M; m++) {
        float *t = table + m * ksub;
        for (size_t j = 0; j < ksub; j += 16) {
            __mmask16 k = ksub - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (ksub - j)) - 1u);
            __m512 acc = _mm512_setzero_ps();
            for (size_t c = 0; c < dsub; c++) {
                __m512 diff = _mm512_sub_ps(_mm512_set1_ps(q[m * dsub + c]),
                                            _mm512_maskz_loadu_ps(k, cent_t + (m * dsub + c) * ksub + j));
                acc = _mm512_fmadd_ps(diff, diff, acc);
            }
            _mm512_mask_storeu_ps(t + j, k, acc);
        }
    }
}

CK_TARGET_AVX512 void ck_pq_table_ip_avx512(const float *restrict q, const float *restrict cent_t, size_t M,
                                            size_t ksub, size_t dsub, float *restrict table) {
    for (size_t m = 0; m < M; m++) {
        float *t = table + m * ksub;
        for (size_t j = 0; j < ksub; j += 16) {
            __mmask16 k = ksub - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (ksub - j)) - 1u);
            __m512 acc = _mm512_setzero_ps();
            for (size_t c = 0; c < dsub; c++)
                acc = _mm512_fmadd_ps(_mm512_set1_ps(q[m * dsub + c]),
                                      _mm512_maskz_loadu_ps(k, cent_t + (m * dsub + c) * ksub + j), acc);
            _mm512_mask_storeu_ps(t + j, k, acc);
        }
    }
}

/* 8-bit scan with 16-lane gathers: one vector's 16 codes index 16 table rows at once. */
CK_TARGET_AVX512 void ck_pq_scan8_avx512(const uint8_t *restrict codes, size_t n, size_t M, const float *restrict table,
                                         float *restrict out) {
    const __m512i rowoff = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(256));
    if (M % 16 != 0) { /* gathers need whole groups of 16 sub-quantizers */
        for (size_t i = 0; i < n; i++) {
            float s = 0;
            for (size_t m = 0; m < M; m++) s += table[m * 256 + codes[i * M + m]];
            out[i] = s;
        }
        return;
    }
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        for (size_t m = 0; m < M; m += 16) {
            __m512i idx0 =
                _mm512_add_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i * M + m))), rowoff);
            __m512i idx1 = _mm512_add_epi32(
                _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + (i + 1) * M + m))), rowoff);
            a0 = _mm512_add_ps(a0, _mm512_i32gather_ps(idx0, table + m * 256, 4));
            a1 = _mm512_add_ps(a1, _mm512_i32gather_ps(idx1, table + m * 256, 4));
        }
        out[i] = _mm512_reduce_add_ps(a0);
        out[i + 1] = _mm512_reduce_add_ps(a1);
    }
    for (; i < n; i++) {
        __m512 a = _mm512_setzero_ps();
        for (size_t m = 0; m < M; m += 16) {
            __m512i idx =
                _mm512_add_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i * M + m))), rowoff);
            a = _mm512_add_ps(a, _mm512_i32gather_ps(idx, table + m * 256, 4));
        }
        out[i] = _mm512_reduce_add_ps(a);
    }
}

/* 4-bit fast-scan, four sub-quantizers per 64-byte step (pshufb works per 128-bit lane, so the
 * four 16-entry tables sit side by side); an odd final pair uses the 256-bit step. */
CK_TARGET_AVX512 void ck_pq_scan4_avx512(const uint8_t *restrict packed, size_t nblocks, size_t m_pad,
                                         const uint8_t *restrict qtable, uint16_t *restrict out) {
    const __m512i low = _mm512_set1_epi8(0x0f), even = _mm512_set1_epi16(0x00ff);
    size_t pairs = m_pad / 2;
    for (size_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = packed + b * 16 * m_pad;
        __m512i lo_e = _mm512_setzero_si512(), lo_o = lo_e, hi_e = lo_e, hi_o = lo_e;
        size_t p = 0;
        for (; p + 2 <= pairs; p += 2) {
            __m512i lut = _mm512_loadu_si512(qtable + p * 32);
            __m512i c = _mm512_loadu_si512(blk + p * 32);
            __m512i rlo = _mm512_shuffle_epi8(lut, _mm512_and_si512(c, low));
            __m512i rhi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(c, 4), low));
            lo_e = _mm512_add_epi16(lo_e, _mm512_and_si512(rlo, even));
            lo_o = _mm512_add_epi16(lo_o, _mm512_srli_epi16(rlo, 8));
            hi_e = _mm512_add_epi16(hi_e, _mm512_and_si512(rhi, even));
            hi_o = _mm512_add_epi16(hi_o, _mm512_srli_epi16(rhi, 8));
        }
        if (p < pairs) { /* last pair: upper 256 bits stay zero */
            __m512i lut = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(qtable + p * 32)));
            __m512i c = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(blk + p * 32)));
            __m512i rlo = _mm512_shuffle_epi8(lut, _mm512_and_si512(c, low));
            __m512i rhi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(c, 4), low));
            lo_e = _mm512_add_epi16(lo_e, _mm512_and_si512(rlo, even));
            lo_o = _mm512_add_epi16(lo_o, _mm512_srli_epi16(rlo, 8));
            hi_e = _mm512_add_epi16(hi_e, _mm512_and_si512(rhi, even));
            hi_o = _mm512_add_epi16(hi_o, _mm512_srli_epi16(rhi, 8));
        }
        /* add the four 128-bit lanes */
        __m256i le2 = _mm256_add_epi16(_mm512_castsi512_si256(lo_e), _mm512_extracti64x4_epi64(lo_e, 1));
        __m256i lo2 = _mm256_add_epi16(_mm512_castsi512_si256(lo_o), _mm512_extracti64x4_epi64(lo_o, 1));
        __m256i he2 = _mm256_add_epi16(_mm512_castsi512_si256(hi_e), _mm512_extracti64x4_epi64(hi_e, 1));
        __m256i ho2 = _mm256_add_epi16(_mm512_castsi512_si256(hi_o), _mm512_extracti64x4_epi64(hi_o, 1));
        __m128i le = _mm_add_epi16(_mm256_castsi256_si128(le2), _mm256_extracti128_si256(le2, 1));
        __m128i lod = _mm_add_epi16(_mm256_castsi256_si128(lo2), _mm256_extracti128_si256(lo2, 1));
        __m128i he = _mm_add_epi16(_mm256_castsi256_si128(he2), _mm256_extracti128_si256(he2, 1));
        __m128i hod = _mm_add_epi16(_mm256_castsi256_si128(ho2), _mm256_extracti128_si256(ho2, 1));
        uint16_t *o = out + b * CK_PQ4_BLOCK;
        _mm_storeu_si128((__m128i *)o, _mm_unpacklo_epi16(le, lod));
        _mm_storeu_si128((__m128i *)(o + 8), _mm_unpackhi_epi16(le, lod));
        _mm_storeu_si128((__m128i *)(o + 16), _mm_unpacklo_epi16(he, hod));
        _mm_storeu_si128((__m128i *)(o + 24), _mm_unpackhi_epi16(he, hod));
    }
}

/* 32 sums per step with the unsigned 16-bit compare into a mask register. */
CK_TARGET_AVX512 size_t ck_pq_below4_avx512(const uint16_t *restrict sums, size_t n, uint16_t limit,
                                            uint32_t *restrict idx) {
    const __m512i lim = _mm512_set1_epi16((short)limit);
    size_t c = 0, i = 0;
    for (; i + 32 <= n; i += 32) {
        uint32_t m = (uint32_t)_mm512_cmple_epu16_mask(_mm512_loadu_si512(sums + i), lim);
        while (m) {
            idx[c++] = (uint32_t)(i + (size_t)__builtin_ctz(m));
            m &= m - 1;
        }
    }
    for (; i < n; i++)
        if (sums[i] <= limit) idx[c++] = (uint32_t)i;
    return c;
}

/* The table quantizer adds nothing at 512 bits (one small table per probed list): this level
 * uses the AVX2 body (pq_avx2.c). Xeon, Fashion-MNIST pq4 search, alternated 3x: process CPU
 * 731-787 ms with it, 781-814 ms (one outlier 1,340) with a 512-bit body. */
ck_status ck_pq_quantize4_avx2(const float *restrict table, size_t M, uint8_t *restrict qtable, float *scale,
                               float *bias);

const ck_pq_kernels ck_pq_avx512 = {ck_pq_table_l2_avx512, ck_pq_table_ip_avx512, ck_pq_scan8_avx512,
                                    ck_pq_scan4_avx512,    ck_pq_below4_avx512,   ck_pq_quantize4_avx2};
#endif
