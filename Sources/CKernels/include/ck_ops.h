/* ck_ops.h — element-wise and row operations of transformer layers.
 *
 * gelu_erf: x <- 0.5 x (1 + erf(x / sqrt 2)) in place (the exact GELU of BERT). The SIMD levels
 *   use erf from Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7) with the vectorised exp; the
 *   serial reference uses libm erff.
 * layernorm: each of `rows` rows of d values <- (x - mean) / sqrt(var + eps) * g + b, in place;
 *   mean and variance accumulated in f32 (two passes).
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
} ck_ops_kernels;

const ck_ops_kernels *ck_ops_kernels_for(ck_isa level);

#ifdef __cplusplus
}
#endif
#endif
