/* CPU feature detection (once) and the CK_ISA override. */
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include "ck_internal.h"

#if CK_X86
#include <cpuid.h>
#endif

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static ck_isa g_detected = CK_ISA_SCALAR;
static ck_isa g_selected = CK_ISA_SCALAR;
static ck_status g_env_status = CK_OK;
static char g_features[256];

#if CK_X86
static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}
#endif

static void append(const char *name, int have) {
    if (!have) return;
    size_t len = strlen(g_features);
    if (len + strlen(name) + 2 >= sizeof g_features) return;
    if (len) {
        g_features[len++] = ' ';
        g_features[len] = 0;
    }
    strcat(g_features, name);
}

static void detect(void) {
    g_features[0] = 0;
#if CK_X86
    unsigned a, b, c, d;
    int popcnt = 0, avx = 0, fma = 0, f16c = 0, osavx = 0, osavx512 = 0, sse42 = 0, pclmul = 0;
    int avx2 = 0, bmi2 = 0, f = 0, bw = 0, vl = 0, dq = 0, vpopcnt = 0, vnni = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        popcnt = (c >> 23) & 1;
        sse42 = (c >> 20) & 1; /* crc32 */
        pclmul = (c >> 1) & 1; /* carry-less multiply: CRC stream combination */
        fma = (c >> 12) & 1;
        f16c = (c >> 29) & 1;
        avx = (c >> 28) & 1;
        int osxsave = (c >> 27) & 1;
        if (osxsave) {
            uint64_t xcr0 = xgetbv0();
            osavx = (xcr0 & 0x6) == 0x6;      /* XMM and YMM state */
            osavx512 = (xcr0 & 0xe6) == 0xe6; /* plus opmask, ZMM_Hi256, Hi16_ZMM */
        }
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        avx2 = (b >> 5) & 1;
        bmi2 = (b >> 8) & 1;
        f = (b >> 16) & 1;
        dq = (b >> 17) & 1;
        bw = (b >> 30) & 1;
        vl = (b >> 31) & 1;
        vnni = (c >> 11) & 1;
        vpopcnt = (c >> 14) & 1;
    }
    append("popcnt", popcnt);
    append("sse4.2", sse42);
    append("pclmul", pclmul);
    append("avx", avx && osavx);
    append("avx2", avx2 && osavx);
    append("fma", fma && osavx);
    append("f16c", f16c && osavx);
    append("bmi2", bmi2);
    append("avx512f", f && osavx512);
    append("avx512bw", bw && osavx512);
    append("avx512vl", vl && osavx512);
    append("avx512dq", dq && osavx512);
    append("avx512vpopcntdq", vpopcnt && osavx512);
    append("avx512vnni", vnni && osavx512);
    if (avx && osavx && avx2 && fma && f16c && popcnt && bmi2 && sse42 && pclmul) g_detected = CK_ISA_AVX2;
    if (g_detected == CK_ISA_AVX2 && osavx512 && f && bw && vl && dq && vpopcnt && vnni) g_detected = CK_ISA_AVX512;
#endif
    g_selected = g_detected;
    const char *env = getenv("CK_ISA");
    if (env && *env) {
        ck_isa want;
        if (strcmp(env, "scalar") == 0)
            want = CK_ISA_SCALAR;
        else if (strcmp(env, "avx2") == 0)
            want = CK_ISA_AVX2;
        else if (strcmp(env, "avx512") == 0)
            want = CK_ISA_AVX512;
        else {
            g_env_status = CK_ERR_ARGUMENT;
            return;
        }
        if (want > g_detected) {
            g_env_status = CK_ERR_ISA;
            return;
        }
        g_selected = want;
    }
}

ck_isa ck_isa_detected(void) {
    pthread_once(&g_once, detect);
    return g_detected;
}
bool ck_isa_supported(ck_isa level) {
    return level <= ck_isa_detected();
}
ck_isa ck_isa_selected(void) {
    pthread_once(&g_once, detect);
    return g_selected;
}
ck_status ck_isa_env_status(void) {
    pthread_once(&g_once, detect);
    return g_env_status;
}
const char *ck_cpu_features(void) {
    pthread_once(&g_once, detect);
    return g_features;
}

const char *ck_isa_name(ck_isa level) {
    switch (level) {
    case CK_ISA_SCALAR:
        return "scalar";
    case CK_ISA_AVX2:
        return "avx2";
    case CK_ISA_AVX512:
        return "avx512";
    }
    return "unknown";
}
