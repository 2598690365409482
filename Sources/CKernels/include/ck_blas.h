/* ck_blas.h — thin row-major wrappers over CBLAS (OpenBLAS) and LAPACKE.
 *
 * Loading: the two libraries are opened (dlopen) by the first call that needs them, not linked,
 * so a process that never calls BLAS does not pay for loading them. ck_blas_set_threads before
 * that is remembered and applied when they load; ck_blas_park_threads before it does nothing.
 * Where they cannot be loaded, the first such call prints what is missing and aborts (as the
 * dynamic linker would have refused to start the process when they were linked).
 *
 * Thread policy: OpenBLAS keeps its own pool. Engine calls BLAS outside its own parallel regions
 * and sets the pool size to Engine's thread count, so the two never oversubscribe. The one
 * exception (BERT batches, one group of sentences per Engine thread) first sets the pool to one
 * thread for its duration (Swift BLASSingleThreadScope).
 */
#ifndef CK_BLAS_H
#define CK_BLAS_H
#include "ck_common.h"
#ifdef __cplusplus
extern "C" {
#endif

/** C = alpha * op(A) op(B) + beta * C; row-major; op(A) is M x K, op(B) is K x N. */
void ck_blas_sgemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc);
/** y = alpha * op(A) x + beta * y; A is m x n row-major. */
void ck_blas_sgemv(bool trans, size_t m, size_t n, float alpha, const float *a, size_t lda, const float *x, float beta,
                   float *y);

/** Thin QR of A (m x n, m >= n, row-major, lda >= n) in double precision (key material, where
 *  orthogonality must hold to ~1e-15): A is overwritten by Q (m x n, orthonormal columns) and R
 *  (n x n, upper triangular) is written. tau: scratch of n doubles. */
ck_status ck_blas_qr_f64(size_t m, size_t n, double *a, size_t lda, double *r, double *tau);
/** Thin SVD A = U diag(s) V^T, A m x n row-major (destroyed); u: m x min(m,n), s: min(m,n),
 *  vt: min(m,n) x n. */
ck_status ck_blas_svd(size_t m, size_t n, float *a, size_t lda, float *s, float *u, float *vt);

/** OpenBLAS kernel table ("core type"). A DYNAMIC_ARCH OpenBLAS picks its kernels once, from a
 *  CPUID table, when it loads; one that does not know a CPU falls back to SSE-era kernels (Debian
 *  12's 0.3.21 picks Prescott on Sapphire/Emerald Rapids, about 3.5x slower sgemm). Before the
 *  first BLAS call through these wrappers, the engine switches such a fallback to the table the
 *  CPU can run (ck_blas_core_fix), unless OPENBLAS_CORETYPE is set (the user's choice wins).
 *
 *  ck_blas_core_fix: the table to use instead of `current` on a CPU of level `isa`: "SkylakeX"
 *  (avx512) or "Haswell" (avx2) when `current` is an SSE-era table, else NULL.
 *  ck_blas_select_core: re-runs OpenBLAS's selection with OPENBLAS_CORETYPE = name (restored
 *  after); CK_OK if the table in use is then `name`, CK_ERR_ARGUMENT without DYNAMIC_ARCH, else
 *  CK_ERR_ISA. Not thread-safe: no BLAS call may run meanwhile.
 *  ck_blas_core_note: "" or what the engine switched (or failed to). */
const char *ck_blas_core_fix(const char *current, ck_isa isa);
const char *ck_blas_corename(void);
ck_status ck_blas_select_core(const char *name);
const char *ck_blas_core_note(void);

/** ck_blas_park_threads: stops OpenBLAS's worker threads. A threaded OpenBLAS starts them when it
 *  loads and each spins (sched_yield) for about 2^28 cycles waiting for work before it sleeps:
 *  ~0.1 s of CPU per worker, wasted in a process whose next calls are not threaded. The loader
 *  parks them right after loading; OpenBLAS starts the pool again at its next threaded call (as
 *  it does in a child after fork). Returns 1 if stopped, 0 if OpenBLAS is not loaded yet or has
 *  no such pool. Not while a BLAS call runs. */
int ck_blas_park_threads(void);

/** OpenBLAS pool size control and build description. */
void ck_blas_set_threads(int n);
int ck_blas_threads(void);
const char *ck_blas_config(void);

#ifdef __cplusplus
}
#endif
#endif
