#include <cblas.h>
#include <dlfcn.h>
#include <lapacke.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include "ck_blas.h"
#include "ck_internal.h"

/* OpenBLAS extensions (declared here so that the header of any CBLAS works). */
extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);

/* Kernel tables OpenBLAS (DYNAMIC_ARCH) falls back to when its CPUID table does not know a CPU,
 * or picks for CPUs older than AVX2: SSE-era kernels. */
static const char *const sse_cores[] = {"Prescott", "Core2",        "Penryn",     "Dunnington", "Nehalem",
                                        "Atom",     "Katmai",       "Coppermine", "Northwood",  "Banias",
                                        "Opteron",  "Opteron_SSE3", "Barcelona",  "Bobcat",     "Nano"};

const char *ck_blas_core_fix(const char *current, ck_isa isa) {
    if (!current) return NULL;
    bool sse = false;
    for (size_t i = 0; i < sizeof sse_cores / sizeof *sse_cores; i++)
        if (strcasecmp(current, sse_cores[i]) == 0) sse = true;
    if (!sse) return NULL;
    if (isa >= CK_ISA_AVX512) return "SkylakeX"; /* F, BW, DQ, VL: implied by the avx512 level */
    if (isa >= CK_ISA_AVX2) return "Haswell";    /* AVX2 + FMA */
    return NULL;
}

const char *ck_blas_corename(void) {
    const char *c = openblas_get_corename();
    return c ? c : "";
}

ck_status ck_blas_select_core(const char *name) {
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (!name || !quit || !init) return CK_ERR_ARGUMENT; /* not a DYNAMIC_ARCH build */
    /* OpenBLAS reads OPENBLAS_CORETYPE when it selects; the caller's value is put back after. */
    const char *prev = getenv("OPENBLAS_CORETYPE");
    char *saved = prev ? strdup(prev) : NULL;
    setenv("OPENBLAS_CORETYPE", name, 1);
    quit();
    init();
    if (saved) {
        setenv("OPENBLAS_CORETYPE", saved, 1);
        free(saved);
    } else {
        unsetenv("OPENBLAS_CORETYPE");
    }
    return strcasecmp(ck_blas_corename(), name) == 0 ? CK_OK : CK_ERR_ISA;
}

static pthread_once_t core_once = PTHREAD_ONCE_INIT;
static char core_note[160];

static void fix_core(void) {
    if (getenv("OPENBLAS_CORETYPE")) return; /* the user chose */
    char was[32];
    snprintf(was, sizeof was, "%s", ck_blas_corename());
    const char *want = ck_blas_core_fix(was, ck_isa_detected());
    if (!want) return;
    if (ck_blas_select_core(want) == CK_OK)
        snprintf(core_note, sizeof core_note, "switched from %s, which OpenBLAS chose for this CPU, to %s", was, want);
    else
        snprintf(core_note, sizeof core_note, "could not switch from %s to %s: slow SSE kernels in use", was, want);
}

const char *ck_blas_core_note(void) {
    pthread_once(&core_once, fix_core);
    return core_note;
}

/* Every entry point makes sure the kernel table is fixed before OpenBLAS computes anything. */
#define CK_BLAS_READY() pthread_once(&core_once, fix_core)

void ck_blas_sgemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    CK_BLAS_READY();
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (blasint)m,
                (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void ck_blas_sgemv(bool trans, size_t m, size_t n, float alpha, const float *a, size_t lda, const float *x, float beta,
                   float *y) {
    CK_BLAS_READY();
    cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, alpha, a, (blasint)lda, x, 1,
                beta, y, 1);
}

ck_status ck_blas_qr_f64(size_t m, size_t n, double *a, size_t lda, double *r, double *tau) {
    CK_BLAS_READY();
    if (m < n || n == 0 || lda < n) return CK_ERR_ARGUMENT;
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, a, (lapack_int)lda, tau);
    if (info != 0) return CK_ERR_LAPACK;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) r[i * n + j] = j >= i ? a[i * lda + j] : 0.0;
    info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, (lapack_int)n, a, (lapack_int)lda, tau);
    return info == 0 ? CK_OK : CK_ERR_LAPACK;
}

ck_status ck_blas_svd(size_t m, size_t n, float *a, size_t lda, float *s, float *u, float *vt) {
    CK_BLAS_READY();
    if (m == 0 || n == 0 || lda < n) return CK_ERR_ARGUMENT;
    size_t k = m < n ? m : n;
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, a, (lapack_int)lda, s, u,
                                     (lapack_int)k, vt, (lapack_int)n);
    return info == 0 ? CK_OK : CK_ERR_LAPACK;
}

int ck_blas_park_threads(void) {
    // blas_thread_shutdown_ is what OpenBLAS's own fork handler calls; exec_blas starts the pool
    // again when it finds it down (blas_server_avail == 0), as in a child after fork
    int (*shutdown)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
    if (!shutdown) return 0;
    shutdown();
    return 1;
}

void ck_blas_set_threads(int n) {
    CK_BLAS_READY();
    openblas_set_num_threads(n < 1 ? 1 : n);
}
int ck_blas_threads(void) {
    return openblas_get_num_threads();
}
const char *ck_blas_config(void) {
    CK_BLAS_READY();
    return openblas_get_config();
}
