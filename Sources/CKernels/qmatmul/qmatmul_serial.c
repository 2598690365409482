#include "ck_qmatmul.h"
#include "ck_internal.h"

size_t ck_qmatmul_row_bytes(ck_rtype t, size_t n) {
    bool blocks = ck_qmatmul_is_quantized(t);
    if (blocks && n % CK_QK) return 0;
    switch (t) {
    case CK_RT_F32:
        return n * 4;
    case CK_RT_F16:
        return n * 2;
    case CK_RT_Q8_0:
        return n / CK_QK * sizeof(ck_block_q8_0);
    case CK_RT_Q4_0:
        return n / CK_QK * sizeof(ck_block_q4_0);
    case CK_RT_Q4_1:
        return n / CK_QK * sizeof(ck_block_q4_1);
    case CK_RT_Q2_1:
        return n / CK_QK * sizeof(ck_block_q2_1);
    }
    return 0;
}

bool ck_qmatmul_is_quantized(ck_rtype t) {
    return t >= CK_RT_Q8_0 && t <= CK_RT_Q2_1;
}

/* ---- quantization (reference; shared by every ISA level: it runs once per row at load time,
 * or once per token for KV caches, far from the bandwidth-bound loops) ---- */

static void quantize_q8_0(const float *x, size_t n, ck_block_q8_0 *y) {
    for (size_t b = 0; b < n / CK_QK; b++, x += CK_QK) {
        float amax = 0;
        for (int j = 0; j < CK_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        y[b].d = ck_fp32_to_fp16(d);
        for (int j = 0; j < CK_QK; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id); /* ggml rounds half away from zero */
    }
}

static void quantize_q4_0(const float *x, size_t n, ck_block_q4_0 *y) {
    for (size_t b = 0; b < n / CK_QK; b++, x += CK_QK) {
        float amax = 0, max = 0; /* the value of largest magnitude, with its sign, maps to -8 */
        for (int j = 0; j < CK_QK; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = ck_fp32_to_fp16(d);
        for (int j = 0; j < CK_QK / 2; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
            q0 = q0 < 0 ? 0 : q0 > 15 ? 15 : q0;
            q1 = q1 < 0 ? 0 : q1 > 15 ? 15 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void minmax(const float *x, float *mn, float *mx) {
    float a = x[0], b = x[0];
    for (int j = 1; j < CK_QK; j++) {
        a = fminf(a, x[j]);
        b = fmaxf(b, x[j]);
    }
    *mn = a;
    *mx = b;
}

static void quantize_q4_1(const float *x, size_t n, ck_block_q4_1 *y) {
    for (size_t b = 0; b < n / CK_QK; b++, x += CK_QK) {
        float mn, mx;
        minmax(x, &mn, &mx);
        float d = (mx - mn) / 15.0f, id = d > 0 ? 1.0f / d : 0.0f;
        y[b].d = ck_fp32_to_fp16(d);
        y[b].m = ck_fp32_to_fp16(mn);
        for (int j = 0; j < CK_QK / 2; j++) {
            int q0 = (int)((x[j] - mn) * id + 0.5f), q1 = (int)((x[j + 16] - mn) * id + 0.5f);
            q0 = q0 > 15 ? 15 : q0 < 0 ? 0 : q0;
            q1 = q1 > 15 ? 15 : q1 < 0 ? 0 : q1;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q2_1(const float *x, size_t n, ck_block_q2_1 *y) {
    for (size_t b = 0; b < n / CK_QK; b++, x += CK_QK) {
        float mn, mx;
        minmax(x, &mn, &mx);
        float d = (mx - mn) / 3.0f, id = d > 0 ? 1.0f / d : 0.0f;
        y[b].d = ck_fp32_to_fp16(d);
        y[b].m = ck_fp32_to_fp16(mn);
        memset(y[b].qs, 0, sizeof y[b].qs);
        for (int j = 0; j < CK_QK; j++) {
            int q = (int)((x[j] - mn) * id + 0.5f);
            q = q > 3 ? 3 : q < 0 ? 0 : q;
            y[b].qs[j % 8] |= (uint8_t)(q << (2 * (j / 8)));
        }
    }
}

void ck_qmatmul_quantize_serial(ck_rtype t, const float *restrict x, size_t n, void *restrict out) {
    switch (t) {
    case CK_RT_F32:
        memcpy(out, x, n * 4);
        break;
    case CK_RT_F16:
        for (size_t i = 0; i < n; i++) ((uint16_t *)out)[i] = ck_fp32_to_fp16(x[i]);
        break;
    case CK_RT_Q8_0:
        quantize_q8_0(x, n, out);
        break;
    case CK_RT_Q4_0:
        quantize_q4_0(x, n, out);
        break;
    case CK_RT_Q4_1:
        quantize_q4_1(x, n, out);
        break;
    case CK_RT_Q2_1:
        quantize_q2_1(x, n, out);
        break;
    }
}

void ck_qmatmul_dequantize_serial(ck_rtype t, const void *restrict in, size_t n, float *restrict y) {
    switch (t) {
    case CK_RT_F32:
        memcpy(y, in, n * 4);
        break;
    case CK_RT_F16:
        for (size_t i = 0; i < n; i++) y[i] = ck_fp16_to_fp32(((const uint16_t *)in)[i]);
        break;
    case CK_RT_Q8_0: {
        const ck_block_q8_0 *b = in;
        for (size_t i = 0; i < n / CK_QK; i++) {
            float d = ck_fp16_to_fp32(b[i].d);
            for (int j = 0; j < CK_QK; j++) y[i * CK_QK + j] = d * b[i].qs[j];
        }
        break;
    }
    case CK_RT_Q4_0: {
        const ck_block_q4_0 *b = in;
        for (size_t i = 0; i < n / CK_QK; i++) {
            float d = ck_fp16_to_fp32(b[i].d);
            for (int j = 0; j < 16; j++) {
                y[i * CK_QK + j] = d * (float)((b[i].qs[j] & 15) - 8);
                y[i * CK_QK + j + 16] = d * (float)((b[i].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    case CK_RT_Q4_1: {
        const ck_block_q4_1 *b = in;
        for (size_t i = 0; i < n / CK_QK; i++) {
            float d = ck_fp16_to_fp32(b[i].d), m = ck_fp16_to_fp32(b[i].m);
            for (int j = 0; j < 16; j++) {
                y[i * CK_QK + j] = d * (float)(b[i].qs[j] & 15) + m;
                y[i * CK_QK + j + 16] = d * (float)(b[i].qs[j] >> 4) + m;
            }
        }
        break;
    }
    case CK_RT_Q2_1: {
        const ck_block_q2_1 *b = in;
        for (size_t i = 0; i < n / CK_QK; i++) {
            float d = ck_fp16_to_fp32(b[i].d), m = ck_fp16_to_fp32(b[i].m);
            for (int j = 0; j < CK_QK; j++) y[i * CK_QK + j] = d * (float)((b[i].qs[j % 8] >> (2 * (j / 8))) & 3) + m;
        }
        break;
    }
    }
}

void ck_qmatmul_quantize_q8a_serial(const float *restrict x, size_t n, ck_block_q8a *restrict y) {
    for (size_t b = 0; b < n / CK_QK; b++, x += CK_QK) {
        float amax = 0;
        for (int j = 0; j < CK_QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d > 0 ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < CK_QK; j++) {
            int q = (int)lrintf(x[j] * id);
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            y[b].qs[j] = (int8_t)q;
            sum += q;
        }
        y[b].d = d;
        y[b].dsum = d * (float)sum;
    }
}

void ck_qmatmul_quantize_q8h_serial(const float *restrict x, size_t n, ck_block_q8h *restrict y) {
    for (size_t b = 0; b < n / CK_QK; b++, x += CK_QK) {
        float part[2];
        for (int h = 0; h < 2; h++) {
            const float *xh = x + 16 * h;
            float amax = 0;
            for (int j = 0; j < 16; j++) amax = fmaxf(amax, fabsf(xh[j]));
            float d = amax / 127.0f, id = d > 0 ? 127.0f / amax : 0.0f;
            int32_t sum = 0;
            for (int j = 0; j < 16; j++) {
                int q = (int)lrintf(xh[j] * id);
                q = q > 127 ? 127 : q < -127 ? -127 : q;
                y[b].qs[16 * h + j] = (int8_t)q;
                sum += q;
            }
            y[b].d[h] = d;
            part[h] = d * (float)sum; /* separate statements: no contraction into an fma */
        }
        y[b].dsum = part[0] + part[1];
    }
}

/* ---- dot products: dequantize one block into floats, then dot. ---- */

static inline void deq_block(ck_rtype t, const uint8_t *row, size_t b, float *out) {
    /* one block (32 values) of a row */
    switch (t) {
    case CK_RT_F32:
        memcpy(out, (const float *)row + b * CK_QK, CK_QK * 4);
        break;
    case CK_RT_F16:
        ck_qmatmul_dequantize_serial(t, (const uint16_t *)row + b * CK_QK, CK_QK, out);
        break;
    case CK_RT_Q8_0:
        ck_qmatmul_dequantize_serial(t, (const ck_block_q8_0 *)row + b, CK_QK, out);
        break;
    case CK_RT_Q4_0:
        ck_qmatmul_dequantize_serial(t, (const ck_block_q4_0 *)row + b, CK_QK, out);
        break;
    case CK_RT_Q4_1:
        ck_qmatmul_dequantize_serial(t, (const ck_block_q4_1 *)row + b, CK_QK, out);
        break;
    case CK_RT_Q2_1:
        ck_qmatmul_dequantize_serial(t, (const ck_block_q2_1 *)row + b, CK_QK, out);
        break;
    }
}

static inline void deq_any(ck_rtype t, const uint8_t *row, size_t i, size_t len, float *out) {
    /* values [i, i+len) of a dense row (F32/F16 rows may have n % 32 != 0) */
    if (t == CK_RT_F32)
        memcpy(out, (const float *)row + i, len * 4);
    else
        for (size_t j = 0; j < len; j++) out[j] = ck_fp16_to_fp32(((const uint16_t *)row)[i + j]);
}

void ck_qmatmul_dot_rows_f32_serial(ck_rtype t, const void *restrict w, size_t rows, size_t n, size_t stride,
                                    const float *restrict x, size_t nq, float *restrict y, size_t ldy) {
    float buf[CK_QK];
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)w + r * stride;
        for (size_t q = 0; q < nq; q++) {
            const float *xq = x + q * n;
            float s = 0;
            for (size_t i = 0; i < n; i += CK_QK) {
                size_t len = ck_min_sz(CK_QK, n - i);
                if (ck_qmatmul_is_quantized(t))
                    deq_block(t, row, i / CK_QK, buf);
                else
                    deq_any(t, row, i, len, buf);
                for (size_t j = 0; j < len; j++) s += buf[j] * xq[i + j];
            }
            y[q * ldy + r] = s;
        }
    }
}

static inline int32_t idot(const int8_t *a, const uint8_t *u, int offset) {
    int32_t s = 0;
    for (int j = 0; j < CK_QK; j++) s += ((int32_t)u[j] - offset) * a[j];
    return s;
}

void ck_qmatmul_dot_rows_q8a_serial(ck_rtype t, const void *restrict w, size_t rows, size_t n, size_t stride,
                                    const ck_block_q8a *restrict a, size_t nq, float *restrict y, size_t ldy) {
    size_t nb = n / CK_QK;
    uint8_t codes[CK_QK];
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)w + r * stride;
        for (size_t q = 0; q < nq; q++) {
            const ck_block_q8a *aq = a + q * nb;
            float s = 0;
            for (size_t b = 0; b < nb; b++) {
                float da = aq[b].d;
                switch (t) {
                case CK_RT_Q8_0: {
                    const ck_block_q8_0 *blk = (const ck_block_q8_0 *)row + b;
                    int32_t is = 0;
                    for (int j = 0; j < CK_QK; j++) is += (int32_t)blk->qs[j] * aq[b].qs[j];
                    s += ck_fp16_to_fp32(blk->d) * da * (float)is;
                    break;
                }
                case CK_RT_Q4_0: {
                    const ck_block_q4_0 *blk = (const ck_block_q4_0 *)row + b;
                    for (int j = 0; j < 16; j++) {
                        codes[j] = blk->qs[j] & 15;
                        codes[j + 16] = blk->qs[j] >> 4;
                    }
                    s += ck_fp16_to_fp32(blk->d) * da * (float)idot(aq[b].qs, codes, 8);
                    break;
                }
                case CK_RT_Q4_1: {
                    const ck_block_q4_1 *blk = (const ck_block_q4_1 *)row + b;
                    for (int j = 0; j < 16; j++) {
                        codes[j] = blk->qs[j] & 15;
                        codes[j + 16] = blk->qs[j] >> 4;
                    }
                    s += ck_fp16_to_fp32(blk->d) * da * (float)idot(aq[b].qs, codes, 0) +
                         ck_fp16_to_fp32(blk->m) * aq[b].dsum;
                    break;
                }
                case CK_RT_Q2_1: {
                    const ck_block_q2_1 *blk = (const ck_block_q2_1 *)row + b;
                    for (int j = 0; j < CK_QK; j++) codes[j] = (blk->qs[j % 8] >> (2 * (j / 8))) & 3;
                    s += ck_fp16_to_fp32(blk->d) * da * (float)idot(aq[b].qs, codes, 0) +
                         ck_fp16_to_fp32(blk->m) * aq[b].dsum;
                    break;
                }
                default:
                    break;
                }
            }
            y[q * ldy + r] = s;
        }
    }
}

void ck_qmatmul_wsum_rows_serial(ck_rtype t, const void *restrict w, size_t rows, size_t n, size_t stride,
                                 const float *restrict p, size_t ldp, size_t nq, float *restrict out) {
    float buf[CK_QK];
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *row = (const uint8_t *)w + r * stride;
        for (size_t i = 0; i < n; i += CK_QK) {
            size_t len = ck_min_sz(CK_QK, n - i);
            if (ck_qmatmul_is_quantized(t))
                deq_block(t, row, i / CK_QK, buf);
            else
                deq_any(t, row, i, len, buf);
            for (size_t q = 0; q < nq; q++) {
                float pr = p[q * ldp + r];
                for (size_t j = 0; j < len; j++) out[q * n + i + j] += pr * buf[j];
            }
        }
    }
}

/* ---- interleaved 4-bit rows (layout in ck_qmatmul.h) ---- */

static size_t x8_header(ck_rtype t) {
    return t == CK_RT_Q4_1 ? 32 : 16; /* fp16 d[8] (and m[8]) */
}

static size_t x8_block_bytes(ck_rtype t) {
    return x8_header(t) + 128;
}

size_t ck_qmatmul_x8_group_bytes(ck_rtype t, size_t n) {
    if ((t != CK_RT_Q4_0 && t != CK_RT_Q4_1) || n == 0 || n % CK_QK) return 0;
    return n / CK_QK * x8_block_bytes(t);
}

ck_status ck_qmatmul_x8_pack(ck_rtype t, const void *restrict w, size_t rows, size_t n, size_t stride,
                             void *restrict out) {
    size_t gb = ck_qmatmul_x8_group_bytes(t, n);
    if (gb == 0 || rows % 8 || stride < ck_qmatmul_row_bytes(t, n)) return CK_ERR_ARGUMENT;
    const size_t nb = n / CK_QK, bb = x8_block_bytes(t), hb = x8_header(t);
    const size_t src = t == CK_RT_Q4_1 ? sizeof(ck_block_q4_1) : sizeof(ck_block_q4_0);
    const size_t qoff = src - CK_QK / 2; /* nibbles follow d (and m) */
    for (size_t g = 0; g < rows / 8; g++)
        for (size_t b = 0; b < nb; b++) {
            uint8_t *dst = (uint8_t *)out + g * gb + b * bb;
            for (size_t i = 0; i < 8; i++) {
                const uint8_t *blk = (const uint8_t *)w + (8 * g + i) * stride + b * src;
                memcpy(dst + 2 * i, blk, 2);                               /* d */
                if (t == CK_RT_Q4_1) memcpy(dst + 16 + 2 * i, blk + 2, 2); /* m */
                for (size_t c = 0; c < 4; c++) memcpy(dst + hb + 32 * c + 4 * i, blk + qoff + 4 * c, 4);
            }
        }
    return CK_OK;
}

ck_status ck_qmatmul_x8_unpack_row(ck_rtype t, const void *restrict packed, size_t n, size_t r, void *restrict out) {
    size_t gb = ck_qmatmul_x8_group_bytes(t, n);
    if (gb == 0) return CK_ERR_ARGUMENT;
    const size_t nb = n / CK_QK, bb = x8_block_bytes(t), hb = x8_header(t), i = r % 8;
    const size_t src = t == CK_RT_Q4_1 ? sizeof(ck_block_q4_1) : sizeof(ck_block_q4_0), qoff = src - CK_QK / 2;
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = (const uint8_t *)packed + r / 8 * gb + b * bb;
        uint8_t *dst = (uint8_t *)out + b * src;
        memcpy(dst, blk + 2 * i, 2);
        if (t == CK_RT_Q4_1) memcpy(dst + 2, blk + 16 + 2 * i, 2);
        for (size_t c = 0; c < 4; c++) memcpy(dst + qoff + 4 * c, blk + hb + 32 * c + 4 * i, 4);
    }
    return CK_OK;
}

void ck_qmatmul_dot_x8_q8h_serial(ck_rtype t, const void *restrict w, size_t groups, size_t n,
                                  const ck_block_q8h *restrict a, size_t nq, float *restrict y, size_t ldy) {
    const size_t nb = n / CK_QK, bb = x8_block_bytes(t), hb = x8_header(t), gb = nb * bb;
    for (size_t g = 0; g < groups; g++)
        for (size_t q = 0; q < nq; q++) {
            const ck_block_q8h *aq = a + q * nb;
            float acc[8] = {0}, corr[8] = {0};
            for (size_t b = 0; b < nb; b++) {
                const uint8_t *blk = (const uint8_t *)w + g * gb + b * bb;
                for (size_t i = 0; i < 8; i++) {
                    uint16_t hd, hm;
                    memcpy(&hd, blk + 2 * i, 2);
                    float dw = ck_fp16_to_fp32(hd);
                    int32_t i0 = 0, i1 = 0; /* low nibbles: values 0-15, high nibbles: 16-31 */
                    for (size_t c = 0; c < 4; c++)
                        for (size_t k = 0; k < 4; k++) {
                            uint8_t x = blk[hb + 32 * c + 4 * i + k];
                            i0 += (int32_t)(x & 15) * aq[b].qs[4 * c + k];
                            i1 += (int32_t)(x >> 4) * aq[b].qs[16 + 4 * c + k];
                        }
                    acc[i] = fmaf((float)i0, dw * aq[b].d[0], acc[i]);
                    acc[i] = fmaf((float)i1, dw * aq[b].d[1], acc[i]);
                    if (t == CK_RT_Q4_1) {
                        memcpy(&hm, blk + 16 + 2 * i, 2);
                        corr[i] = fmaf(ck_fp16_to_fp32(hm), aq[b].dsum, corr[i]);
                    } else {
                        corr[i] = fmaf(dw, -8.0f * aq[b].dsum, corr[i]);
                    }
                }
            }
            for (size_t i = 0; i < 8; i++) y[q * ldy + 8 * g + i] = acc[i] + corr[i];
        }
}

const ck_qmatmul_kernels ck_qmatmul_serial = {
    ck_qmatmul_quantize_serial,     ck_qmatmul_dequantize_serial,   ck_qmatmul_quantize_q8a_serial,
    ck_qmatmul_dot_rows_f32_serial, ck_qmatmul_dot_rows_q8a_serial, ck_qmatmul_wsum_rows_serial,
    ck_qmatmul_quantize_q8h_serial, ck_qmatmul_dot_x8_q8h_serial,
};

CK_DEFINE_KERNELS_FOR(qmatmul)
