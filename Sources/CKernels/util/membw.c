#include "ck_membw.h"
#include "ck_internal.h"

#if CK_X86
CK_TARGET_AVX512 static float read_avx512(const float *x, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; i < n; i++) s += x[i];
    return s;
}
CK_TARGET_AVX2 static float read_avx2(const float *x, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
    }
    __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    float buf[8];
    _mm256_storeu_ps(buf, a);
    float s = 0;
    for (int j = 0; j < 8; j++) s += buf[j];
    for (; i < n; i++) s += x[i];
    return s;
}

/* 16 accumulators cover the latency x throughput of the dot instruction on every core in use
 * (latency 4-5 cycles, up to 2 per cycle on 512-bit registers); the inputs are read through a
 * volatile so the compiler cannot fold the loop, and the sum is returned through one. */
CK_TARGET_AVX512 static uint64_t dot_peak_avx512(size_t iters) {
    volatile int8_t seed = 1;
    __m512i u = _mm512_set1_epi8(seed), s = _mm512_set1_epi8((int8_t)(seed + 1));
    __m512i a[16];
    for (int j = 0; j < 16; j++) a[j] = _mm512_setzero_si512();
    for (size_t i = 0; i < iters; i++) {
        for (int j = 0; j < 16; j++) a[j] = _mm512_dpbusd_epi32(a[j], u, s);
    }
    __m512i t = a[0];
    for (int j = 1; j < 16; j++) t = _mm512_add_epi32(t, a[j]);
    volatile int sink = _mm512_reduce_add_epi32(t);
    (void)sink;
    return (uint64_t)iters * 16 * 64;
}
CK_TARGET_AVX2 static uint64_t dot_peak_avx2(size_t iters) {
    volatile int8_t seed = 1;
    __m256i u = _mm256_set1_epi8(seed), s = _mm256_set1_epi8((int8_t)(seed + 1)), ones = _mm256_set1_epi16(1);
    __m256i a[16];
    for (int j = 0; j < 16; j++) a[j] = _mm256_setzero_si256();
    for (size_t i = 0; i < iters; i++) {
        for (int j = 0; j < 16; j++) a[j] = _mm256_add_epi32(a[j], _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones));
    }
    __m256i t = a[0];
    for (int j = 1; j < 16; j++) t = _mm256_add_epi32(t, a[j]);
    int buf[8];
    _mm256_storeu_si256((__m256i *)buf, t);
    volatile int sink = buf[0];
    (void)sink;
    return (uint64_t)iters * 16 * 32;
}
#endif

uint64_t ck_membw_int8_dot_peak(size_t iters, int *width) {
#if CK_X86
    if (ck_isa_supported(CK_ISA_AVX512)) {
        *width = 512;
        return dot_peak_avx512(iters);
    }
    if (ck_isa_supported(CK_ISA_AVX2)) {
        *width = 256;
        return dot_peak_avx2(iters);
    }
#endif
    (void)iters;
    *width = 0; /* no SIMD level: there is no int8 dot instruction to measure */
    return 0;
}

float ck_membw_stream_read_f32(const float *x, size_t n) {
#if CK_X86
    if (ck_isa_supported(CK_ISA_AVX512)) return read_avx512(x, n);
    if (ck_isa_supported(CK_ISA_AVX2)) return read_avx2(x, n);
#endif
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++) s0 += x[i];
    return s0 + s1 + s2 + s3;
}
