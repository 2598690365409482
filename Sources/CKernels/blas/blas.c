#include <cblas.h>
#include <lapacke.h>
#include "ck_blas.h"
#include "ck_internal.h"

/* OpenBLAS extensions (declared here so that the header of any CBLAS works). */
extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);
extern char *openblas_get_config(void);

void ck_blas_sgemm(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda,
                   const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (blasint)m,
                (blasint)n, (blasint)k, alpha, a, (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void ck_blas_sgemv(bool trans, size_t m, size_t n, float alpha, const float *a, size_t lda, const float *x, float beta,
                   float *y) {
    cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, alpha, a, (blasint)lda, x, 1,
                beta, y, 1);
}

ck_status ck_blas_qr_f64(size_t m, size_t n, double *a, size_t lda, double *r, double *tau) {
    if (m < n || n == 0 || lda < n) return CK_ERR_ARGUMENT;
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, a, (lapack_int)lda, tau);
    if (info != 0) return CK_ERR_LAPACK;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) r[i * n + j] = j >= i ? a[i * lda + j] : 0.0;
    info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (lapack_int)m, (lapack_int)n, (lapack_int)n, a, (lapack_int)lda, tau);
    return info == 0 ? CK_OK : CK_ERR_LAPACK;
}

ck_status ck_blas_svd(size_t m, size_t n, float *a, size_t lda, float *s, float *u, float *vt) {
    if (m == 0 || n == 0 || lda < n) return CK_ERR_ARGUMENT;
    size_t k = m < n ? m : n;
    lapack_int info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)n, a, (lapack_int)lda, s, u,
                                     (lapack_int)k, vt, (lapack_int)n);
    return info == 0 ? CK_OK : CK_ERR_LAPACK;
}

void ck_blas_set_threads(int n) {
    openblas_set_num_threads(n < 1 ? 1 : n);
}
int ck_blas_threads(void) {
    return openblas_get_num_threads();
}
const char *ck_blas_config(void) {
    return openblas_get_config();
}
