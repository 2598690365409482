/* ck_ops.h — element-wise and row operations of transformer layers.
 *
 * gelu_erf: x <- 0.5 x (1 + erf(x / sqrt 2)) in place (the exact GELU of BERT). The SIMD levels
 *   use erf from Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7) with the vectorised exp; the
 *   serial reference uses libm erff.
 * layernorm: each of `rows` rows of d values <- (x - mean) / sqrt(var + eps) * g + b, in place;
 *   mean and variance accumulated in f32 (two passes).
 * rmsnorm: each of `rows` rows of d values of x -> y = x / sqrt(mean(x^2) + eps) * g (out of place;
 *   x and y must not overlap). Sum of squares in f32: relative error <= d u of the sum.
 * rope: rotary position embedding on adjacent pairs (2i, 2i+1) of every head, in place: for row r
 *   (stride `row_stride` floats) and head h, (x0, x1) <- (x0 c - x1 s, x0 s + x1 c) with
 *   c = cos[r * head_dim / 2 + i], s = sin[...] (the caller computes the angles, so the kernel
 *   holds no trigonometry; GGUF stores Llama q/k in this pairing). Error: one rounding of each
 *   product and sum (the SIMD levels fuse them: <= 2 u |x|).
 * silu_mul: g <- g / (1 + exp(-g)) * u (SwiGLU's gate), in place on g. SIMD levels use the
 *   vectorised exp (relative error ~2 u), the serial reference libm expf.
 * The AVX-512 level reuses the AVX2 bodies: these are a small share of a layer's time.
 */
#ifndef CK_OPS_H
#define CK_OPS_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif

typedef struct ck_ops_kernels {
    void (*gelu_erf)(float *x, size_t n);
    void (*layernorm)(float *x, size_t rows, size_t d, const float *g, const float *b, float eps);
    void (*rmsnorm)(const float *x, float *y, size_t rows, size_t d, const float *g, float eps);
    void (*rope)(float *x, size_t rows, size_t heads, size_t head_dim, size_t row_stride, const float *cos,
                 const float *sin);
    void (*silu_mul)(float *g, const float *u, size_t n);
} ck_ops_kernels;

const ck_ops_kernels *ck_ops_kernels_for(ck_isa level);

#ifdef __cplusplus
}
#endif
#endif
