/* ck_membw.h — machine-limit probe: a streaming read of a buffer, the "read bandwidth" that
 * bandwidth-bound kernels are compared with. */
#ifndef CK_MEMBW_H
#define CK_MEMBW_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif
/** Sum of n floats (8 independent vector accumulators, widest ISA available); used only for
 *  its memory traffic, the result keeps the loads alive. */
float ck_membw_stream_read_f32(const float *x, size_t n);
#ifdef __cplusplus
}
#endif
#endif
