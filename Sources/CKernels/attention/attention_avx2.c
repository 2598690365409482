#include "ck_attention.h"
#include "ck_internal.h"
#include "ck_simd.h"
#if CK_X86

CK_TARGET_AVX2 static inline float hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

CK_TARGET_AVX2 float ck_attention_row_max_avx2(const ck_attention_params *p, const float *s, size_t len) {
    bool soft = p->score == CK_SCORE_SOFTMAX;
    __m256 m = _mm256_set1_ps(soft ? -INFINITY : 0.0f);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        __m256 x = _mm256_loadu_ps(s + i);
        m = _mm256_max_ps(m, soft ? x : _mm256_and_ps(x, absmask));
    }
    float r = hmax256(m);
    for (; i < len; i++) r = fmaxf(r, soft ? s[i] : fabsf(s[i]));
    return r;
}

CK_TARGET_AVX2 float ck_attention_row_weights_avx2(const ck_attention_params *p, float *s, size_t len, float m) {
    __m256 acc = _mm256_setzero_ps();
    size_t i = 0;
    float tail = 0;
    if (p->score == CK_SCORE_SOFTMAX) {
        __m256 mv = _mm256_set1_ps(m);
        for (; i + 8 <= len; i += 8) {
            __m256 w = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
            _mm256_storeu_ps(s + i, w);
            acc = _mm256_add_ps(acc, w);
        }
        for (; i < len; i++) {
            s[i] = expf(s[i] - m);
            tail += s[i];
        }
    } else {
        float inv = 1.0f / (m + p->delta);
        __m256 iv = _mm256_set1_ps(inv);
        for (; i + 8 <= len; i += 8) {
            __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + i), iv), r = _mm256_set1_ps(1.0f);
            for (int e = p->power; e; e >>= 1) {
                if (e & 1) r = _mm256_mul_ps(r, x);
                x = _mm256_mul_ps(x, x);
            }
            _mm256_storeu_ps(s + i, r);
            acc = _mm256_add_ps(acc, r);
        }
        for (; i < len; i++) {
            float x = s[i] * inv, r = 1;
            for (int e = p->power; e; e >>= 1) {
                if (e & 1) r *= x;
                x *= x;
            }
            s[i] = r;
            tail += r;
        }
    }
    return ck_hsum256(acc) + tail;
}

const ck_attention_kernels ck_attention_avx2 = {&ck_qmatmul_avx2, ck_attention_row_max_avx2,
                                                ck_attention_row_weights_avx2};
#endif
