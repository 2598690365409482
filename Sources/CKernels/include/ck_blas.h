/* ck_blas.h — thin row-major wrappers over CBLAS (OpenBLAS) and LAPACKE.
 *
 * Thread policy: OpenBLAS keeps its own pool. Engine calls BLAS only outside its own parallel
 * regions and sets the pool size to Engine's thread count, so the two never oversubscribe.
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

/** OpenBLAS pool size control and build description. */
void ck_blas_set_threads(int n);
int ck_blas_threads(void);
const char *ck_blas_config(void);

#ifdef __cplusplus
}
#endif
#endif
