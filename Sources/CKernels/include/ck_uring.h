/* ck_uring.h — batched file reads through io_uring (Linux >= 5.6), without liburing.
 *
 * A ring is opened once and reused (one caller at a time). ck_uring_read submits up to `depth`
 * reads at once, waits for completions, resubmits the rest of any short read, and returns when
 * every request is complete. Where io_uring is unavailable (another OS, an old kernel, a seccomp
 * policy) ck_uring_open returns NULL with *err set, and callers fall back to pread.
 */
#ifndef CK_URING_H
#define CK_URING_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct ck_uring ck_uring;

/** ck_uring_read's result when io_uring_enter itself fails with reads in flight. */
#define CK_URING_BROKEN (-100000)

/** Opens a ring with `depth` submission entries; NULL and *err = errno-style code on failure. */
ck_uring *ck_uring_open(unsigned depth, int *err);
void ck_uring_close(ck_uring *r);
/** Reads n requests from fd: lens[i] bytes at offsets[i] into dsts[i]. Returns 0, or a negative
 *  errno (-EIO ... from the kernel; -ENODATA when the file ends before a request does). */
int ck_uring_read(ck_uring *r, int fd, size_t n, const uint64_t *offsets, const uint32_t *lens, uint8_t *const *dsts);

#ifdef __cplusplus
}
#endif
#endif
