#include <cblas.h>
#include <dlfcn.h>
#include <lapacke.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include "ck_blas.h"
#include "ck_internal.h"

/* OpenBLAS and LAPACKE are loaded on the first call that needs them (dlopen), not by the dynamic
 * linker at process start: resolving their ~16,000 symbol relocations against every library the
 * executable links cost 6-11 ms of CPU in each process (Xeon, measured with and without them in
 * the scope), and most commands (index search, serve's search, tokenize) never call BLAS.
 * RTLD_GLOBAL keeps the resolution the linker gave: LAPACK's calls to BLAS find OpenBLAS first.
 * The pointers' types come from the headers, so a signature mismatch does not compile. */
extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);
extern char *openblas_get_config(void);
extern char *openblas_get_corename(void);

static struct {
    __typeof__(cblas_sgemm) *sgemm;
    __typeof__(cblas_sgemv) *sgemv;
    __typeof__(LAPACKE_dgeqrf) *dgeqrf;
    __typeof__(LAPACKE_dorgqr) *dorgqr;
    __typeof__(LAPACKE_sgesdd) *sgesdd;
    __typeof__(openblas_set_num_threads) *set_threads;
    __typeof__(openblas_get_num_threads) *get_threads;
    __typeof__(openblas_get_config) *config;
    __typeof__(openblas_get_corename) *corename;
    void *openblas;
} blas;

static void *open_first(const char *const *names, char *err, size_t err_size) {
    for (size_t i = 0; names[i]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
        if (h) return h;
        const char *e = dlerror();
        snprintf(err, err_size, "%s", e ? e : names[i]);
    }
    return NULL;
}

/* Loads both libraries and every entry point, or reports what is missing and stops the process:
 * an installation without them could not have started before this loader existed (the dynamic
 * linker refused it), and no BLAS caller has a way to go on without a result. */
static void load_blas(void) {
    static const char *const openblas_names[] = {"libopenblas.so.0", "libopenblas.so", NULL};
    static const char *const lapacke_names[] = {"liblapacke.so.3", "liblapacke.so", NULL};
    char err[512] = "";
    void *ob = open_first(openblas_names, err, sizeof err);
    void *lp = ob ? open_first(lapacke_names, err, sizeof err) : NULL;
    if (ob && lp) {
        blas.openblas = ob;
#define SYM(field, lib, name)                                                                                          \
    if (!(*(void **)&blas.field = dlsym(lib, name))) snprintf(err, sizeof err, "%s: no symbol %s", #lib, name);
        SYM(sgemm, ob, "cblas_sgemm")
        SYM(sgemv, ob, "cblas_sgemv")
        SYM(set_threads, ob, "openblas_set_num_threads")
        SYM(get_threads, ob, "openblas_get_num_threads")
        SYM(config, ob, "openblas_get_config")
        SYM(corename, ob, "openblas_get_corename")
        SYM(dgeqrf, lp, "LAPACKE_dgeqrf")
        SYM(dorgqr, lp, "LAPACKE_dorgqr")
        SYM(sgesdd, lp, "LAPACKE_sgesdd")
#undef SYM
    }
    if (!ob || !lp || err[0]) {
        fprintf(stderr,
                "engine: cannot load OpenBLAS / LAPACKE (%s); install libopenblas0 and liblapacke "
                "(scripts/bootstrap.sh does)\n",
                err);
        abort();
    }
}

/* Threads asked for before the libraries load (the CLI sets the pool size at start) are applied
 * when they do; the mutex orders a concurrent ck_blas_set_threads against the load. */
static pthread_mutex_t threads_mu = PTHREAD_MUTEX_INITIALIZER;
static int pending_threads; /* guarded by threads_mu; 0: none */
static _Atomic bool loaded;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int park_pool(void);

static void load(void) {
    load_blas();
    /* OpenBLAS starts its pool when it loads and each worker spins ~0.1 s of CPU waiting for work;
     * the first threaded call starts it again (ck_blas_park_threads) */
    park_pool();
    pthread_mutex_lock(&threads_mu);
    if (pending_threads > 0) blas.set_threads(pending_threads);
    atomic_store_explicit(&loaded, true, memory_order_release);
    pthread_mutex_unlock(&threads_mu);
}
#define CK_BLAS_LOADED() pthread_once(&load_once, load)

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
    CK_BLAS_LOADED();
    const char *c = blas.corename();
    return c ? c : "";
}

ck_status ck_blas_select_core(const char *name) {
    CK_BLAS_LOADED();
    void (*quit)(void) = (void (*)(void))dlsym(blas.openblas, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(blas.openblas, "gotoblas_dynamic_init");
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
    CK_BLAS_LOADED();
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
    blas.sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (blasint)m,
               (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void ck_blas_sgemv(bool trans, size_t m, size_t n, float alpha, const float *a, size_t lda, const float *x, float beta,
                   float *y) {
    CK_BLAS_READY();
    blas.sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, alpha, a, (blasint)lda, x, 1,
               beta, y, 1);
}

ck_status ck_blas_qr_f64(size_t m, size_t n, double *a, size_t lda, double *r, double *tau) {
    CK_BLAS_READY();
    if (m < n || n == 0 || lda < n) return CK_ERR_ARGUMENT;
    lapack_int info = blas.dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, a, (lapack_int)lda, tau);
    if (info != 0) return CK_ERR_LAPACK;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) r[i * n + j] = j >= i ? a[i * lda + j] : 0.0;
    info = blas.dorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, (lapack_int)n, a, (lapack_int)lda, tau);
    return info == 0 ? CK_OK : CK_ERR_LAPACK;
}

ck_status ck_blas_svd(size_t m, size_t n, float *a, size_t lda, float *s, float *u, float *vt) {
    CK_BLAS_READY();
    if (m == 0 || n == 0 || lda < n) return CK_ERR_ARGUMENT;
    size_t k = m < n ? m : n;
    lapack_int info = blas.sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, a, (lapack_int)lda, s, u,
                                  (lapack_int)k, vt, (lapack_int)n);
    return info == 0 ? CK_OK : CK_ERR_LAPACK;
}

static int park_pool(void) {
    // blas_thread_shutdown_ is what OpenBLAS's own fork handler calls; exec_blas starts the pool
    // again when it finds it down (blas_server_avail == 0), as in a child after fork
    int (*shutdown)(void) = (int (*)(void))dlsym(blas.openblas, "blas_thread_shutdown_");
    if (!shutdown) return 0;
    shutdown();
    return 1;
}

int ck_blas_park_threads(void) {
    /* nothing to park before the libraries load (and no reason to load them for it) */
    if (!atomic_load_explicit(&loaded, memory_order_acquire)) return 0;
    return park_pool();
}

void ck_blas_set_threads(int n) {
    n = n < 1 ? 1 : n;
    pthread_mutex_lock(&threads_mu);
    bool now = atomic_load_explicit(&loaded, memory_order_acquire);
    if (!now) pending_threads = n;
    pthread_mutex_unlock(&threads_mu);
    if (!now) return;
    CK_BLAS_READY();
    blas.set_threads(n);
}
int ck_blas_threads(void) {
    CK_BLAS_READY();
    return blas.get_threads();
}
const char *ck_blas_config(void) {
    CK_BLAS_READY();
    return blas.config();
}
