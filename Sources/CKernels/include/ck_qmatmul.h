/* ck_qmatmul.h — quantized rows: block formats, quantization, dot products and GEMV.
 *
 * Blocks hold CK_QK = 32 consecutive values of a row. Layouts are bit-compatible with GGUF
 * (ggml) Q8_0, Q4_0 and Q4_1; Q2_1 is Engine's own 2-bit format for KV caches.
 *   Q8_0: { fp16 d; int8 q[32] }            x_j = d * q_j
 *   Q4_0: { fp16 d; uint8 qs[16] }          x_j = d * (nib_j - 8); nib_j = qs[j] & 15 (j < 16),
 *                                            qs[j-16] >> 4 (j >= 16)
 *   Q4_1: { fp16 d; fp16 m; uint8 qs[16] }  x_j = d * nib_j + m (same nibble order)
 *   Q2_1: { fp16 d; fp16 m; uint8 qs[8] }   x_j = d * c_j + m; c_j = (qs[j % 8] >> (2 * (j / 8))) & 3
 * Rows of type F32 and F16 (plain arrays) are accepted wherever a row type is, so one attention
 * kernel serves dense and quantized KV caches.
 *
 * Two numerics:
 *  - exact activations (`dot_rows_f32`): f32 activations times weights dequantized in registers;
 *    equals dequantize-then-dot up to float rounding (accumulation in f32, per-block partial sums).
 *  - int8 activations (`dot_rows_q8a`): activations quantized once per 32-block to int8 with an
 *    f32 scale (ck_block_q8a, as llama.cpp's Q8 activations); integer dot per block (exact, int32
 *    cannot overflow: 32 * 128 * 255 < 2^31), then scaled in f32. Error = activation quantization
 *    (|x - x'| <= d_a / 2 per element) plus f32 rounding.
 */
#ifndef CK_QMATMUL_H
#define CK_QMATMUL_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif

#define CK_QK 32

typedef struct ck_block_q8_0 {
    uint16_t d;
    int8_t qs[CK_QK];
} ck_block_q8_0;
typedef struct ck_block_q4_0 {
    uint16_t d;
    uint8_t qs[CK_QK / 2];
} ck_block_q4_0;
typedef struct ck_block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[CK_QK / 2];
} ck_block_q4_1;
typedef struct ck_block_q2_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[CK_QK / 4];
} ck_block_q2_1;
/** Activation block: q in [-127, 127], x_j ~= d * q_j; dsum = d * sum_j q_j (the integer sum is
 * exact, the product rounded once), kept as a float so the min/offset correction of 4- and 2-bit
 * weight blocks costs one multiply-add per block instead of a conversion and two multiplies. */
typedef struct ck_block_q8a {
    float d;
    float dsum;
    int8_t qs[CK_QK];
} ck_block_q8a;

/** Activation block with a scale per half (16 values), read by the interleaved 4-bit kernels:
 * x_j ~= d[j / 16] * q_j, q in [-127, 127]; dsum = d[0] * s0 + d[1] * s1 with s0, s1 the integer
 * sums of the halves (each product rounded, then their sum). Half blocks keep one large
 * activation from coarsening the step of 31 others: on SmolLM2 this halves the logit error of
 * int8 activations (docs/benchmarks.md). */
typedef struct ck_block_q8h {
    float d[2];
    float dsum;
    int8_t qs[CK_QK];
} ck_block_q8h;

_Static_assert(sizeof(ck_block_q8_0) == 34, "Q8_0 block must be 34 bytes (GGUF)");
_Static_assert(sizeof(ck_block_q4_0) == 18, "Q4_0 block must be 18 bytes (GGUF)");
_Static_assert(sizeof(ck_block_q4_1) == 20, "Q4_1 block must be 20 bytes (GGUF)");
_Static_assert(sizeof(ck_block_q2_1) == 12, "Q2_1 block must be 12 bytes");
_Static_assert(sizeof(ck_block_q8a) == 40, "Q8A block must be 40 bytes");
_Static_assert(sizeof(ck_block_q8h) == 44, "Q8H block must be 44 bytes");

/** Row element types. */
typedef enum ck_rtype {
    CK_RT_F32 = 0,
    CK_RT_F16 = 1,
    CK_RT_Q8_0 = 2,
    CK_RT_Q4_0 = 3,
    CK_RT_Q4_1 = 4,
    CK_RT_Q2_1 = 5,
} ck_rtype;

/** Bytes taken by n values of type t (n a multiple of 32 for block types), or 0 if invalid. */
size_t ck_qmatmul_row_bytes(ck_rtype t, size_t n);
/** True for the block (quantized) types. */
bool ck_qmatmul_is_quantized(ck_rtype t);

typedef struct ck_qmatmul_kernels {
    /** Quantizes n floats (n % 32 == 0 for block types) into `out` of type t. */
    void (*quantize)(ck_rtype t, const float *restrict x, size_t n, void *restrict out);
    /** Dequantizes n values of type t. */
    void (*dequantize)(ck_rtype t, const void *restrict in, size_t n, float *restrict out);
    /** Quantizes n floats (n % 32 == 0) into n/32 activation blocks. */
    void (*quantize_q8a)(const float *restrict x, size_t n, ck_block_q8a *restrict out);
    /** y[q*ldy + r] = dot(row r, x_q) for r < rows, q < nq; row r starts at (char*)w + r*stride;
     *  x is nq x n (row-major, stride n). Exact-activation numerics. */
    void (*dot_rows_f32)(ck_rtype t, const void *restrict w, size_t rows, size_t n, size_t stride,
                         const float *restrict x, size_t nq, float *restrict y, size_t ldy);
    /** Same with int8 activations: a is nq x (n/32) blocks. t must be a quantized type. */
    void (*dot_rows_q8a)(ck_rtype t, const void *restrict w, size_t rows, size_t n, size_t stride,
                         const ck_block_q8a *restrict a, size_t nq, float *restrict y, size_t ldy);
    /** out[q*n + j] += sum_r p[q*ldp + r] * row_r[j]: weighted sum of rows (attention's P V). */
    void (*wsum_rows)(ck_rtype t, const void *restrict w, size_t rows, size_t n, size_t stride, const float *restrict p,
                      size_t ldp, size_t nq, float *restrict out);
    /** Quantizes n floats (n % 32 == 0) into n/32 half-scaled activation blocks (identical
     *  bytes at every level: lrint of x * (127 / amax) per half, nearest even). */
    void (*quantize_q8h)(const float *restrict x, size_t n, ck_block_q8h *restrict out);
    /** int8-activation products of interleaved 4-bit rows (see ck_qmatmul_x8_pack): `groups`
     *  groups of 8 rows packed back to back from `w`; y[q*ldy + 8*g + i] = row 8g+i . a_q for
     *  q < nq (a is nq x (n/32) blocks). t is CK_RT_Q4_0 or CK_RT_Q4_1. Every level computes
     *  exactly the same floats: per row and block, with i0 / i1 the integer dots of the halves,
     *  acc = fma(i0, d_w * d_a[0], acc), acc = fma(i1, d_w * d_a[1], acc) and
     *  corr = fma(m_w, dsum_a, corr) (Q4_0: fma(d_w, -8 dsum_a, corr)); y = acc + corr. */
    void (*dot_x8_q8h)(ck_rtype t, const void *restrict w, size_t groups, size_t n, const ck_block_q8h *restrict a,
                       size_t nq, float *restrict y, size_t ldy);
} ck_qmatmul_kernels;

/** Interleaved 4-bit rows ("x8"), the decode layout of Q4_0/Q4_1 weights (built at load; the
 *  bytes are a permutation of 8 rows' blocks, same total size). Rows come in groups of 8; group
 *  block b (all 8 rows' block b) is
 *    Q4_0: fp16 d[8];            uint8 qs[128]
 *    Q4_1: fp16 d[8]; fp16 m[8]; uint8 qs[128]
 *  where qs[32c + 4i + k] = byte 4c + k of row i's block (c < 4, k < 4): one 32-byte load holds
 *  four consecutive nibble bytes of each of the 8 rows, so a SIMD lane is a row and its low
 *  nibbles meet activations 4c..4c+3, its high nibbles 16+4c..16+4c+3. */
size_t ck_qmatmul_x8_group_bytes(ck_rtype t, size_t n);
/** Packs `rows` (a multiple of 8) rows of type t (Q4_0/Q4_1), row r at (char*)w + r*stride,
 *  into rows/8 groups at `out` (rows/8 * ck_qmatmul_x8_group_bytes bytes). */
ck_status ck_qmatmul_x8_pack(ck_rtype t, const void *restrict w, size_t rows, size_t n, size_t stride,
                             void *restrict out);
/** Row r of a packed matrix back in the plain block layout (row_bytes(t, n) bytes at `out`). */
ck_status ck_qmatmul_x8_unpack_row(ck_rtype t, const void *restrict packed, size_t n, size_t r, void *restrict out);

const ck_qmatmul_kernels *ck_qmatmul_kernels_for(ck_isa level);

#ifdef __cplusplus
}
#endif
#endif
