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

/* KIVI key scores: a register holds one channel of 8 tokens; two queries per pass keep the
 * 8 accumulators and 4 unpacked code vectors in the 16 registers. */
CK_TARGET_AVX2 void ck_attention_kivi_scores_avx2(int bits, size_t d, const void *group, const float *qs, size_t g,
                                                  float *qp, float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    const size_t cb = (size_t)CK_KIVI_G * (size_t)bits / 8;
    const __m256i m4 = _mm256_set1_epi32(15), m2 = _mm256_set1_epi32(3);
    for (size_t j = 0; j < g; j++) {
        const float *qj = qs + j * d;
        float *pj = qp + j * d;
        __m256 bacc = _mm256_setzero_ps();
        for (size_t c = 0; c < d; c += 8) {
            __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(scale + c)));
            __m256 mn = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mins + c)));
            __m256 x = _mm256_loadu_ps(qj + c);
            _mm256_storeu_ps(pj + c, _mm256_mul_ps(x, sc));
            bacc = _mm256_fmadd_ps(x, mn, bacc);
        }
        float base = ck_hsum256(bacc);
        for (size_t t = 0; t < CK_KIVI_G; t++) s[j * lds + t] = base;
    }
    for (size_t j0 = 0; j0 < g; j0 += 2) {
        size_t nj = ck_min_sz(2, g - j0);
        __m256 a[2][4];
        for (size_t j = 0; j < 2; j++)
            for (int k = 0; k < 4; k++) a[j][k] = _mm256_setzero_ps();
        for (size_t c = 0; c < d; c++) {
            __m256 u[4];
            if (bits == 4) {
                __m128i x = _mm_loadu_si128((const __m128i *)(codes + c * cb));
                __m256i w0 = _mm256_cvtepu8_epi32(x), w1 = _mm256_cvtepu8_epi32(_mm_srli_si128(x, 8));
                u[0] = _mm256_cvtepi32_ps(_mm256_and_si256(w0, m4)); /* tokens 0-7 */
                u[1] = _mm256_cvtepi32_ps(_mm256_and_si256(w1, m4)); /* 8-15 */
                u[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(w0, 4)); /* 16-23 */
                u[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(w1, 4)); /* 24-31 */
            } else {
                __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + c * cb)));
                u[0] = _mm256_cvtepi32_ps(_mm256_and_si256(w, m2));
                u[1] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(w, 2), m2));
                u[2] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(w, 4), m2));
                u[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 6));
            }
            for (size_t j = 0; j < nj; j++) {
                __m256 qv = _mm256_set1_ps(qp[(j0 + j) * d + c]);
                for (int k = 0; k < 4; k++) a[j][k] = _mm256_fmadd_ps(qv, u[k], a[j][k]);
            }
        }
        for (size_t j = 0; j < nj; j++) {
            float *sj = s + (j0 + j) * lds;
            for (int k = 0; k < 4; k++)
                _mm256_storeu_ps(sj + 8 * k, _mm256_add_ps(_mm256_loadu_ps(sj + 8 * k), a[j][k]));
        }
    }
}

const ck_attention_kernels ck_attention_avx2 = {&ck_qmatmul_avx2, ck_attention_row_max_avx2,
                                                ck_attention_row_weights_avx2, ck_attention_kivi_scores_avx2};
#endif
