/* Polynomial-only Power-Softmax attention (see ck_attention.h): serial, an evaluation mode. */
#include "ck_attention.h"
#include "ck_internal.h"

ck_status ck_attention_power_poly_row(const ck_attention_poly_params *p, const float *q, size_t d, const float *k,
                                      size_t kstride, const float *v, size_t vstride, size_t len, float *scratch,
                                      float *out) {
    if (!p || !q || !k || !v || !scratch || !out || d == 0 || len == 0) return CK_ERR_ARGUMENT;
    if (!(p->scale > 0) || !isfinite(p->scale) || p->power < 2 || p->power % 2 || !(p->eps >= 0) || !isfinite(p->eps) ||
        !(p->bound > 0) || !isfinite(p->bound) || p->iterations < 1)
        return CK_ERR_ARGUMENT;
    const float c = p->scale / p->bound; /* public constant */
    /* The reciprocal's input spans many orders of magnitude (a can be 1e-12 when every score is
     * small next to B), so sums and the iteration run in double, as a CKKS-style evaluator with
     * ~40-bit precision would; f32 would round 1 - a to 1. */
    double sum = 0;
    for (size_t t = 0; t < len; t++) {
        const float *kt = k + t * kstride;
        float dot = 0;
        for (size_t j = 0; j < d; j++) dot += q[j] * kt[j];
        float x = dot * c, r = 1;
        for (int e = p->power; e; e >>= 1) {
            if (e & 1) r *= x;
            x *= x;
        } /* (x / B)^p by squaring */
        scratch[t] = r;
        sum += (double)r;
    }
    const double inv_n = 1.0 / ((double)p->eps + (double)len); /* public constant: depends only on the length */
    double a = ((double)p->eps + sum) * inv_n, y = 1, e = 1 - a;
    for (int i = 0; i < p->iterations; i++) {
        y *= 1 + e;
        e *= e;
    }
    const float r = (float)(y * inv_n);
    for (size_t j = 0; j < d; j++) out[j] = 0;
    for (size_t t = 0; t < len; t++) {
        const float w = scratch[t] * r, *vt = v + t * vstride;
        for (size_t j = 0; j < d; j++) out[j] += w * vt[j];
    }
    return CK_OK;
}
