/* Binary max-heap keyed by (distance, id): the root is the worst of the k kept. */
#include "ck_topk.h"
#include <math.h>

#define CK_DEFINE_TOPK(SUFFIX, T)                                                                                      \
    static inline int worse_##SUFFIX(T da, int64_t ia, T db, int64_t ib) {                                             \
        return da > db || (da == db && ia > ib);                                                                       \
    }                                                                                                                  \
    static void sift_down_##SUFFIX(T *hd, int64_t *hi, size_t size, size_t i) {                                        \
        for (;;) {                                                                                                     \
            size_t l = 2 * i + 1, r = l + 1, w = i;                                                                    \
            if (l < size && worse_##SUFFIX(hd[l], hi[l], hd[w], hi[w])) w = l;                                         \
            if (r < size && worse_##SUFFIX(hd[r], hi[r], hd[w], hi[w])) w = r;                                         \
            if (w == i) return;                                                                                        \
            T td = hd[i];                                                                                              \
            hd[i] = hd[w];                                                                                             \
            hd[w] = td;                                                                                                \
            int64_t ti = hi[i];                                                                                        \
            hi[i] = hi[w];                                                                                             \
            hi[w] = ti;                                                                                                \
            i = w;                                                                                                     \
        }                                                                                                              \
    }                                                                                                                  \
    static size_t push1_##SUFFIX(T *hd, int64_t *hi, size_t size, size_t k, T d, int64_t id) {                         \
        if (k == 0) return 0;                                                                                          \
        if (size < k) {                                                                                                \
            size_t i = size++;                                                                                         \
            hd[i] = d;                                                                                                 \
            hi[i] = id;                                                                                                \
            while (i > 0) {                                                                                            \
                size_t p = (i - 1) / 2;                                                                                \
                if (!worse_##SUFFIX(hd[i], hi[i], hd[p], hi[p])) break;                                                \
                T td = hd[i];                                                                                          \
                hd[i] = hd[p];                                                                                         \
                hd[p] = td;                                                                                            \
                int64_t ti = hi[i];                                                                                    \
                hi[i] = hi[p];                                                                                         \
                hi[p] = ti;                                                                                            \
                i = p;                                                                                                 \
            }                                                                                                          \
            return size;                                                                                               \
        }                                                                                                              \
        if (!worse_##SUFFIX(hd[0], hi[0], d, id)) return size;                                                         \
        hd[0] = d;                                                                                                     \
        hi[0] = id;                                                                                                    \
        sift_down_##SUFFIX(hd, hi, size, 0);                                                                           \
        return size;                                                                                                   \
    }                                                                                                                  \
    void ck_topk_sort_##SUFFIX(T *hd, int64_t *hi, size_t size) {                                                      \
        /* heap sort: repeatedly move the worst to the end */                                                          \
        while (size > 1) {                                                                                             \
            size--;                                                                                                    \
            T td = hd[0];                                                                                              \
            hd[0] = hd[size];                                                                                          \
            hd[size] = td;                                                                                             \
            int64_t ti = hi[0];                                                                                        \
            hi[0] = hi[size];                                                                                          \
            hi[size] = ti;                                                                                             \
            sift_down_##SUFFIX(hd, hi, size, 0);                                                                       \
        }                                                                                                              \
    }

CK_DEFINE_TOPK(f32, float)
CK_DEFINE_TOPK(u32, uint32_t)

size_t ck_topk_push1_f32(float *hd, int64_t *hi, size_t size, size_t k, float d, int64_t id) {
    if (isnan(d)) return size;
    return push1_f32(hd, hi, size, k, d, id);
}

size_t ck_topk_push_f32(float *hd, int64_t *hi, size_t size, size_t k, const float *d, size_t n, int64_t base) {
    for (size_t i = 0; i < n; i++) {
        if (isnan(d[i])) continue;
        /* fast reject once the heap is full: most candidates are worse than the root */
        if (size == k && (d[i] > hd[0] || k == 0)) continue;
        size = push1_f32(hd, hi, size, k, d[i], base + (int64_t)i);
    }
    return size;
}

size_t ck_topk_push_u32(uint32_t *hd, int64_t *hi, size_t size, size_t k, const uint32_t *d, size_t n, int64_t base) {
    for (size_t i = 0; i < n; i++) {
        if (size == k && (k == 0 || d[i] > hd[0])) continue;
        size = push1_u32(hd, hi, size, k, d[i], base + (int64_t)i);
    }
    return size;
}
