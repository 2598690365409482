#include "ck_attention.h"
#include "ck_internal.h"
#include "ck_simd.h"
#if CK_X86

static inline __mmask16 tail_mask(size_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

CK_TARGET_AVX512 float ck_attention_row_max_avx512(const ck_attention_params *p, const float *s, size_t len) {
    bool soft = p->score == CK_SCORE_SOFTMAX;
    const __m512 init = _mm512_set1_ps(soft ? -INFINITY : 0.0f);
    __m512 m = init;
    for (size_t i = 0; i < len; i += 16) {
        __mmask16 k = tail_mask(len - i);
        __m512 x = _mm512_mask_loadu_ps(init, k, s + i);
        m = _mm512_max_ps(m, soft ? x : _mm512_abs_ps(x));
    }
    return _mm512_reduce_max_ps(m);
}

CK_TARGET_AVX512 float ck_attention_row_weights_avx512(const ck_attention_params *p, float *s, size_t len, float m) {
    __m512 acc = _mm512_setzero_ps();
    if (p->score == CK_SCORE_SOFTMAX) {
        __m512 mv = _mm512_set1_ps(m);
        for (size_t i = 0; i < len; i += 16) {
            __mmask16 k = tail_mask(len - i);
            __m512 w = _mm512_maskz_mov_ps(k, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), mv)));
            _mm512_mask_storeu_ps(s + i, k, w);
            acc = _mm512_add_ps(acc, w);
        }
    } else {
        __m512 iv = _mm512_set1_ps(1.0f / (m + p->delta));
        for (size_t i = 0; i < len; i += 16) {
            __mmask16 k = tail_mask(len - i);
            __m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), iv), r = _mm512_set1_ps(1.0f);
            for (int e = p->power; e; e >>= 1) {
                if (e & 1) r = _mm512_mul_ps(r, x);
                x = _mm512_mul_ps(x, x);
            }
            r = _mm512_maskz_mov_ps(k, r);
            _mm512_mask_storeu_ps(s + i, k, r);
            acc = _mm512_add_ps(acc, r);
        }
    }
    return _mm512_reduce_add_ps(acc);
}

/* Scaled queries qp = qs * scale (stored), base = qs . min (returned), max |qp| (in *amax). */
CK_TARGET_AVX512 static inline float kivi_query512(size_t d, const float *qj, const uint16_t *scale,
                                                   const uint16_t *mins, float *pj, float *amax) {
    __m512 bacc = _mm512_setzero_ps(), mx = _mm512_setzero_ps();
    for (size_t c = 0; c < d; c += 16) { /* d % 32 == 0 */
        __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scale + c)));
        __m512 mn = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mins + c)));
        __m512 x = _mm512_loadu_ps(qj + c);
        __m512 y = _mm512_mul_ps(x, sc);
        _mm512_storeu_ps(pj + c, y);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(y));
        bacc = _mm512_fmadd_ps(x, mn, bacc);
    }
    *amax = _mm512_reduce_max_ps(mx);
    return _mm512_reduce_add_ps(bacc);
}

/* KIVI key scores (layout in ck_attention.h): a 32-bit lane holds a channel quad of one token,
 * so a shift and a mask give one channel of 16 tokens as 16 floats; each unpacked channel is
 * shared by the group's queries (one FMA per 16 tokens per query). */
CK_TARGET_AVX512 void ck_attention_kivi_scores_avx512(int bits, size_t d, const void *group, const float *qs, size_t g,
                                                      float *qp, float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    float base[4];
    const __m512i m4 = _mm512_set1_epi32(15), m2 = _mm512_set1_epi32(3);
    const __m512i sh_lo = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i sh_hi = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6);
    for (size_t j0 = 0; j0 < g; j0 += 4) {
        size_t nj = ck_min_sz(4, g - j0);
        for (size_t j = 0; j < nj; j++) {
            float amax;
            base[j] = kivi_query512(d, qs + (j0 + j) * d, scale, mins, qp + (j0 + j) * d, &amax);
        }
        __m512 a[4][2];
        for (size_t j = 0; j < 4; j++) a[j][0] = a[j][1] = _mm512_setzero_ps();
        for (size_t c0 = 0; c0 < d; c0 += 4) {
            __m512i x;
            if (bits == 4)
                x = _mm512_loadu_si512(codes + c0 * 16);
            else
                x = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(codes + c0 * 8)));
            for (int k = 0; k < 4; k++) {
                __m512 lo, hi;
                if (bits == 4) {
                    lo = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(x, 8 * k), m4));
                    hi = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(x, 8 * k + 4), m4));
                } else {
                    __m512i off = _mm512_set1_epi32(8 * k);
                    lo = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(x, _mm512_add_epi32(sh_lo, off)), m2));
                    hi = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(x, _mm512_add_epi32(sh_hi, off)), m2));
                }
                for (size_t j = 0; j < nj; j++) {
                    __m512 qv = _mm512_set1_ps(qp[(j0 + j) * d + c0 + (size_t)k]);
                    a[j][0] = _mm512_fmadd_ps(qv, lo, a[j][0]);
                    a[j][1] = _mm512_fmadd_ps(qv, hi, a[j][1]);
                }
            }
        }
        for (size_t j = 0; j < nj; j++) {
            __m512 b = _mm512_set1_ps(base[j]);
            _mm512_storeu_ps(s + (j0 + j) * lds, _mm512_add_ps(a[j][0], b));
            _mm512_storeu_ps(s + (j0 + j) * lds + 16, _mm512_add_ps(a[j][1], b));
        }
    }
}

/* Integer KIVI scores: each query's qp is quantized to int8 (the serial kernel's operations),
 * then one vpdpbusd per channel quad and 16 tokens: unsigned codes (4 per lane) times the
 * query's 4 int8 values of the quad, summed into the token's int32 lane. */
CK_TARGET_AVX512 void ck_attention_kivi_scores_i8_avx512(int bits, size_t d, const void *group, const float *qs,
                                                         size_t g, void *scratch, float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    float *qp = scratch;
    int8_t *qi = (int8_t *)(qp + g * d);
    float base[4], step[4];
    const __m512i m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(3);
    const __m512i sh_lo = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i sh_hi = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6);
    for (size_t j0 = 0; j0 < g; j0 += 4) {
        size_t nj = ck_min_sz(4, g - j0);
        for (size_t j = 0; j < nj; j++) {
            float amax, *pj = qp + (j0 + j) * d;
            base[j] = kivi_query512(d, qs + (j0 + j) * d, scale, mins, pj, &amax);
            __m512 inv = _mm512_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
            for (size_t c = 0; c < d; c += 16)
                _mm_storeu_si128((__m128i *)(qi + (j0 + j) * d + c), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(
                                                                         _mm512_mul_ps(_mm512_loadu_ps(pj + c), inv))));
            step[j] = amax / 127.0f;
        }
        __m512i a[4][2];
        for (size_t j = 0; j < 4; j++) a[j][0] = a[j][1] = _mm512_setzero_si512();
        for (size_t c0 = 0; c0 < d; c0 += 4) {
            __m512i lo, hi;
            if (bits == 4) {
                __m512i x = _mm512_loadu_si512(codes + c0 * 16);
                lo = _mm512_and_si512(x, m4);
                hi = _mm512_and_si512(_mm512_srli_epi16(x, 4), m4);
            } else {
                __m512i x = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(codes + c0 * 8)));
                lo = _mm512_and_si512(_mm512_srlv_epi32(x, sh_lo), m2);
                hi = _mm512_and_si512(_mm512_srlv_epi32(x, sh_hi), m2);
            }
            for (size_t j = 0; j < nj; j++) {
                int32_t qq;
                memcpy(&qq, qi + (j0 + j) * d + c0, 4);
                __m512i qv = _mm512_set1_epi32(qq);
                a[j][0] = _mm512_dpbusd_epi32(a[j][0], lo, qv);
                a[j][1] = _mm512_dpbusd_epi32(a[j][1], hi, qv);
            }
        }
        for (size_t j = 0; j < nj; j++) {
            __m512 b = _mm512_set1_ps(base[j]), st = _mm512_set1_ps(step[j]);
            _mm512_storeu_ps(s + (j0 + j) * lds, _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[j][0]), st, b));
            _mm512_storeu_ps(s + (j0 + j) * lds + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[j][1]), st, b));
        }
    }
}

const ck_attention_kernels ck_attention_avx512 = {&ck_qmatmul_avx512, ck_attention_row_max_avx512,
                                                  ck_attention_row_weights_avx512, ck_attention_kivi_scores_avx512,
                                                  ck_attention_kivi_scores_i8_avx512};
#endif
