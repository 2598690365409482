#include "ck_vec.h"
#include "ck_internal.h"
#include "ck_simd.h"
#include <string.h>
#if CK_X86
#define TGT       __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c,sse4.2,pclmul")))
#define SFX       avx512
#define CK_VEC512 1
#include "vec_simd.inc"
const ck_vec_kernels ck_vec_avx512 = {l2_f32_avx512, ip_f32_avx512, l2_f16_avx512,  ip_f16_avx512,
                                      crc32c_avx512, to_f16_avx512, sub_f16_avx512, from_f16_avx512};
#endif
