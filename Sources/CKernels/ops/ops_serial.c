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

static const ck_ops_kernels k_serial = {ck_ops_gelu_erf_serial, ck_ops_layernorm_serial};

#if CK_X86
extern const ck_ops_kernels ck_ops_avx2, ck_ops_avx512;
#endif

const ck_ops_kernels *ck_ops_kernels_for(ck_isa level) {
    if (!ck_isa_supported(level)) return NULL;
    switch (level) {
    case CK_ISA_SCALAR:
        return &k_serial;
#if CK_X86
    case CK_ISA_AVX2:
        return &ck_ops_avx2;
    case CK_ISA_AVX512:
        return &ck_ops_avx512;
#else
    default:
        return NULL;
#endif
    }
    return NULL;
}
