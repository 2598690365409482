/* uring.c — see ck_uring.h. Raw io_uring system calls: setup, the two rings and the SQE array
 * mapped once; IORING_OP_READ requests; completions reaped with acquire/release ordering on the
 * ring indices as the kernel's io_uring ABI requires. */
#include "ck_uring.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__) && __has_include(<linux/io_uring.h>)
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ck_uring {
    int fd;
    unsigned entries;
    unsigned *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *sq_ptr, *cq_ptr;
    size_t sq_size, cq_size, sqes_size;
};

ck_uring *ck_uring_open(unsigned depth, int *err) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = (int)syscall(__NR_io_uring_setup, depth, &p);
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    ck_uring *r = calloc(1, sizeof *r);
    if (!r) {
        close(fd);
        *err = ENOMEM;
        return NULL;
    }
    r->fd = fd;
    r->entries = p.sq_entries;
    r->sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) r->sq_size = r->cq_size = r->sq_size > r->cq_size ? r->sq_size : r->cq_size;
    r->sq_ptr = mmap(NULL, r->sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->sq_ptr == MAP_FAILED) {
        *err = errno;
        close(fd);
        free(r);
        return NULL;
    }
    r->cq_ptr = single
                    ? r->sq_ptr
                    : mmap(NULL, r->cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
    if (r->cq_ptr == MAP_FAILED) {
        *err = errno;
        munmap(r->sq_ptr, r->sq_size);
        close(fd);
        free(r);
        return NULL;
    }
    r->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        *err = errno;
        if (!single) munmap(r->cq_ptr, r->cq_size);
        munmap(r->sq_ptr, r->sq_size);
        close(fd);
        free(r);
        return NULL;
    }
    char *sq = r->sq_ptr, *cq = r->cq_ptr;
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return r;
}

void ck_uring_close(ck_uring *r) {
    if (!r) return;
    munmap(r->sqes, r->sqes_size);
    if (r->cq_ptr != r->sq_ptr) munmap(r->cq_ptr, r->cq_size);
    munmap(r->sq_ptr, r->sq_size);
    close(r->fd);
    free(r);
}

int ck_uring_read(ck_uring *r, int fd, size_t n, const uint64_t *offsets, const uint32_t *lens, uint8_t *const *dsts) {
    if (n == 0) return 0;
    uint32_t *done = calloc(n, sizeof *done);  /* bytes read so far per request */
    size_t *retry = malloc(n * sizeof *retry); /* requests with a short read to resubmit */
    if (!done || !retry) {
        free(done);
        free(retry);
        return -ENOMEM;
    }
    size_t next = 0, finished = 0, inflight = 0, nretry = 0;
    unsigned unsubmitted = 0;
    int status = 0;
    while (finished < n) {
        unsigned tail = *r->sq_tail, queued = 0;
        while (inflight < r->entries && status == 0 && (nretry > 0 || next < n)) {
            size_t i = nretry > 0 ? retry[--nretry] : next++;
            unsigned slot = tail & *r->sq_mask;
            struct io_uring_sqe *e = &r->sqes[slot];
            memset(e, 0, sizeof *e);
            e->opcode = IORING_OP_READ;
            e->fd = fd;
            e->off = offsets[i] + done[i];
            e->addr = (uint64_t)(uintptr_t)(dsts[i] + done[i]);
            e->len = lens[i] - done[i];
            e->user_data = i;
            r->sq_array[slot] = slot;
            tail++;
            queued++;
            inflight++;
        }
        __atomic_store_n(r->sq_tail, tail, __ATOMIC_RELEASE);
        if (inflight == 0) break; /* an error stopped new submissions and everything has drained */
        unsubmitted += queued;
        int rc;
        do {
            rc = (int)syscall(__NR_io_uring_enter, r->fd, unsubmitted, 1, IORING_ENTER_GETEVENTS, NULL, 0);
        } while (rc < 0 && (errno == EINTR || errno == EAGAIN || errno == EBUSY));
        /* Anything else means the ring itself is broken while reads may be in flight: report
         * CK_URING_BROKEN; the caller closes the ring and must not reuse the buffers. */
        if (rc < 0) {
            free(done);
            free(retry);
            return CK_URING_BROKEN;
        }
        unsubmitted -= (unsigned)rc;
        unsigned head = *r->cq_head, ctail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
        for (; head != ctail; head++) {
            struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
            size_t i = (size_t)c->user_data;
            inflight--;
            if (c->res < 0) {
                if (status == 0) status = c->res;
                finished++;
                continue;
            }
            if (c->res == 0) {
                if (status == 0) status = -ENODATA;
                finished++;
                continue;
            }
            done[i] += (uint32_t)c->res;
            if (done[i] < lens[i])
                retry[nretry++] = i;
            else
                finished++;
        }
        __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
        if (status != 0 && inflight == 0) break;
    }
    free(done);
    free(retry);
    return status;
}

#else
struct ck_uring {
    int unused;
};
ck_uring *ck_uring_open(unsigned depth, int *err) {
    (void)depth;
    *err = ENOSYS;
    return NULL;
}
void ck_uring_close(ck_uring *r) {
    (void)r;
}
int ck_uring_read(ck_uring *r, int fd, size_t n, const uint64_t *offsets, const uint32_t *lens, uint8_t *const *dsts) {
    (void)r;
    (void)fd;
    (void)n;
    (void)offsets;
    (void)lens;
    (void)dsts;
    return -ENOSYS;
}
#endif
