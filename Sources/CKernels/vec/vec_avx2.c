#include "ck_vec.h"
#include "ck_internal.h"
#include "ck_simd.h"
#include <string.h>
#if CK_X86
#define TGT __attribute__((target("avx2,fma,f16c,sse4.2,pclmul")))
#define SFX avx2
#include "vec_simd.inc"
const ck_vec_kernels ck_vec_avx2 = {l2_f32_avx2, ip_f32_avx2, l2_f16_avx2,  ip_f16_avx2,
                                    crc32c_avx2, to_f16_avx2, sub_f16_avx2, from_f16_avx2};
#endif
