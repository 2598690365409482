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

/* KIVI key scores: one register holds one channel of 16 tokens, so each channel costs an
 * unpack (shared by every query of the group) and one FMA per 16 tokens per query. */
CK_TARGET_AVX512 void ck_attention_kivi_scores_avx512(int bits, size_t d, const void *group, const float *qs, size_t g,
                                                      float *qp, float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    const size_t cb = (size_t)CK_KIVI_G * (size_t)bits / 8;
    float base[4];
    const __m512i m4 = _mm512_set1_epi32(15), m2 = _mm512_set1_epi32(3);
    const __m512i sh_lo = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    const __m512i sh_hi = _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6);
    for (size_t j0 = 0; j0 < g; j0 += 4) {
        size_t nj = ck_min_sz(4, g - j0);
        for (size_t j = 0; j < nj; j++) {
            const float *qj = qs + (j0 + j) * d;
            float *pj = qp + (j0 + j) * d;
            __m512 bacc = _mm512_setzero_ps();
            for (size_t c = 0; c < d; c += 16) { /* d % 32 == 0 */
                __m512 sc = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scale + c)));
                __m512 mn = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(mins + c)));
                __m512 x = _mm512_loadu_ps(qj + c);
                _mm512_storeu_ps(pj + c, _mm512_mul_ps(x, sc));
                bacc = _mm512_fmadd_ps(x, mn, bacc);
            }
            base[j] = _mm512_reduce_add_ps(bacc);
        }
        __m512 a[4][2];
        for (size_t j = 0; j < 4; j++) a[j][0] = a[j][1] = _mm512_setzero_ps();
        for (size_t c = 0; c < d; c++) {
            __m512 lo, hi;
            if (bits == 4) {
                __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + c * cb)));
                lo = _mm512_cvtepi32_ps(_mm512_and_si512(w, m4));
                hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(w, 4));
            } else {
                __m128i x = _mm_loadl_epi64((const __m128i *)(codes + c * cb));
                __m512i w = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(x, x));
                lo = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(w, sh_lo), m2));
                hi = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(w, sh_hi), m2));
            }
            for (size_t j = 0; j < nj; j++) {
                __m512 qv = _mm512_set1_ps(qp[(j0 + j) * d + c]);
                a[j][0] = _mm512_fmadd_ps(qv, lo, a[j][0]);
                a[j][1] = _mm512_fmadd_ps(qv, hi, a[j][1]);
            }
        }
        for (size_t j = 0; j < nj; j++) {
            __m512 b = _mm512_set1_ps(base[j]);
            _mm512_storeu_ps(s + (j0 + j) * lds, _mm512_add_ps(a[j][0], b));
            _mm512_storeu_ps(s + (j0 + j) * lds + 16, _mm512_add_ps(a[j][1], b));
        }
    }
}

const ck_attention_kernels ck_attention_avx512 = {&ck_qmatmul_avx512, ck_attention_row_max_avx512,
                                                  ck_attention_row_weights_avx512, ck_attention_kivi_scores_avx512};
#endif
