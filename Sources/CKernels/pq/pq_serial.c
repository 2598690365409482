#include "ck_pq.h"
#include "ck_internal.h"

void ck_pq_table_l2_serial(const float *restrict q, const float *restrict cent_t, size_t M, size_t ksub, size_t dsub,
                           float *restrict table) {
    for (size_t m = 0; m < M; m++) {
        float *t = table + m * ksub;
        for (size_t j = 0; j < ksub; j++) t[j] = 0;
        for (size_t c = 0; c < dsub; c++) {
            float qc = q[m * dsub + c];
            const float *row = cent_t + (m * dsub + c) * ksub;
            for (size_t j = 0; j < ksub; j++) {
                float diff = qc - row[j];
                t[j] += diff * diff;
            }
        }
    }
}

void ck_pq_table_ip_serial(const float *restrict q, const float *restrict cent_t, size_t M, size_t ksub, size_t dsub,
                           float *restrict table) {
    for (size_t m = 0; m < M; m++) {
        float *t = table + m * ksub;
        for (size_t j = 0; j < ksub; j++) t[j] = 0;
        for (size_t c = 0; c < dsub; c++) {
            float qc = q[m * dsub + c];
            const float *row = cent_t + (m * dsub + c) * ksub;
            for (size_t j = 0; j < ksub; j++) t[j] += qc * row[j];
        }
    }
}

void ck_pq_scan8_serial(const uint8_t *restrict codes, size_t n, size_t M, const float *restrict table,
                        float *restrict out) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * M;
        float s = 0;
        for (size_t m = 0; m < M; m++) s += table[m * 256 + c[m]];
        out[i] = s;
    }
}

void ck_pq_scan4_serial(const uint8_t *restrict packed, size_t nblocks, size_t m_pad, const uint8_t *restrict qtable,
                        uint16_t *restrict out) {
    for (size_t b = 0; b < nblocks; b++) {
        const uint8_t *blk = packed + b * 16 * m_pad;
        uint16_t *o = out + b * CK_PQ4_BLOCK;
        for (int v = 0; v < CK_PQ4_BLOCK; v++) o[v] = 0;
        for (size_t m = 0; m < m_pad; m++) {
            const uint8_t *bytes = blk + (m / 2) * 32 + (m % 2) * 16;
            const uint8_t *t = qtable + m * 16;
            for (int j = 0; j < 16; j++) {
                o[j] = (uint16_t)(o[j] + t[bytes[j] & 15]);
                o[j + 16] = (uint16_t)(o[j + 16] + t[bytes[j] >> 4]);
            }
        }
    }
}

size_t ck_pq_below4_serial(const uint16_t *restrict sums, size_t n, uint16_t limit, uint32_t *restrict idx) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (sums[i] <= limit) idx[c++] = (uint32_t)i;
    return c;
}

size_t ck_pq_padded_m4(size_t M) {
    return (M + 1) & ~(size_t)1;
}

size_t ck_pq_packed_bytes4(size_t n, size_t M) {
    return (n + CK_PQ4_BLOCK - 1) / CK_PQ4_BLOCK * 16 * ck_pq_padded_m4(M);
}

ck_status ck_pq_pack4(const uint8_t *restrict codes, size_t n, size_t M, uint8_t *restrict packed) {
    size_t m_pad = ck_pq_padded_m4(M);
    memset(packed, 0, ck_pq_packed_bytes4(n, M));
    for (size_t i = 0; i < n; i++) {
        size_t b = i / CK_PQ4_BLOCK, v = i % CK_PQ4_BLOCK;
        uint8_t *blk = packed + b * 16 * m_pad;
        for (size_t m = 0; m < M; m++) {
            uint8_t c = codes[i * M + m];
            if (c >= 16) return CK_ERR_ARGUMENT;
            uint8_t *byte = blk + (m / 2) * 32 + (m % 2) * 16 + (v % 16);
            *byte |= (uint8_t)(v < 16 ? c : c << 4);
        }
    }
    return CK_OK;
}

ck_status ck_pq_quantize_table4(const float *restrict table, size_t M, uint8_t *restrict qtable, float *scale,
                                float *bias) {
    if (M == 0 || M > 256) return CK_ERR_ARGUMENT;
    size_t m_pad = ck_pq_padded_m4(M);
    float maxrange = 0, b = 0, mins[256];
    for (size_t m = 0; m < M; m++) {
        float mn = table[m * 16], mx = mn;
        for (int j = 0; j < 16; j++) {
            float t = table[m * 16 + j];
            if (!isfinite(t)) return CK_ERR_NAN;
            mn = t < mn ? t : mn;
            mx = t > mx ? t : mx;
        }
        mins[m] = mn;
        maxrange = mx - mn > maxrange ? mx - mn : maxrange;
        b += mn;
    }
    float a = maxrange > 0 ? 255.0f / maxrange : 1.0f;
    /* Round to nearest (ties to even, as lrintf) without a libm call per entry: for 0 <= v < 2^23,
     * (v + 2^23) - 2^23 is v rounded in the default rounding mode; v is in [0, 255 + ulp]. This
     * runs once per posting list for residual tables, where a call per entry cost 35% of a query. */
    const float magic = 8388608.0f;
    for (size_t m = 0; m < M; m++) {
        for (int j = 0; j < 16; j++) {
            float v = (table[m * 16 + j] - mins[m]) * a;
            float r = (v + magic) - magic; /* not folded: no fast-math in this package */
            qtable[m * 16 + j] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
        }
    }
    for (size_t m = M; m < m_pad; m++) memset(qtable + m * 16, 0, 16);
    *scale = a;
    *bias = b;
    return CK_OK;
}

const ck_pq_kernels ck_pq_serial = {
    ck_pq_table_l2_serial, ck_pq_table_ip_serial, ck_pq_scan8_serial,
    ck_pq_scan4_serial,    ck_pq_below4_serial,   ck_pq_quantize_table4,
};

CK_DEFINE_KERNELS_FOR(pq)
