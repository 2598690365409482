/* Serial reference of the vector-search primitives (ck_vec.h). */
#include "ck_vec.h"
#include "ck_internal.h"

static void l2_f32(const float *q, const float *x, size_t n, size_t d, size_t stride, float *out) {
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * stride;
        float s = 0;
        for (size_t j = 0; j < d; j++) {
            float t = q[j] - r[j];
            s += t * t;
        }
        out[i] = s;
    }
}

static void ip_f32(const float *q, const float *x, size_t n, size_t d, size_t stride, float *out) {
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * stride;
        float s = 0;
        for (size_t j = 0; j < d; j++) s += q[j] * r[j];
        out[i] = -s;
    }
}

static void l2_f16(const float *q, const uint16_t *x, size_t n, size_t d, size_t stride, float *out) {
    for (size_t i = 0; i < n; i++) {
        const uint16_t *r = x + i * stride;
        float s = 0;
        for (size_t j = 0; j < d; j++) {
            float t = q[j] - ck_fp16_to_fp32(r[j]);
            s += t * t;
        }
        out[i] = s;
    }
}

static void ip_f16(const float *q, const uint16_t *x, size_t n, size_t d, size_t stride, float *out) {
    for (size_t i = 0; i < n; i++) {
        const uint16_t *r = x + i * stride;
        float s = 0;
        for (size_t j = 0; j < d; j++) s += q[j] * ck_fp16_to_fp32(r[j]);
        out[i] = -s;
    }
}

static uint32_t crc_table[256];
static int crc_ready = 0;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
    crc_ready = 1;
}

uint32_t ck_crc32c_serial(uint32_t crc, const void *p, size_t n) {
    if (!crc_ready) crc_init(); /* idempotent: racing initialisers write the same values */
    const uint8_t *b = (const uint8_t *)p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ b[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static const ck_vec_kernels k_serial = {l2_f32, ip_f32, l2_f16, ip_f16, ck_crc32c_serial};

#if CK_X86
extern const ck_vec_kernels ck_vec_avx2, ck_vec_avx512;
#endif

const ck_vec_kernels *ck_vec_kernels_for(ck_isa level) {
    if (!ck_isa_supported(level)) return NULL;
    switch (level) {
    case CK_ISA_SCALAR:
        return &k_serial;
#if CK_X86
    case CK_ISA_AVX2:
        return &ck_vec_avx2;
    case CK_ISA_AVX512:
        return &ck_vec_avx512;
#else
    default:
        return NULL;
#endif
    }
    return NULL;
}
