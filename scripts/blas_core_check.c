/* Driver of scripts/blas_core_check.sh: see there. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "ck_blas.h"

extern char *openblas_get_corename(void);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* sgemm 512 x 512 x 512 GFLOP/s, best of 7 */
static double bench(void) {
    size_t n = 512;
    float *a = malloc(n * n * 4), *b = malloc(n * n * 4), *c = malloc(n * n * 4);
    for (size_t i = 0; i < n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.2f;
    }
    double best = 1e9;
    for (int r = 0; r < 7; r++) {
        double t = now();
        ck_blas_sgemm(false, false, n, n, n, 1, a, n, b, n, 0, c, n);
        t = now() - t;
        if (t < best) best = t;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * n * n * n / best / 1e9;
}

int main(void) {
    printf("OpenBLAS loaded with: %s\n", openblas_get_corename());
    unsetenv("OPENBLAS_CORETYPE"); /* as if OpenBLAS had chosen that table by itself */
    const char *note = ck_blas_core_note();
    char fixed_name[32];
    snprintf(fixed_name, sizeof fixed_name, "%s", ck_blas_corename());
    printf("after the engine's first BLAS call: %s (%s)\n", fixed_name, note[0] ? note : "no change");
    ck_blas_set_threads(1);
    double fixed = bench();
    if (ck_blas_select_core("Prescott") != CK_OK) return 1;
    double presc = bench();
    printf("sgemm 512^3, 1 thread, best of 7: Prescott %.1f GFLOP/s, %s %.1f GFLOP/s (%.2fx)\n", presc, fixed_name,
           fixed, fixed / presc);
    return 0;
}
