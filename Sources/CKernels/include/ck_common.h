/* ck_common.h — status codes, ISA levels and runtime dispatch of the CKernels library.
 *
 * Every kernel family exposes a table of function pointers per ISA level
 * (`ck_<family>_kernels_for(level)`), so callers and tests can run any variant the
 * CPU supports side by side. The only global state is the selected default level,
 * chosen once (CPU detection, optionally forced by the CK_ISA environment variable).
 */
#ifndef CK_COMMON_H
#define CK_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Status codes returned by kernels that validate their arguments. */
typedef enum ck_status {
    CK_OK = 0,
    CK_ERR_ARGUMENT = 1, /**< a size or parameter is out of range */
    CK_ERR_ISA = 2,      /**< the requested ISA level is not supported by this CPU */
    CK_ERR_NAN = 3,      /**< a NaN or infinity where a finite value is required */
    CK_ERR_LAPACK = 4,   /**< LAPACK reported a failure (info != 0) */
} ck_status;

/** SIMD levels. AVX512 requires F, BW, VL, DQ, VPOPCNTDQ and VNNI (Ice Lake / Zen 4 and later). */
typedef enum ck_isa {
    CK_ISA_SCALAR = 0,
    CK_ISA_AVX2 = 1, /**< AVX2 + FMA + F16C + POPCNT */
    CK_ISA_AVX512 = 2,
} ck_isa;

/** Highest level this CPU (and OS, via XGETBV) supports. */
ck_isa ck_isa_detected(void);

/** Whether `level` can run on this CPU. */
bool ck_isa_supported(ck_isa level);

/** The selected default level: detected, or CK_ISA if set. Never fails: see ck_isa_env_status. */
ck_isa ck_isa_selected(void);

/** CK_OK, or CK_ERR_ARGUMENT if CK_ISA holds an unknown name, or CK_ERR_ISA if it names a
 *  level the CPU lacks. In both error cases ck_isa_selected() falls back to the detected level;
 *  the Swift layer refuses to run and reports the message instead. */
ck_status ck_isa_env_status(void);

/** "scalar", "avx2", "avx512". */
const char *ck_isa_name(ck_isa level);

/** Human-readable list of CPU features relevant to the kernels (static storage). */
const char *ck_cpu_features(void);

#ifdef __cplusplus
}
#endif
#endif
