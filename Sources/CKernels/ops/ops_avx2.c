#include "ck_ops.h"
#include "ck_internal.h"
#include "ck_simd.h"
#if CK_X86

/* erf(z) for z >= 0 by Abramowitz & Stegun 7.1.26; odd extension by sign. */
CK_TARGET_AVX2 static inline __m256 erf256(__m256 z) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 s = _mm256_and_ps(z, sign), a = _mm256_andnot_ps(sign, z);
    __m256 t =
        _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), a, _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    p = _mm256_mul_ps(p, t);
    __m256 e = exp256(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a));
    __m256 y = _mm256_fnmadd_ps(p, e, _mm256_set1_ps(1.0f));
    return _mm256_or_ps(y, s);
}

CK_TARGET_AVX2 void ck_ops_gelu_erf_avx2(float *x, size_t n) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), rs2 = _mm256_set1_ps(0.70710678118654752f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(x + i,
                         _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, erf256(_mm256_mul_ps(v, rs2)))));
    }
    for (; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

CK_TARGET_AVX2 void ck_ops_layernorm_avx2(float *x, size_t rows, size_t d, const float *g, const float *b, float eps) {
    for (size_t r = 0; r < rows; r++) {
        float *v = x + r * d;
        __m256 acc = _mm256_setzero_ps();
        size_t j = 0;
        float tail = 0;
        for (; j + 8 <= d; j += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(v + j));
        for (; j < d; j++) tail += v[j];
        float mean = (ck_hsum256(acc) + tail) / (float)d;
        __m256 mv = _mm256_set1_ps(mean);
        acc = _mm256_setzero_ps();
        tail = 0;
        for (j = 0; j + 8 <= d; j += 8) {
            __m256 z = _mm256_sub_ps(_mm256_loadu_ps(v + j), mv);
            acc = _mm256_fmadd_ps(z, z, acc);
        }
        for (; j < d; j++) {
            float z = v[j] - mean;
            tail += z * z;
        }
        float inv = 1.0f / sqrtf((ck_hsum256(acc) + tail) / (float)d + eps);
        __m256 iv = _mm256_set1_ps(inv);
        for (j = 0; j + 8 <= d; j += 8) {
            __m256 z = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(v + j), mv), iv);
            _mm256_storeu_ps(v + j, _mm256_fmadd_ps(z, _mm256_loadu_ps(g + j), _mm256_loadu_ps(b + j)));
        }
        for (; j < d; j++) v[j] = (v[j] - mean) * inv * g[j] + b[j];
    }
}

CK_TARGET_AVX2 void ck_ops_rmsnorm_avx2(const float *x, float *y, size_t rows, size_t d, const float *g, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *v = x + r * d;
        float *o = y + r * d;
        __m256 acc = _mm256_setzero_ps();
        size_t j = 0;
        float tail = 0;
        for (; j + 8 <= d; j += 8) {
            __m256 a = _mm256_loadu_ps(v + j);
            acc = _mm256_fmadd_ps(a, a, acc);
        }
        for (; j < d; j++) tail += v[j] * v[j];
        float inv = 1.0f / sqrtf((ck_hsum256(acc) + tail) / (float)d + eps);
        __m256 iv = _mm256_set1_ps(inv);
        for (j = 0; j + 8 <= d; j += 8)
            _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(v + j), iv), _mm256_loadu_ps(g + j)));
        for (; j < d; j++) o[j] = v[j] * inv * g[j];
    }
}

CK_TARGET_AVX2 void ck_ops_rope_avx2(float *x, size_t rows, size_t heads, size_t head_dim, size_t row_stride,
                                     const float *cos, const float *sin) {
    size_t half = head_dim / 2;
    for (size_t r = 0; r < rows; r++) {
        const float *cr = cos + r * half, *sr = sin + r * half;
        size_t i = 0;
        for (; i + 4 <= half; i += 4) {
            /* 4 pairs per vector: angles duplicated to (c0 c0 c1 c1 ...), pairs swapped for the cross term */
            __m128 c4 = _mm_loadu_ps(cr + i), s4 = _mm_loadu_ps(sr + i);
            __m256 cc = _mm256_set_m128(_mm_unpackhi_ps(c4, c4), _mm_unpacklo_ps(c4, c4));
            __m256 ss = _mm256_set_m128(_mm_unpackhi_ps(s4, s4), _mm_unpacklo_ps(s4, s4));
            for (size_t h = 0; h < heads; h++) {
                float *p = x + r * row_stride + h * head_dim + 2 * i;
                __m256 v = _mm256_loadu_ps(p);
                __m256 sw = _mm256_mul_ps(_mm256_permute_ps(v, 0xB1), ss);
                /* even lanes x0 c - x1 s, odd lanes x1 c + x0 s */
                _mm256_storeu_ps(p, _mm256_fmaddsub_ps(v, cc, sw));
            }
        }
        for (; i < half; i++) {
            float c = cr[i], s = sr[i];
            for (size_t h = 0; h < heads; h++) {
                float *p = x + r * row_stride + h * head_dim + 2 * i;
                float x0 = p[0], x1 = p[1];
                p[0] = x0 * c - x1 * s;
                p[1] = x0 * s + x1 * c;
            }
        }
    }
}

CK_TARGET_AVX2 void ck_ops_silu_mul_avx2(float *g, const float *u, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(g + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), a));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(a, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

const ck_ops_kernels ck_ops_avx2 = {ck_ops_gelu_erf_avx2, ck_ops_layernorm_avx2, ck_ops_rmsnorm_avx2, ck_ops_rope_avx2,
                                    ck_ops_silu_mul_avx2};

/* The AVX-512 level reuses these bodies (the work is a small share of a layer). */
const ck_ops_kernels ck_ops_avx512 = {ck_ops_gelu_erf_avx2, ck_ops_layernorm_avx2, ck_ops_rmsnorm_avx2,
                                      ck_ops_rope_avx2, ck_ops_silu_mul_avx2};
#endif
