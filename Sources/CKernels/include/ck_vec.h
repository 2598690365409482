/* ck_vec.h — vector-search primitives: distances of one query to many f32 / f16 rows, and the
 * CRC-32C checksum of the on-disk index.
 *
 * Distances (smaller is better): L2 = squared Euclidean; IP = negated inner product (cosine is IP
 * on normalised vectors). Rows at x + i * stride (elements), n rows of d values.
 * Numerics: f32 accumulation in every level; SIMD levels sum in another order than the serial
 * reference (tests bound the difference by d * eps * sum |terms|).
 * CRC-32C (Castagnoli, reflected 0x82F63B78, as iSCSI/ext4): crc = ck_crc32c(0, p, n) for a
 * buffer; chaining ck_crc32c(ck_crc32c(0, a, n1), b, n2) equals the CRC of a || b. The AVX2 and
 * AVX-512 levels use the SSE4.2 crc32 instruction, the serial level a table.
 */
#ifndef CK_VEC_H
#define CK_VEC_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct ck_vec_kernels {
    void (*l2_f32)(const float *q, const float *x, size_t n, size_t d, size_t stride, float *out);
    void (*ip_f32)(const float *q, const float *x, size_t n, size_t d, size_t stride, float *out);
    /** rows of IEEE half floats (uint16 bit patterns); stride in elements */
    void (*l2_f16)(const float *q, const uint16_t *x, size_t n, size_t d, size_t stride, float *out);
    void (*ip_f16)(const float *q, const uint16_t *x, size_t n, size_t d, size_t stride, float *out);
    uint32_t (*crc32c)(uint32_t crc, const void *p, size_t n);
    /** x[0..n) to IEEE half bit patterns, round to nearest even (overflow to inf, NaN kept NaN) */
    void (*to_f16)(const float *x, uint16_t *out, size_t n);
    /** out[i] = x[i] - h[i] for n half bit patterns h (the conversion is exact, so every level
     *  gives the same floats: one rounding, of the subtraction) */
    void (*sub_f16)(const float *x, const uint16_t *h, float *out, size_t n);
    /** n half bit patterns h to f32 (exact for every non-NaN value; NaNs stay NaN) */
    void (*from_f16)(const uint16_t *h, float *out, size_t n);
} ck_vec_kernels;

const ck_vec_kernels *ck_vec_kernels_for(ck_isa level);

/** Prefetches the cache lines of [p, p + n) for reading, at most the first 4 KiB: enough to
 *  start the first misses of a list or row the caller reaches next (the scan's own prefetches
 *  continue from there). A hint: never faults. */
void ck_prefetch_read(const void *p, size_t n);

#ifdef __cplusplus
}
#endif
#endif
