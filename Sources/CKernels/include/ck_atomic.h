/* ck_atomic.h — relaxed atomic byte flags shared between threads (for example "this posting list's
 * checksum was verified"): several threads may set the same flag; C11 atomics make that defined
 * behaviour (and visible to ThreadSanitizer) at the cost of a plain load and store on x86. */
#ifndef CK_ATOMIC_H
#define CK_ATOMIC_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/** Reads flag i of an array of atomic bytes. */
static inline uint8_t ck_atomic_flag_get(uint8_t *flags, size_t i) {
    return atomic_load_explicit((_Atomic uint8_t *)&flags[i], memory_order_relaxed);
}

/** Sets flag i of an array of atomic bytes to v. */
static inline void ck_atomic_flag_set(uint8_t *flags, size_t i, uint8_t v) {
    atomic_store_explicit((_Atomic uint8_t *)&flags[i], v, memory_order_relaxed);
}

/** Reads bit i of an array of atomic 64-bit words. */
static inline int ck_atomic_bit_get(uint64_t *words, size_t i) {
    return (int)((atomic_load_explicit((_Atomic uint64_t *)&words[i >> 6], memory_order_relaxed) >> (i & 63)) & 1);
}

/** Sets bit i of an array of atomic 64-bit words (other bits of the word are kept). */
static inline void ck_atomic_bit_set(uint64_t *words, size_t i) {
    atomic_fetch_or_explicit((_Atomic uint64_t *)&words[i >> 6], (uint64_t)1 << (i & 63), memory_order_relaxed);
}
#endif
