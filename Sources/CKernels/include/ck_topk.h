/* ck_topk.h — streaming selection of the k smallest (distance, id) pairs.
 *
 * The heap arrays (hd, hi) hold up to k entries and are owned by the caller. Push blocks of
 * distances as they are computed, then sort once. Ties are broken by the smaller id, so the
 * result is deterministic and independent of block boundaries. NaN distances are never selected.
 */
#ifndef CK_TOPK_H
#define CK_TOPK_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif

/** Pushes d[0..n) with ids base..base+n-1 into a max-heap of capacity k; returns the new size. */
size_t ck_topk_push_f32(float *hd, int64_t *hi, size_t size, size_t k, const float *d, size_t n, int64_t base);
/** Same, for integer distances. */
size_t ck_topk_push_u32(uint32_t *hd, int64_t *hi, size_t size, size_t k, const uint32_t *d, size_t n, int64_t base);
/** Pushes one pair with an explicit id (for id lists that are not contiguous). */
size_t ck_topk_push1_f32(float *hd, int64_t *hi, size_t size, size_t k, float d, int64_t id);
/** Sorts a heap of `size` entries ascending by (distance, id), in place. */
void ck_topk_sort_f32(float *hd, int64_t *hi, size_t size);
void ck_topk_sort_u32(uint32_t *hd, int64_t *hi, size_t size);

#ifdef __cplusplus
}
#endif
#endif
