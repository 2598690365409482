#include "ck_attention.h"
#include "ck_internal.h"
#include "ck_simd.h"
#if CK_X86

CK_TARGET_AVX2 float ck_attention_row_max_avx2(const ck_attention_params *p, const float *s, size_t len) {
    bool soft = p->score == CK_SCORE_SOFTMAX;
    __m256 m = _mm256_set1_ps(soft ? -INFINITY : 0.0f);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        __m256 x = _mm256_loadu_ps(s + i);
        m = _mm256_max_ps(m, soft ? x : _mm256_and_ps(x, absmask));
    }
    float r = ck_hmax256(m);
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

/* Scaled queries qp = qs * scale (stored), base = qs . min (returned), max |qp| (in *amax). */
CK_TARGET_AVX2 static inline float kivi_query256(size_t d, const float *qj, const uint16_t *scale, const uint16_t *mins,
                                                 float *pj, float *amax) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 bacc = _mm256_setzero_ps(), mx = _mm256_setzero_ps();
    for (size_t c = 0; c < d; c += 8) {
        __m256 sc = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(scale + c)));
        __m256 mn = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(mins + c)));
        __m256 x = _mm256_loadu_ps(qj + c);
        __m256 y = _mm256_mul_ps(x, sc);
        _mm256_storeu_ps(pj + c, y);
        mx = _mm256_max_ps(mx, _mm256_and_ps(y, absmask));
        bacc = _mm256_fmadd_ps(x, mn, bacc);
    }
    *amax = ck_hmax256(mx);
    return ck_hsum256(bacc);
}

/* Codes of channel k (0-3) of a channel quad as 4 x 8 floats (tokens 0-7, 8-15, 16-23, 24-31).
 * 4-bit: x0, x1 hold tokens 0-7 and 8-15 (high nibbles: +16); 2-bit: x0 holds tokens 0-7 at
 * bits 0, 2, 4, 6 of each byte (+0, +8, +16, +24). */
CK_TARGET_AVX2 static inline void kivi_channel256(int bits, __m256i x0, __m256i x1, int k, __m256 u[4]) {
    if (bits == 4) {
        const __m256i m4 = _mm256_set1_epi32(15);
        u[0] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(x0, 8 * k), m4));
        u[1] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(x1, 8 * k), m4));
        u[2] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(x0, 8 * k + 4), m4));
        u[3] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(x1, 8 * k + 4), m4));
    } else {
        const __m256i m2 = _mm256_set1_epi32(3);
        __m256i y = _mm256_srli_epi32(x0, 8 * k);
        u[0] = _mm256_cvtepi32_ps(_mm256_and_si256(y, m2));
        u[1] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(y, 2), m2));
        u[2] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(y, 4), m2));
        u[3] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(y, 6), m2));
    }
}

/* KIVI key scores (layout in ck_attention.h): a register holds one channel of 8 tokens after a
 * shift and a mask; two queries per pass keep the 8 accumulators and 4 code vectors in the 16
 * registers. */
CK_TARGET_AVX2 void ck_attention_kivi_scores_avx2(int bits, size_t d, const void *group, const float *qs, size_t g,
                                                  float *qp, float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    for (size_t j = 0; j < g; j++) {
        float amax, base = kivi_query256(d, qs + j * d, scale, mins, qp + j * d, &amax);
        for (size_t t = 0; t < CK_KIVI_G; t++) s[j * lds + t] = base;
    }
    for (size_t j0 = 0; j0 < g; j0 += 2) {
        size_t nj = ck_min_sz(2, g - j0);
        __m256 a[2][4];
        for (size_t j = 0; j < 2; j++)
            for (int k = 0; k < 4; k++) a[j][k] = _mm256_setzero_ps();
        for (size_t c0 = 0; c0 < d; c0 += 4) {
            const uint8_t *cq = codes + c0 * 4 * (size_t)bits;
            __m256i x0 = _mm256_loadu_si256((const __m256i *)cq);
            __m256i x1 = bits == 4 ? _mm256_loadu_si256((const __m256i *)(cq + 32)) : x0;
            for (int k = 0; k < 4; k++) {
                __m256 u[4];
                kivi_channel256(bits, x0, x1, k, u);
                for (size_t j = 0; j < nj; j++) {
                    __m256 qv = _mm256_set1_ps(qp[(j0 + j) * d + c0 + (size_t)k]);
                    for (int m = 0; m < 4; m++) a[j][m] = _mm256_fmadd_ps(qv, u[m], a[j][m]);
                }
            }
        }
        for (size_t j = 0; j < nj; j++) {
            float *sj = s + (j0 + j) * lds;
            for (int m = 0; m < 4; m++)
                _mm256_storeu_ps(sj + 8 * m, _mm256_add_ps(_mm256_loadu_ps(sj + 8 * m), a[j][m]));
        }
    }
}

/* Integer KIVI scores: the int8 query as in the serial kernel, then per channel quad and 8
 * tokens vpmaddubsw (codes times the query's 4 int8 values, pairs summed to int16, at most
 * 2 * 15 * 128) and vpmaddwd by ones (the quad's int32 sum per token lane). */
CK_TARGET_AVX2 void ck_attention_kivi_scores_i8_avx2(int bits, size_t d, const void *group, const float *qs, size_t g,
                                                     void *scratch, float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    float *qp = scratch;
    int8_t *qi = (int8_t *)(qp + g * d);
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i mask = _mm256_set1_epi8(bits == 4 ? 15 : 3);
    for (size_t j = 0; j < g; j++) {
        float amax, *pj = qp + j * d;
        float base = kivi_query256(d, qs + j * d, scale, mins, pj, &amax);
        __m256 inv = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
        for (size_t c = 0; c < d; c += 8) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(pj + c), inv));
            __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storel_epi64((__m128i *)(qi + j * d + c), _mm_packs_epi16(w, w));
        }
        float step = amax / 127.0f;
        __m256i a[4];
        for (int m = 0; m < 4; m++) a[m] = _mm256_setzero_si256();
        for (size_t c0 = 0; c0 < d; c0 += 4) {
            const uint8_t *cq = codes + c0 * 4 * (size_t)bits;
            __m256i u[4];
            __m256i x0 = _mm256_loadu_si256((const __m256i *)cq);
            if (bits == 4) {
                __m256i x1 = _mm256_loadu_si256((const __m256i *)(cq + 32));
                u[0] = _mm256_and_si256(x0, mask);
                u[1] = _mm256_and_si256(x1, mask);
                u[2] = _mm256_and_si256(_mm256_srli_epi16(x0, 4), mask);
                u[3] = _mm256_and_si256(_mm256_srli_epi16(x1, 4), mask);
            } else {
                for (int m = 0; m < 4; m++) u[m] = _mm256_and_si256(_mm256_srli_epi16(x0, 2 * m), mask);
            }
            int32_t qq;
            memcpy(&qq, qi + j * d + c0, 4);
            __m256i qv = _mm256_set1_epi32(qq);
            for (int m = 0; m < 4; m++)
                a[m] = _mm256_add_epi32(a[m], _mm256_madd_epi16(_mm256_maddubs_epi16(u[m], qv), ones));
        }
        __m256 b = _mm256_set1_ps(base), st = _mm256_set1_ps(step);
        for (int m = 0; m < 4; m++)
            _mm256_storeu_ps(s + j * lds + 8 * m, _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[m]), st, b));
    }
}

const ck_attention_kernels ck_attention_avx2 = {&ck_qmatmul_avx2, ck_attention_row_max_avx2,
                                                ck_attention_row_weights_avx2, ck_attention_kivi_scores_avx2,
                                                ck_attention_kivi_scores_i8_avx2};
#endif
