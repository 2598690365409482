#include "ck_attention.h"
#include "ck_internal.h"

float ck_attention_row_max_serial(const ck_attention_params *p, const float *s, size_t len) {
    float m = p->score == CK_SCORE_SOFTMAX ? -INFINITY : 0;
    if (p->score == CK_SCORE_SOFTMAX)
        for (size_t i = 0; i < len; i++) m = fmaxf(m, s[i]);
    else
        for (size_t i = 0; i < len; i++) m = fmaxf(m, fabsf(s[i]));
    return m;
}

float ck_attention_row_weights_serial(const ck_attention_params *p, float *s, size_t len, float m) {
    float sum = 0;
    if (p->score == CK_SCORE_SOFTMAX) {
        for (size_t i = 0; i < len; i++) {
            s[i] = expf(s[i] - m);
            sum += s[i];
        }
    } else {
        float inv = 1.0f / (m + p->delta);
        for (size_t i = 0; i < len; i++) {
            s[i] = ck_powi(s[i] * inv, p->power);
            sum += s[i];
        }
    }
    return sum;
}

void ck_attention_kivi_scores_serial(int bits, size_t d, const void *group, const float *qs, size_t g, float *qp,
                                     float *s, size_t lds); /* attention_kivi.c */
void ck_attention_kivi_scores_i8_serial(int bits, size_t d, const void *group, const float *qs, size_t g, void *scratch,
                                        float *s, size_t lds);

const ck_attention_kernels ck_attention_serial = {
    &ck_qmatmul_serial,
    ck_attention_row_max_serial,
    ck_attention_row_weights_serial,
    ck_attention_kivi_scores_serial,
    ck_attention_kivi_scores_i8_serial,
};

CK_DEFINE_KERNELS_FOR(attention)
