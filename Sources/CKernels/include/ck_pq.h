/* ck_pq.h — product-quantization lookups.
 *
 * A vector of dimension d = M * dsub is split into M sub-vectors, each coded by the index of
 * its nearest of ksub centroids. Codebooks are passed transposed, (M, dsub, ksub) row-major
 * (centroid j of sub-space m, component c at cent_t[(m * dsub + c) * ksub + j]), so that
 * distance tables vectorise over centroids.
 *
 * Distance tables: table[m * ksub + j] = ||q_m - c_mj||^2 (L2) or <q_m, c_mj> (inner product).
 * 8-bit scan: codes n x M bytes (ksub = 256); out[i] = sum_m table[m * 256 + code[i][m]] (f32).
 * 4-bit fast-scan (ksub = 16): codes packed in blocks of 32 vectors (ck_pq_pack4); the table is
 * quantized to uint8 per sub-space (ck_pq_quantize_table4) and held in registers; sums are
 * uint16, exact for M <= 256. The approximate distance is bias + acc / scale, within
 * M * 0.5 / scale of the float-table (ADC) distance.
 */
#ifndef CK_PQ_H
#define CK_PQ_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif

#define CK_PQ4_BLOCK 32

typedef struct ck_pq_kernels {
    /** L2 table, (M, ksub); cent_t is (M, dsub, ksub); ksub a multiple of 16. */
    void (*table_l2)(const float *restrict q, const float *restrict cent_t, size_t M, size_t ksub, size_t dsub,
                     float *restrict table);
    /** Inner-product table, same layouts. */
    void (*table_ip)(const float *restrict q, const float *restrict cent_t, size_t M, size_t ksub, size_t dsub,
                     float *restrict table);
    /** 8-bit code scan (ksub = 256). */
    void (*scan8)(const uint8_t *restrict codes, size_t n, size_t M, const float *restrict table, float *restrict out);
    /** 4-bit fast-scan over nblocks packed blocks; qtable is m_pad x 16 uint8; out holds
     *  nblocks * 32 uint16 sums. m_pad is even (ck_pq_padded_m4). */
    void (*scan4)(const uint8_t *restrict packed, size_t nblocks, size_t m_pad, const uint8_t *restrict qtable,
                  uint16_t *restrict out);
    /** Candidate filter over fast-scan sums: writes, in increasing order, every i < n with
     *  sums[i] <= limit into idx (room for n) and returns how many. */
    size_t (*below4)(const uint16_t *restrict sums, size_t n, uint16_t limit, uint32_t *restrict idx);
    /** ck_pq_quantize_table4 at this level: the same bytes, scale and bias at every level (the
     *  per-sub-space minima and ranges are exact, the mins are summed in order, and the
     *  conversion rounds to nearest even as the serial code does). */
    ck_status (*quantize4)(const float *restrict table, size_t M, uint8_t *restrict qtable, float *scale, float *bias);
} ck_pq_kernels;

const ck_pq_kernels *ck_pq_kernels_for(ck_isa level);

/** Sub-quantizer count rounded up to even (the packed layout works on pairs). */
size_t ck_pq_padded_m4(size_t M);
/** Bytes of the packed layout for n vectors: ceil(n / 32) blocks of 16 * m_pad bytes. */
size_t ck_pq_packed_bytes4(size_t n, size_t M);
/** Packs n x M 4-bit codes (one per byte, values < 16) into blocks of 32 vectors. Within a
 *  block, sub-quantizer pair (m, m+1) takes 32 bytes: byte j (j < 16) holds vector j's code in
 *  its low nibble and vector j+16's in its high nibble for sub-quantizer m; bytes 16..31 the same
 *  for m+1. Padding vectors and sub-quantizers are zero. Returns CK_ERR_ARGUMENT on a code >= 16. */
ck_status ck_pq_pack4(const uint8_t *restrict codes, size_t n, size_t M, uint8_t *restrict packed);
/** Quantizes an (M, 16) float table to uint8 (m_pad x 16, padding rows zero): per sub-space
 *  minimum removed, one global scale 255 / max range. Distance ~= *bias + acc / *scale.
 *  Returns CK_ERR_NAN on a non-finite entry, CK_ERR_ARGUMENT if M > 256. */
ck_status ck_pq_quantize_table4(const float *restrict table, size_t M, uint8_t *restrict qtable, float *scale,
                                float *bias);

#ifdef __cplusplus
}
#endif
#endif
