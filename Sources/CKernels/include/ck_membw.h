/* ck_membw.h — machine-limit probes: a streaming read of a buffer, the "read bandwidth" that
 * bandwidth-bound kernels are compared with, and the int8 dot-product peak that compute-bound
 * int8 kernels are compared with. */
#ifndef CK_MEMBW_H
#define CK_MEMBW_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif
/** Sum of n floats (8 independent vector accumulators, widest ISA available); used only for
 *  its memory traffic, the result keeps the loads alive. */
float ck_membw_stream_read_f32(const float *x, size_t n);
/** Runs `iters` rounds of 16 independent unsigned x signed int8 dot-product accumulations in
 *  registers at the widest level the process may use (AVX-512 VNNI: vpdpbusd on 512-bit
 *  registers, 64 multiply-adds each; AVX2: vpmaddubsw + vpmaddwd + vpaddd on 256-bit ones, 32)
 *  and returns the number of int8 multiply-adds done. Timing it gives the core's int8
 *  multiply-add peak; *width receives the register width in bits. Scalar level: returns 0, width
 *  0 (no instruction to measure). */
uint64_t ck_membw_int8_dot_peak(size_t iters, int *width);
#ifdef __cplusplus
}
#endif
#endif
