#include "ck_qmatmul.h"
#include "ck_internal.h"
#include "ck_simd.h"
#if CK_X86
#define TGT       CK_TARGET_AVX2
#define SFX(name) name##_avx2
#define CK_VEC512 0
/* u8 x s8 pairs to int16 (no overflow: |u| <= 128, |s| <= 127, 2*128*127 < 32767), then to int32 */
#define DOT_U8S8(acc, u, s)                                                                                            \
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#include "qmatmul_simd.inc"
#endif
