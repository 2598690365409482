/* ISA-independent drivers of decode and prefill; the inner loops come from the level's tables. */
#include "ck_attention.h"
#include "ck_internal.h"

static ck_status check_params(const ck_attention_params *p) {
    if (!p || !(p->scale > 0) || !isfinite(p->scale)) return CK_ERR_ARGUMENT;
    if (p->score == CK_SCORE_POWER) {
        if (p->power < 2 || p->power % 2 || !(p->eps >= 0) || !(p->delta > 0) || !isfinite(p->eps) ||
            !isfinite(p->delta))
            return CK_ERR_ARGUMENT;
    } else if (p->score != CK_SCORE_SOFTMAX) {
        return CK_ERR_ARGUMENT;
    }
    return CK_OK;
}

/* factor that rescales a partial with max m_i to the common max M */
static inline float rescale(const ck_attention_params *p, float mi, float M) {
    if (p->score == CK_SCORE_SOFTMAX) return mi == -INFINITY ? 0.0f : expf(mi - M);
    float den = M + p->delta;
    return den > 0 ? ck_powi((mi + p->delta) / den, p->power) : 1.0f;
}

static inline float normaliser(const ck_attention_params *p, float l) {
    return p->score == CK_SCORE_SOFTMAX ? l : p->eps + l;
}

size_t ck_attention_decode_scratch_bytes(size_t T, size_t g, size_t d) {
    return (T * g + g * d) * sizeof(float) + g * ((d + CK_QK - 1) / CK_QK) * sizeof(ck_block_q8a) + 64;
}

ck_status ck_attention_decode_partial(const ck_attention_kernels *kern, const ck_attention_params *p, const float *q,
                                      size_t g, size_t d, ck_rtype kt, const void *k, size_t kstride, ck_rtype vt,
                                      const void *v, size_t vstride, size_t T, bool int8_scores, void *scratch,
                                      float *o, float *m, float *l) {
    ck_status st = check_params(p);
    if (st != CK_OK) return st;
    if (g == 0 || d == 0) return CK_ERR_ARGUMENT;
    if (int8_scores && (!ck_qmatmul_is_quantized(kt) || d % CK_QK)) return CK_ERR_ARGUMENT;
    if ((ck_qmatmul_is_quantized(kt) || ck_qmatmul_is_quantized(vt)) && d % CK_QK) return CK_ERR_ARGUMENT;
    memset(o, 0, g * d * sizeof(float));
    if (T == 0) {
        for (size_t i = 0; i < g; i++) {
            m[i] = p->score == CK_SCORE_SOFTMAX ? -INFINITY : 0;
            l[i] = 0;
        }
        return CK_OK;
    }
    float *s = scratch;    /* g x T scores, then weights */
    float *qs = s + g * T; /* g x d scaled queries */
    ck_block_q8a *qa = (ck_block_q8a *)(((uintptr_t)(qs + g * d) + 63) & ~(uintptr_t)63);
    for (size_t i = 0; i < g * d; i++) qs[i] = q[i] * p->scale;
    const ck_qmatmul_kernels *rk = kern->rows;
    if (int8_scores) {
        rk->quantize_q8a(qs, g * d, qa); /* blocks never straddle heads: d % 32 == 0 */
        rk->dot_rows_q8a(kt, k, T, d, kstride, qa, g, s, T);
    } else {
        rk->dot_rows_f32(kt, k, T, d, kstride, qs, g, s, T);
    }
    for (size_t i = 0; i < g; i++) {
        m[i] = kern->row_max(p, s + i * T, T);
        l[i] = kern->row_weights(p, s + i * T, T, m[i]);
    }
    rk->wsum_rows(vt, v, T, d, vstride, s, T, g, o);
    return CK_OK;
}

size_t ck_attention_kivi_scratch_bytes(size_t groups, size_t g, size_t d) {
    return (groups * CK_KIVI_G * g + 3 * g * d) * sizeof(float) + 64;
}

ck_status ck_attention_kivi_partial(const ck_attention_kernels *kern, const ck_attention_params *p, const float *q,
                                    size_t g, size_t d, int bits, const void *kgroups, size_t groups, ck_rtype vt,
                                    const void *v, size_t vstride, bool int8_scores, void *scratch, float *o, float *m,
                                    float *l) {
    ck_status st = check_params(p);
    if (st != CK_OK) return st;
    size_t gb = ck_kivi_group_bytes(bits, d);
    if (g == 0 || d == 0 || gb == 0 || d % CK_QK) return CK_ERR_ARGUMENT;
    memset(o, 0, g * d * sizeof(float));
    const size_t T = groups * CK_KIVI_G;
    if (T == 0) {
        for (size_t i = 0; i < g; i++) {
            m[i] = p->score == CK_SCORE_SOFTMAX ? -INFINITY : 0;
            l[i] = 0;
        }
        return CK_OK;
    }
    float *s = scratch;     /* g x T scores, then weights */
    float *qs = s + g * T;  /* g x d scaled queries */
    float *qp = qs + g * d; /* g x d floats, then (int8 scores) g x d bytes */
    for (size_t i = 0; i < g * d; i++) qs[i] = q[i] * p->scale;
    for (size_t b = 0; b < groups; b++) {
        const uint8_t *grp = (const uint8_t *)kgroups + b * gb;
        if (int8_scores)
            kern->kivi_scores_i8(bits, d, grp, qs, g, qp, s + b * CK_KIVI_G, T);
        else
            kern->kivi_scores(bits, d, grp, qs, g, qp, s + b * CK_KIVI_G, T);
    }
    for (size_t i = 0; i < g; i++) {
        m[i] = kern->row_max(p, s + i * T, T);
        l[i] = kern->row_weights(p, s + i * T, T, m[i]);
    }
    kern->rows->wsum_rows(vt, v, T, d, vstride, s, T, g, o);
    return CK_OK;
}

size_t ck_attention_mikv_scratch_bytes(size_t groups, size_t nh, size_t g, size_t d) {
    return (g * (groups * CK_KIVI_G + nh) + 3 * g * d) * sizeof(float) + 64;
}

ck_status ck_attention_mikv_partial(const ck_attention_kernels *kern, const ck_attention_params *p, const float *q,
                                    size_t g, size_t d, int bits, const void *kgroups, size_t groups, ck_rtype vt,
                                    const void *v, size_t vstride, ck_rtype ht, const void *hk, const void *hv,
                                    size_t hstride, const uint32_t *hpos, size_t nh, void *scratch, float *o, float *m,
                                    float *l) {
    ck_status st = check_params(p);
    if (st != CK_OK) return st;
    if (g == 0 || d == 0 || d % CK_QK) return CK_ERR_ARGUMENT;
    if (groups > 0 && ck_kivi_group_bytes(bits, d) == 0) return CK_ERR_ARGUMENT;
    if (ck_qmatmul_row_bytes(ht, d) == 0 || (nh > 0 && hstride < ck_qmatmul_row_bytes(ht, d))) return CK_ERR_ARGUMENT;
    const size_t T = groups * CK_KIVI_G;
    if (groups > 0)
        for (size_t i = 0; i < nh; i++)
            if (hpos[i] >= T) return CK_ERR_ARGUMENT;
    memset(o, 0, g * d * sizeof(float));
    const float m0 = p->score == CK_SCORE_SOFTMAX ? -INFINITY : 0;
    float *s = scratch;      /* g x T low-precision weights */
    float *sh = s + g * T;   /* g x nh high-precision weights */
    float *qs = sh + g * nh; /* g x d scaled queries */
    float *qp = qs + g * d;  /* 2 g x d floats of scratch for the KIVI scores */
    for (size_t i = 0; i < g * d; i++) qs[i] = q[i] * p->scale;
    const size_t gb = groups > 0 ? ck_kivi_group_bytes(bits, d) : 0;
    for (size_t b = 0; b < groups; b++)
        kern->kivi_scores(bits, d, (const uint8_t *)kgroups + b * gb, qs, g, qp, s + b * CK_KIVI_G, T);
    if (nh > 0) kern->rows->dot_rows_f32(ht, hk, nh, d, hstride, qs, g, sh, nh);
    /* positions with a high-precision copy drop out of the low-precision part. Their 2-bit score is
     * replaced by one that cannot be the maximum (far below any real one for softmax; 0 for
     * Power-Softmax, whose maximum |x| is part of the result), and the weight it still gets (exp
     * of a clamped argument, ~1e-38) is then taken out of l and zeroed, so the sum is exact */
    const float masked = p->score == CK_SCORE_SOFTMAX ? -1e30f : 0.0f;
    if (T > 0)
        for (size_t i = 0; i < nh; i++)
            for (size_t j = 0; j < g; j++) s[j * T + hpos[i]] = masked;
    for (size_t j = 0; j < g; j++) {
        float mj = m0;
        if (T > 0) mj = fmaxf(mj, kern->row_max(p, s + j * T, T));
        if (nh > 0) mj = fmaxf(mj, kern->row_max(p, sh + j * nh, nh));
        float lj = 0;
        if (T + nh > 0 && mj != -INFINITY) {
            if (T > 0) lj += kern->row_weights(p, s + j * T, T, mj);
            if (nh > 0) lj += kern->row_weights(p, sh + j * nh, nh, mj);
            if (T > 0)
                for (size_t i = 0; i < nh; i++) {
                    lj -= s[j * T + hpos[i]];
                    s[j * T + hpos[i]] = 0;
                }
        }
        m[j] = mj;
        l[j] = lj;
    }
    if (T > 0) kern->rows->wsum_rows(vt, v, T, d, vstride, s, T, g, o);
    if (nh > 0) kern->rows->wsum_rows(ht, hv, nh, d, hstride, sh, nh, g, o);
    return CK_OK;
}

/* Query i of `parts` partial states: the common maximum M (returned) and 1 / normaliser. */
static float merged_max(const ck_attention_params *p, size_t g, size_t parts, const float *m, const float *l, size_t i,
                        float *inv) {
    float M = p->score == CK_SCORE_SOFTMAX ? -INFINITY : 0;
    for (size_t j = 0; j < parts; j++) M = fmaxf(M, m[j * g + i]);
    float L = 0;
    for (size_t j = 0; j < parts; j++) L += rescale(p, m[j * g + i], M) * l[j * g + i];
    float den = normaliser(p, L);
    *inv = den > 0 ? 1.0f / den : 0.0f;
    return M;
}

void ck_attention_weight_factors(const ck_attention_params *p, size_t g, size_t parts, const float *m, const float *l,
                                 float *f) {
    for (size_t i = 0; i < g; i++) {
        float inv;
        float M = merged_max(p, g, parts, m, l, i, &inv);
        for (size_t j = 0; j < parts; j++) f[j * g + i] = rescale(p, m[j * g + i], M) * inv;
    }
}

void ck_attention_merge(const ck_attention_params *p, size_t g, size_t d, size_t parts, const float *o, const float *m,
                        const float *l, float *out) {
    for (size_t i = 0; i < g; i++) {
        float inv;
        float M = merged_max(p, g, parts, m, l, i, &inv);
        float *dst = out + i * d;
        memset(dst, 0, d * sizeof(float));
        for (size_t j = 0; j < parts; j++) {
            float f = rescale(p, m[j * g + i], M);
            const float *src = o + (j * g + i) * d;
            for (size_t c = 0; c < d; c++) dst[c] += f * src[c];
        }
        for (size_t c = 0; c < d; c++) dst[c] *= inv;
    }
}

size_t ck_attention_prefill_scratch_bytes(size_t g, size_t d) {
    size_t nq = CK_ATTN_BQ * g;
    return (nq * d /* queries */ + nq * CK_ATTN_BK /* scores */ + 2 * nq /* m, l */ + nq * d /* acc */) * sizeof(float);
}

ck_status ck_attention_prefill(const ck_attention_kernels *kern, const ck_attention_params *p, const float *q,
                               size_t ldq, size_t T, size_t row0, size_t row1, size_t g, size_t d, size_t pos0,
                               const float *k, size_t ldk, const float *v, size_t ldv, float *o, size_t ldo,
                               void *scratch) {
    ck_status st = check_params(p);
    if (st != CK_OK) return st;
    if (g == 0 || d == 0 || row1 > T || row0 > row1) return CK_ERR_ARGUMENT;
    const ck_qmatmul_kernels *rk = kern->rows;
    size_t nqmax = CK_ATTN_BQ * g;
    float *qb = scratch, *s = qb + nqmax * d, *mm = s + nqmax * CK_ATTN_BK, *ll = mm + nqmax, *acc = ll + nqmax;
    const float m0 = p->score == CK_SCORE_SOFTMAX ? -INFINITY : 0;
    for (size_t i0 = row0; i0 < row1; i0 += CK_ATTN_BQ) {
        size_t bq = ck_min_sz(CK_ATTN_BQ, row1 - i0), nq = bq * g;
        /* query r = (row i, head j) -> index (i - i0) * g + j, scaled once */
        for (size_t i = 0; i < bq; i++)
            for (size_t j = 0; j < g; j++)
                for (size_t c = 0; c < d; c++) qb[((i * g) + j) * d + c] = q[(i0 + i) * ldq + j * d + c] * p->scale;
        for (size_t r = 0; r < nq; r++) {
            mm[r] = m0;
            ll[r] = 0;
        }
        memset(acc, 0, nq * d * sizeof(float));
        size_t kend = pos0 + i0 + bq; /* keys needed by the last row of the block */
        for (size_t k0 = 0; k0 < kend; k0 += CK_ATTN_BK) {
            size_t bk = ck_min_sz(CK_ATTN_BK, kend - k0);
            rk->dot_rows_f32(CK_RT_F32, k + k0 * ldk, bk, d, ldk * sizeof(float), qb, nq, s, CK_ATTN_BK);
            for (size_t i = 0; i < bq; i++) {
                size_t last = pos0 + i0 + i; /* last key position this row may see */
                size_t valid = last < k0 ? 0 : ck_min_sz(bk, last - k0 + 1);
                for (size_t j = 0; j < g; j++) {
                    size_t r = i * g + j;
                    float *sr = s + r * CK_ATTN_BK;
                    if (valid == 0) {
                        memset(sr, 0, bk * sizeof(float));
                        continue;
                    }
                    float bm = kern->row_max(p, sr, valid);
                    float mnew = fmaxf(mm[r], bm);
                    float alpha = rescale(p, mm[r], mnew);
                    float sum = kern->row_weights(p, sr, valid, mnew);
                    for (size_t c = valid; c < bk; c++) sr[c] = 0;
                    ll[r] = ll[r] * alpha + sum;
                    mm[r] = mnew;
                    if (alpha != 1.0f) {
                        float *ar = acc + r * d;
                        for (size_t c = 0; c < d; c++) ar[c] *= alpha;
                    }
                }
            }
            rk->wsum_rows(CK_RT_F32, v + k0 * ldv, bk, d, ldv * sizeof(float), s, CK_ATTN_BK, nq, acc);
        }
        for (size_t i = 0; i < bq; i++)
            for (size_t j = 0; j < g; j++) {
                size_t r = i * g + j;
                float den = normaliser(p, ll[r]);
                float inv = den > 0 ? 1.0f / den : 0.0f;
                float *dst = o + (i0 + i) * ldo + j * d;
                for (size_t c = 0; c < d; c++) dst[c] = acc[r * d + c] * inv;
            }
    }
    return CK_OK;
}
