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

const ck_attention_kernels ck_attention_avx512 = {&ck_qmatmul_avx512, ck_attention_row_max_avx512,
                                                  ck_attention_row_weights_avx512};
#endif
