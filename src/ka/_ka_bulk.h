/*
 * ka/_ka_bulk.h: arrays of descriptors, split over threads. No operating-system detail: it uses
 * ka_fd_t, KA_FD_IS_INT, ka_apply_one, ka_read_one and the thread primitives of the OS header
 * that _platform.h included before it.
 */
#ifndef KA_BULK_H
#define KA_BULK_H

/* ---------------------------------------------------------------------------------------------
 * Arrays of descriptors: 4- or 8-byte integers, as given by the caller's buffer.
 * ------------------------------------------------------------------------------------------- */
static inline ka_fd_t ka_fd_at(const void *fds, int width, size_t i)
{
    if (width == 8)
        return (ka_fd_t)((const int64_t *)fds)[i];
    return (ka_fd_t)((const int32_t *)fds)[i];
}

/* Index of the first entry that is no descriptor number this platform can hold, or -1.
 * POSIX descriptors are C ints; negative numbers are allowed (the kernel answers EBADF). */
static long long ka_first_bad_fd(const void *fds, int width, int is_unsigned, size_t n)
{
    size_t i;
    if (!KA_FD_IS_INT)
        return -1; /* a SOCKET is pointer-sized: every 8-byte value is a handle number */
    if (width == 8) {
        const int64_t *a = (const int64_t *)fds;
        for (i = 0; i < n; i++) {
            if (is_unsigned ? ((uint64_t)a[i] > 2147483647u) : (a[i] > 2147483647 || a[i] < -2147483647 - 1))
                return (long long)i;
        }
    } else if (is_unsigned) {
        const uint32_t *a = (const uint32_t *)fds;
        for (i = 0; i < n; i++) {
            if (a[i] > 2147483647u)
                return (long long)i;
        }
    }
    return -1;
}

typedef struct {
    const void *fds;
    int width;
    size_t start, end;
    const ka_policy *policy;  /* apply when set, read when NULL */
    int32_t *errnos;
    uint8_t *options;
    /* read outputs */
    int8_t *enabled;
    int32_t *idle, *interval, *count, *user_timeout_ms;
    size_t failed;
} ka_chunk;

static void ka_run_chunk(ka_chunk *c)
{
    size_t i, failed = 0;
    int option, err;
    if (c->policy != NULL) {
        for (i = c->start; i < c->end; i++) {
            err = ka_apply_one(ka_fd_at(c->fds, c->width, i), c->policy, &option);
            c->errnos[i] = err;
            c->options[i] = (uint8_t)option;
            failed += (err != 0);
        }
    } else {
        ka_values v;
        for (i = c->start; i < c->end; i++) {
            err = ka_read_one(ka_fd_at(c->fds, c->width, i), &v, &option);
            c->errnos[i] = err;
            c->options[i] = (uint8_t)option;
            c->enabled[i] = (int8_t)v.enabled;
            c->idle[i] = v.idle;
            c->interval[i] = v.interval;
            c->count[i] = v.count;
            c->user_timeout_ms[i] = v.user_timeout_ms;
            failed += (err != 0);
        }
    }
    c->failed = failed;
}

#define KA_MAX_THREADS 64

static ka_thread_ret KA_THREAD_CALL ka_thread_main(void *arg)
{
    ka_run_chunk((ka_chunk *)arg);
    return KA_THREAD_DONE;
}

/* Split [0, n) into nthreads contiguous chunks; the calling thread runs the first one. A thread
 * that cannot be started has its chunk run by the caller, so no descriptor is ever skipped.
 * Returns how many entries failed. */
static size_t ka_run_bulk(const ka_chunk *proto, size_t n, int nthreads)
{
    ka_chunk chunks[KA_MAX_THREADS];
    ka_thread_t threads[KA_MAX_THREADS];
    int started[KA_MAX_THREADS];
    size_t per, failed = 0;
    int k;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > KA_MAX_THREADS)
        nthreads = KA_MAX_THREADS;
    if ((size_t)nthreads > n)
        nthreads = n > 0 ? (int)n : 1;
    per = n / (size_t)nthreads;
    for (k = 0; k < nthreads; k++) {
        chunks[k] = *proto;
        chunks[k].start = (size_t)k * per;
        chunks[k].end = (k == nthreads - 1) ? n : (size_t)(k + 1) * per;
        chunks[k].failed = 0;
        started[k] = 0;
    }
    for (k = 1; k < nthreads; k++)
        started[k] = ka_thread_start(&threads[k], ka_thread_main, &chunks[k]) == 0;
    ka_run_chunk(&chunks[0]);
    for (k = 1; k < nthreads; k++) {
        if (started[k])
            ka_thread_join(threads[k]);
        else
            ka_run_chunk(&chunks[k]);
    }
    for (k = 0; k < nthreads; k++)
        failed += chunks[k].failed;
    return failed;
}

static size_t ka_apply_bulk(const void *fds, int width, size_t n, const ka_policy *p,
                            int32_t *errnos, uint8_t *options, int nthreads)
{
    ka_chunk proto;
    memset(&proto, 0, sizeof(proto));
    proto.fds = fds;
    proto.width = width;
    proto.policy = p;
    proto.errnos = errnos;
    proto.options = options;
    return ka_run_bulk(&proto, n, nthreads);
}

static size_t ka_read_bulk(const void *fds, int width, size_t n, int32_t *errnos, uint8_t *options,
                           int8_t *enabled, int32_t *idle, int32_t *interval, int32_t *count,
                           int32_t *user_timeout_ms, int nthreads)
{
    ka_chunk proto;
    memset(&proto, 0, sizeof(proto));
    proto.fds = fds;
    proto.width = width;
    proto.policy = NULL;
    proto.errnos = errnos;
    proto.options = options;
    proto.enabled = enabled;
    proto.idle = idle;
    proto.interval = interval;
    proto.count = count;
    proto.user_timeout_ms = user_timeout_ms;
    return ka_run_bulk(&proto, n, nthreads);
}

#endif /* KA_BULK_H */
