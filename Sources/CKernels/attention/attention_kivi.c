/* KIVI key groups: quantization, dequantization and the serial score kernel (layout in
 * ck_attention.h). Quantization runs once per 32 tokens per head, so it stays serial. */
#include "ck_attention.h"
#include "ck_internal.h"

size_t ck_kivi_group_bytes(int bits, size_t d) {
    if (bits != 4 && bits != 2) return 0;
    return 4 * d + d * (size_t)CK_KIVI_G * (size_t)bits / 8;
}

/* Byte and shift of the code of (token t, channel c) inside a group's codes (layout in
 * ck_attention.h: channel quads, one 32-bit lane per token and quad). */
static inline void code_slot(int bits, size_t t, size_t c, size_t *byte, int *shift) {
    size_t quad = c / 4, k = c % 4;
    if (bits == 4) {
        *byte = quad * 64 + (t & 15) * 4 + k;
        *shift = (int)(t >> 4) * 4;
    } else {
        *byte = quad * 32 + (t & 7) * 4 + k;
        *shift = (int)(t >> 3) * 2;
    }
}

static inline int code_at(int bits, const uint8_t *codes, size_t t, size_t c) {
    size_t byte;
    int shift;
    code_slot(bits, t, c, &byte, &shift);
    return (codes[byte] >> shift) & ((1 << bits) - 1);
}

ck_status ck_kivi_quantize_keys(int bits, size_t d, const float *k, size_t ldk, void *group) {
    if ((bits != 4 && bits != 2) || d == 0 || d % 4 || !k || !group || ldk < d) return CK_ERR_ARGUMENT;
    uint16_t *scale = group, *mins = scale + d;
    uint8_t *codes = (uint8_t *)(mins + d);
    const int top = (1 << bits) - 1;
    memset(codes, 0, d * (size_t)CK_KIVI_G * (size_t)bits / 8);
    for (size_t c = 0; c < d; c++) {
        float lo = k[c], hi = k[c];
        for (int t = 1; t < CK_KIVI_G; t++) {
            float x = k[(size_t)t * ldk + c];
            if (!isfinite(x)) return CK_ERR_ARGUMENT;
            lo = fminf(lo, x);
            hi = fmaxf(hi, x);
        }
        if (!isfinite(lo) || !isfinite(hi)) return CK_ERR_ARGUMENT;
        uint16_t mh = ck_fp32_to_fp16(lo);
        float mq = ck_fp16_to_fp32(mh);
        if (!isfinite(mq)) return CK_ERR_ARGUMENT; /* outside the half range */
        uint16_t sh = ck_fp32_to_fp16((hi - mq) / (float)top);
        float sq = ck_fp16_to_fp32(sh);
        if (!isfinite(sq)) return CK_ERR_ARGUMENT;
        scale[c] = sh;
        mins[c] = mh;
        float inv = sq > 0 ? 1.0f / sq : 0.0f;
        for (size_t t = 0; t < CK_KIVI_G; t++) {
            int q = (int)nearbyintf((k[t * ldk + c] - mq) * inv);
            q = q < 0 ? 0 : q > top ? top : q;
            size_t byte;
            int shift;
            code_slot(bits, t, c, &byte, &shift);
            codes[byte] |= (uint8_t)(q << shift);
        }
    }
    return CK_OK;
}

ck_status ck_kivi_dequantize_keys(int bits, size_t d, const void *group, float *k) {
    if ((bits != 4 && bits != 2) || d == 0 || d % 4 || !k || !group) return CK_ERR_ARGUMENT;
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    for (size_t c = 0; c < d; c++) {
        float s = ck_fp16_to_fp32(scale[c]), m = ck_fp16_to_fp32(mins[c]);
        for (size_t t = 0; t < CK_KIVI_G; t++) k[t * d + c] = s * (float)code_at(bits, codes, t, c) + m;
    }
    return CK_OK;
}

/* Serial reference of the score kernel: per query, qp = qs * scale and base = qs . min, then
 * per token the channel sum of qp * code, plus base. */
void ck_attention_kivi_scores_serial(int bits, size_t d, const void *group, const float *qs, size_t g, float *qp,
                                     float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    for (size_t j = 0; j < g; j++) {
        float base = 0;
        for (size_t c = 0; c < d; c++) {
            qp[j * d + c] = qs[j * d + c] * ck_fp16_to_fp32(scale[c]);
            base += qs[j * d + c] * ck_fp16_to_fp32(mins[c]);
        }
        for (size_t t = 0; t < CK_KIVI_G; t++) {
            float acc = 0;
            for (size_t c = 0; c < d; c++) acc += qp[j * d + c] * (float)code_at(bits, codes, t, c);
            s[j * lds + t] = acc + base;
        }
    }
}

/* qp = qs * scale; qi = round(qp * 127 / max|qp|) to nearest even; step = max|qp| / 127. The SIMD
 * levels compute the same operations, so every level gets the same int8 query. */
static void kivi_quantize_query(size_t d, const float *qs, const uint16_t *scale, float *qp, int8_t *qi, float *step) {
    float amax = 0;
    for (size_t c = 0; c < d; c++) {
        qp[c] = qs[c] * ck_fp16_to_fp32(scale[c]);
        amax = fmaxf(amax, fabsf(qp[c]));
    }
    float inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (size_t c = 0; c < d; c++) qi[c] = (int8_t)nearbyintf(qp[c] * inv);
    *step = amax / 127.0f;
}

/* Serial reference of the integer score kernel: the int8 query of kivi_quantize_query, an
 * int32 dot with the codes per token, scaled by the step, plus qs . min. */
void ck_attention_kivi_scores_i8_serial(int bits, size_t d, const void *group, const float *qs, size_t g, void *scratch,
                                        float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    float *qp = scratch;
    int8_t *qi = (int8_t *)(qp + g * d);
    for (size_t j = 0; j < g; j++) {
        float step, base = 0;
        kivi_quantize_query(d, qs + j * d, scale, qp + j * d, qi + j * d, &step);
        for (size_t c = 0; c < d; c++) base += qs[j * d + c] * ck_fp16_to_fp32(mins[c]);
        for (size_t t = 0; t < CK_KIVI_G; t++) {
            int32_t acc = 0;
            for (size_t c = 0; c < d; c++) acc += (int32_t)qi[j * d + c] * code_at(bits, codes, t, c);
            s[j * lds + t] = step * (float)acc + base;
        }
    }
}
