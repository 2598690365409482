#include "ck_hamming.h"
#include "ck_topk.h"
#include "ck_internal.h"

/* Portable SWAR popcount (no POPCNT instruction assumed): the reference. */
static inline uint32_t popcount64_serial(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (uint32_t)((x * 0x0101010101010101ull) >> 56);
}

static inline uint32_t ham_serial(const uint64_t *a, const uint64_t *b, size_t words) {
    uint32_t s = 0;
    for (size_t w = 0; w < words; w++) s += popcount64_serial(a[w] ^ b[w]);
    return s;
}

void ck_hamming_dist_1xn_serial(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n, size_t words,
                                uint32_t *restrict out) {
    for (size_t i = 0; i < n; i++) out[i] = ham_serial(q, codes + i * words, words);
}

void ck_hamming_dist_mxn_serial(const uint64_t *restrict q, size_t m, const uint64_t *restrict codes, size_t n,
                                size_t words, uint32_t *restrict out) {
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) out[i * n + j] = ham_serial(q + i * words, codes + j * words, words);
}

void ck_hamming_weighted_1xn_serial(const uint64_t *restrict q, const uint64_t *restrict codes, size_t n, size_t words,
                                    size_t levels, const float *restrict w, float *restrict out) {
    for (size_t i = 0; i < n; i++) {
        float s = 0;
        const uint64_t *c = codes + i * words * levels;
        for (size_t l = 0; l < levels; l++) s += w[l] * (float)ham_serial(q + l * words, c + l * words, words);
        out[i] = s;
    }
}

const ck_hamming_kernels ck_hamming_serial = {
    ck_hamming_dist_1xn_serial,
    ck_hamming_dist_mxn_serial,
    ck_hamming_weighted_1xn_serial,
};

CK_DEFINE_KERNELS_FOR(hamming)

size_t ck_hamming_topk(const ck_hamming_kernels *kern, const uint64_t *restrict q, const uint64_t *restrict codes,
                       size_t n, size_t words, size_t k, uint32_t *restrict scratch, uint32_t *restrict out_d,
                       int64_t *restrict out_id) {
    size_t size = 0;
    for (size_t start = 0; start < n; start += CK_HAMMING_TOPK_BLOCK) {
        size_t len = ck_min_sz(CK_HAMMING_TOPK_BLOCK, n - start);
        kern->dist_1xn(q, codes + start * words, len, words, scratch);
        size = ck_topk_push_u32(out_d, out_id, size, k, scratch, len, (int64_t)start);
    }
    ck_topk_sort_u32(out_d, out_id, size);
    return size;
}
