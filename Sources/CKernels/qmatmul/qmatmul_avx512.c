#include "ck_qmatmul.h"
#include "ck_internal.h"
#include "ck_simd.h"
#if CK_X86
#define TGT                 CK_TARGET_AVX512
#define SFX(name)           name##_avx512
#define CK_VEC512           1
#define DOT_U8S8(acc, u, s) acc = _mm256_dpbusd_epi32(acc, u, s)
#include "qmatmul_simd.inc"
#endif
