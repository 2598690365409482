/* KIVI key groups: quantization, dequantization and the serial score kernel (layout in
 * ck_attention.h). Quantization runs once per 32 tokens per head, so it stays serial. */
#include "ck_attention.h"
#include "ck_internal.h"

size_t ck_kivi_group_bytes(int bits, size_t d) {
    if (bits != 4 && bits != 2) return 0;
    return 4 * d + d * (size_t)CK_KIVI_G * (size_t)bits / 8;
}

static inline size_t code_bytes(int bits) {
    return (size_t)CK_KIVI_G * (size_t)bits / 8;
}

/* position of token t's code inside a channel's bytes: (byte, shift) */
static inline void code_slot(int bits, int t, int *byte, int *shift) {
    if (bits == 4) {
        *byte = t & 15;
        *shift = (t >> 4) * 4;
    } else {
        *byte = t & 7;
        *shift = (t >> 3) * 2;
    }
}

ck_status ck_kivi_quantize_keys(int bits, size_t d, const float *k, size_t ldk, void *group) {
    if ((bits != 4 && bits != 2) || d == 0 || !k || !group || ldk < d) return CK_ERR_ARGUMENT;
    uint16_t *scale = group, *mins = scale + d;
    uint8_t *codes = (uint8_t *)(mins + d);
    const int top = (1 << bits) - 1;
    const size_t cb = code_bytes(bits);
    memset(codes, 0, d * cb);
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
        uint8_t *cc = codes + c * cb;
        for (int t = 0; t < CK_KIVI_G; t++) {
            int q = (int)nearbyintf((k[(size_t)t * ldk + c] - mq) * inv);
            q = q < 0 ? 0 : q > top ? top : q;
            int byte, shift;
            code_slot(bits, t, &byte, &shift);
            cc[byte] |= (uint8_t)(q << shift);
        }
    }
    return CK_OK;
}

ck_status ck_kivi_dequantize_keys(int bits, size_t d, const void *group, float *k) {
    if ((bits != 4 && bits != 2) || d == 0 || !k || !group) return CK_ERR_ARGUMENT;
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    const size_t cb = code_bytes(bits);
    const int mask = (1 << bits) - 1;
    for (size_t c = 0; c < d; c++) {
        float s = ck_fp16_to_fp32(scale[c]), m = ck_fp16_to_fp32(mins[c]);
        for (int t = 0; t < CK_KIVI_G; t++) {
            int byte, shift;
            code_slot(bits, t, &byte, &shift);
            k[(size_t)t * d + c] = s * (float)((codes[c * cb + byte] >> shift) & mask) + m;
        }
    }
    return CK_OK;
}

/* Serial reference of the score kernel: per query, qp = qs * scale and base = qs . min, then
 * per token the channel sum of qp * code, plus base. */
void ck_attention_kivi_scores_serial(int bits, size_t d, const void *group, const float *qs, size_t g, float *qp,
                                     float *s, size_t lds) {
    const uint16_t *scale = group, *mins = scale + d;
    const uint8_t *codes = (const uint8_t *)(mins + d);
    const size_t cb = code_bytes(bits);
    const int mask = (1 << bits) - 1;
    for (size_t j = 0; j < g; j++) {
        float base = 0;
        for (size_t c = 0; c < d; c++) {
            qp[j * d + c] = qs[j * d + c] * ck_fp16_to_fp32(scale[c]);
            base += qs[j * d + c] * ck_fp16_to_fp32(mins[c]);
        }
        for (int t = 0; t < CK_KIVI_G; t++) {
            int byte, shift;
            code_slot(bits, t, &byte, &shift);
            float acc = 0;
            for (size_t c = 0; c < d; c++) acc += qp[j * d + c] * (float)((codes[c * cb + byte] >> shift) & mask);
            s[j * lds + (size_t)t] = acc + base;
        }
    }
}
