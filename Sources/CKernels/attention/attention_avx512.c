#include "ck_attention.h"
#include "ck_internal.h"
#if CK_X86

extern const ck_qmatmul_kernels ck_qmatmul_avx512;

/* exp(x), same method and error as the AVX2 version, 16 lanes; masked tails. */
CK_TARGET_AVX512 static inline __m512 exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3f), hi = _mm512_set1_ps(88.7f);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps((__mmask16)~under, y);
}

static inline __mmask16 tail_mask(size_t left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u); }

CK_TARGET_AVX512 float ck_attn_row_max_avx512(const ck_attn_params *p, const float *s, size_t len) {
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

CK_TARGET_AVX512 float ck_attn_row_weights_avx512(const ck_attn_params *p, float *s, size_t len, float m) {
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
            for (int e = p->power; e; e >>= 1) { if (e & 1) r = _mm512_mul_ps(r, x); x = _mm512_mul_ps(x, x); }
            r = _mm512_maskz_mov_ps(k, r);
            _mm512_mask_storeu_ps(s + i, k, r);
            acc = _mm512_add_ps(acc, r);
        }
    }
    return _mm512_reduce_add_ps(acc);
}

const ck_attention_kernels ck_attention_avx512 = { &ck_qmatmul_avx512, ck_attn_row_max_avx512, ck_attn_row_weights_avx512 };
#endif
