#include "ck_ops.h"
#include "ck_internal.h"

void ck_ops_gelu_erf_serial(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void ck_ops_layernorm_serial(float *x, size_t rows, size_t d, const float *g, const float *b, float eps) {
    for (size_t r = 0; r < rows; r++) {
        float *v = x + r * d;
        float mean = 0;
        for (size_t j = 0; j < d; j++) mean += v[j];
        mean /= (float)d;
        float var = 0;
        for (size_t j = 0; j < d; j++) {
            float z = v[j] - mean;
            var += z * z;
        }
        float inv = 1.0f / sqrtf(var / (float)d + eps);
        for (size_t j = 0; j < d; j++) v[j] = (v[j] - mean) * inv * g[j] + b[j];
    }
}

void ck_ops_rmsnorm_serial(const float *x, float *y, size_t rows, size_t d, const float *g, float eps) {
    for (size_t r = 0; r < rows; r++) {
        const float *v = x + r * d;
        float ss = 0;
        for (size_t j = 0; j < d; j++) ss += v[j] * v[j];
        float inv = 1.0f / sqrtf(ss / (float)d + eps);
        for (size_t j = 0; j < d; j++) y[r * d + j] = v[j] * inv * g[j];
    }
}

void ck_ops_rope_serial(float *x, size_t rows, size_t heads, size_t head_dim, size_t row_stride, const float *cos,
                        const float *sin) {
    size_t half = head_dim / 2;
    for (size_t r = 0; r < rows; r++) {
        for (size_t i = 0; i < half; i++) {
            float c = cos[r * half + i], s = sin[r * half + i];
            for (size_t h = 0; h < heads; h++) {
                float *p = x + r * row_stride + h * head_dim + 2 * i;
                float x0 = p[0], x1 = p[1];
                p[0] = x0 * c - x1 * s;
                p[1] = x0 * s + x1 * c;
            }
        }
    }
}

void ck_ops_silu_mul_serial(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

const ck_ops_kernels ck_ops_serial = {ck_ops_gelu_erf_serial, ck_ops_layernorm_serial, ck_ops_rmsnorm_serial,
                                      ck_ops_rope_serial, ck_ops_silu_mul_serial};

CK_DEFINE_KERNELS_FOR(ops)
