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
    if (!KA_FD_IS_INT) {
        /* A SOCKET is pointer-sized: every signed 8-byte value is a handle number. An unsigned
         * one above INT64_MAX is not: the fds column is signed (the twin refuses it too). */
        if (width == 8 && is_unsigned) {
            const uint64_t *u = (const uint64_t *)fds;
            for (i = 0; i < n; i++) {
                if (u[i] > (uint64_t)INT64_MAX)
                    return (long long)i;
            }
        }
        return -1;
    }
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

/* Results are gathered in blocks of KA_BLOCK on the stack and copied out once per block: two
 * threads working on neighbouring chunks then share an output cache line once per block, not
 * once per socket (a one-byte option column puts 64 sockets on one line). */
#define KA_BLOCK 16

static void ka_run_chunk(ka_chunk *c)
{
    size_t i, k, m, failed = 0;
    int option, err;
    int32_t errs[KA_BLOCK];
    uint8_t opts[KA_BLOCK];
    for (i = c->start; i < c->end; i += m) {
        m = c->end - i < KA_BLOCK ? c->end - i : KA_BLOCK;
        if (c->policy != NULL) {
            for (k = 0; k < m; k++) {
                err = ka_apply_one(ka_fd_at(c->fds, c->width, i + k), c->policy, &option);
                errs[k] = err;
                opts[k] = (uint8_t)option;
                failed += (err != 0);
            }
        } else {
            ka_values v;
            int8_t enabled[KA_BLOCK];
            int32_t idle[KA_BLOCK], interval[KA_BLOCK], count[KA_BLOCK], user_timeout_ms[KA_BLOCK];
            for (k = 0; k < m; k++) {
                err = ka_read_one(ka_fd_at(c->fds, c->width, i + k), &v, &option);
                errs[k] = err;
                opts[k] = (uint8_t)option;
                enabled[k] = (int8_t)v.enabled;
                idle[k] = v.idle;
                interval[k] = v.interval;
                count[k] = v.count;
                user_timeout_ms[k] = v.user_timeout_ms;
                failed += (err != 0);
            }
            memcpy(c->enabled + i, enabled, m * sizeof(int8_t));
            memcpy(c->idle + i, idle, m * sizeof(int32_t));
            memcpy(c->interval + i, interval, m * sizeof(int32_t));
            memcpy(c->count + i, count, m * sizeof(int32_t));
            memcpy(c->user_timeout_ms + i, user_timeout_ms, m * sizeof(int32_t));
        }
        memcpy(c->errnos + i, errs, m * sizeof(int32_t));
        memcpy(c->options + i, opts, m * sizeof(uint8_t));
    }
    c->failed = failed;
}

#include "_ka_uring.h"

#define KA_MAX_THREADS 64
#define KA_CHUNK 16                /* sockets per claim: small, so no thread waits for a late one */
#define KA_URING_CHUNK 64          /* per claim on io_uring: one submission per 64 sockets */
#define KA_WORKER_IDLE_MS 2000u    /* an idle worker exits after this long without work */

/* Bulk backends, as the compiled core passes them. */
#define KA_BACKEND_SYSCALLS 0
#define KA_BACKEND_URING 1

/* ---------------------------------------------------------------------------------------------
 * Persistent workers. A bulk call queues a job; it and up to nthreads - 1 workers claim chunks
 * of KA_CHUNK sockets from it until none is left, so a worker that wakes late just takes fewer.
 * Workers are started on first need, woken per call, and exit after KA_WORKER_IDLE_MS idle; a
 * child after fork() starts with no workers and no jobs (its parent's threads do not exist
 * there). The job lives on the caller's stack: the caller unqueues it and waits until no worker
 * is still in it before returning.
 * ------------------------------------------------------------------------------------------- */
typedef struct ka_job {
    ka_chunk proto;           /* what to do; start/end are set per claimed chunk */
    int backend;
    size_t n, next, chunk;    /* next: the first entry not claimed yet */
    int helpers_wanted;       /* workers that may join (nthreads - 1) */
    int helpers_joined;
    int helpers_active;       /* workers inside the job now */
    size_t failed;
    struct ka_job *queue_next;
} ka_job;

static ka_mutex_t ka_pool_lock = KA_MUTEX_INIT;
static ka_cond_t ka_pool_wake = KA_COND_INIT;  /* a job was queued */
static ka_cond_t ka_pool_done = KA_COND_INIT;  /* a worker left a job */
static ka_job *ka_pool_jobs = NULL;
static int ka_pool_workers = 0;                /* threads alive */
static int ka_pool_idle = 0;                   /* of which waiting for a job */
static int ka_pool_starting = 0;               /* of which started but not yet looking for one */
static int ka_pool_fork_hook = 0;

static void ka_pool_after_fork_child(void)
{
    ka_mutex_reset(&ka_pool_lock);
    ka_cond_reset(&ka_pool_wake);
    ka_cond_reset(&ka_pool_done);
    ka_pool_jobs = NULL;
    ka_pool_workers = 0;
    ka_pool_idle = 0;
    ka_pool_starting = 0;
}

/* Claim the next chunk of a job (pool lock held); 0 when none is left. */
static int ka_job_claim(ka_job *job, size_t *start, size_t *end)
{
    if (job->next >= job->n)
        return 0;
    *start = job->next;
    *end = job->n - job->next > job->chunk ? job->next + job->chunk : job->n;
    job->next = *end;
    return 1;
}

/* Run chunks of `job` until none is left; the pool lock is held on entry and on return. */
static size_t ka_job_work(ka_job *job)
{
    size_t failed = 0, start, end;
    ka_chunk c = job->proto;
#if KA_HAVE_URING
    ka_uring *ring = NULL;
    int broken = 0;
#endif
    while (ka_job_claim(job, &start, &end)) {
        ka_mutex_unlock(&ka_pool_lock);
#if KA_HAVE_URING
        if (job->backend == KA_BACKEND_URING && ring == NULL && !broken)
            ring = ka_uring_acquire();
        if (ring != NULL && !broken) {
            failed += ka_uring_apply(ring, c.fds, c.width, start, end, c.policy, c.errnos, c.options, &broken);
        } else
#endif
        {
            c.start = start;
            c.end = end;
            ka_run_chunk(&c);
            failed += c.failed;
        }
        ka_mutex_lock(&ka_pool_lock);
    }
#if KA_HAVE_URING
    if (ring != NULL) {
        ka_mutex_unlock(&ka_pool_lock);
        ka_uring_release(ring, broken);
        ka_mutex_lock(&ka_pool_lock);
    }
#endif
    return failed;
}

/* The first queued job a worker may join (pool lock held), or NULL. */
static ka_job *ka_pool_find_job(void)
{
    ka_job *job;
    for (job = ka_pool_jobs; job != NULL; job = job->queue_next) {
        if (job->helpers_joined < job->helpers_wanted && job->next < job->n)
            return job;
    }
    return NULL;
}

static ka_thread_ret KA_THREAD_CALL ka_worker_main(void *arg)
{
    ka_job *job;
    size_t failed;
    (void)arg;
    ka_mutex_lock(&ka_pool_lock);
    ka_pool_starting--;
    for (;;) {
        job = ka_pool_find_job();
        if (job != NULL) {
            job->helpers_joined++;
            job->helpers_active++;
            failed = ka_job_work(job);
            job->failed += failed;
            if (--job->helpers_active == 0)
                ka_cond_broadcast(&ka_pool_done);
            continue;
        }
        ka_pool_idle++;
        if (ka_cond_wait_ms(&ka_pool_wake, &ka_pool_lock, KA_WORKER_IDLE_MS) && ka_pool_find_job() == NULL) {
            ka_pool_idle--;
            break; /* idle long enough: a program done with bulk work keeps no threads */
        }
        ka_pool_idle--;
    }
    ka_pool_workers--;
    ka_cond_broadcast(&ka_pool_done);
    ka_mutex_unlock(&ka_pool_lock);
    return KA_THREAD_DONE;
}

/* Queue the job, wake or start workers for it, work on it too, and wait for the helpers to
 * leave. A worker that cannot be started is simply not there: the caller's claims cover the
 * rest, so no descriptor is ever skipped. Returns how many entries failed. */
static size_t ka_run_job(ka_job *job)
{
    ka_job **link;
    int missing, k;
    ka_thread_t t;
    size_t failed;
    if (job->helpers_wanted == 0) {
        /* One thread: the whole range in one claim, without touching the pool. */
        job->chunk = job->n;
        ka_mutex_lock(&ka_pool_lock);
        failed = ka_job_work(job);
        ka_mutex_unlock(&ka_pool_lock);
        return failed;
    }
    ka_mutex_lock(&ka_pool_lock);
    if (!ka_pool_fork_hook) {
        ka_at_fork_child(ka_pool_after_fork_child);
        ka_pool_fork_hook = 1;
    }
    job->queue_next = ka_pool_jobs;
    ka_pool_jobs = job;
    /* A worker still starting will look for jobs before it waits: count it as available. */
    missing = job->helpers_wanted - ka_pool_idle - ka_pool_starting;
    if (missing > KA_MAX_THREADS - 1 - ka_pool_workers)
        missing = KA_MAX_THREADS - 1 - ka_pool_workers;
    for (k = 0; k < missing; k++) {
        if (ka_thread_start(&t, ka_worker_main, NULL) != 0)
            break;
        ka_thread_detach(t);
        ka_pool_workers++;
        ka_pool_starting++;
    }
    if (ka_pool_idle > 0)
        ka_cond_broadcast(&ka_pool_wake);
    failed = ka_job_work(job);
    for (link = &ka_pool_jobs; *link != NULL; link = &(*link)->queue_next) {
        if (*link == job) {
            *link = job->queue_next;
            break;
        }
    }
    while (job->helpers_active > 0)
        ka_cond_wait(&ka_pool_done, &ka_pool_lock);
    failed += job->failed;
    ka_mutex_unlock(&ka_pool_lock);
    return failed;
}

/* Workers alive now (for tests and the benchmark). */
static int ka_worker_count(void)
{
    int n;
    ka_mutex_lock(&ka_pool_lock);
    n = ka_pool_workers;
    ka_mutex_unlock(&ka_pool_lock);
    return n;
}

static size_t ka_run_bulk(const ka_chunk *proto, size_t n, int nthreads, int backend)
{
    ka_job job;
    memset(&job, 0, sizeof(job));
    job.proto = *proto;
    job.backend = backend;
    job.n = n;
    job.chunk = backend == KA_BACKEND_URING ? KA_URING_CHUNK : KA_CHUNK;
    if (nthreads > KA_MAX_THREADS)
        nthreads = KA_MAX_THREADS;
    /* No more helpers than chunks beyond the caller's first. */
    job.helpers_wanted = nthreads > 1 ? nthreads - 1 : 0;
    if ((size_t)job.helpers_wanted > (n + job.chunk - 1) / job.chunk - (n > 0))
        job.helpers_wanted = (int)((n + job.chunk - 1) / job.chunk - (n > 0));
    return ka_run_job(&job);
}

/* The fields every bulk call's chunks share; the rest stay zero (NULL). */
static void ka_chunk_init(ka_chunk *proto, const void *fds, int width, int32_t *errnos, uint8_t *options)
{
    memset(proto, 0, sizeof(*proto));
    proto->fds = fds;
    proto->width = width;
    proto->errnos = errnos;
    proto->options = options;
}

static size_t ka_apply_bulk(const void *fds, int width, size_t n, const ka_policy *p,
                            int32_t *errnos, uint8_t *options, int nthreads, int backend)
{
    ka_chunk proto;
    ka_chunk_init(&proto, fds, width, errnos, options);
    proto.policy = p;
    return ka_run_bulk(&proto, n, nthreads, backend);
}

static size_t ka_read_bulk(const void *fds, int width, size_t n, int32_t *errnos, uint8_t *options,
                           int8_t *enabled, int32_t *idle, int32_t *interval, int32_t *count,
                           int32_t *user_timeout_ms, int nthreads)
{
    ka_chunk proto;
    ka_chunk_init(&proto, fds, width, errnos, options);
    proto.enabled = enabled;
    proto.idle = idle;
    proto.interval = interval;
    proto.count = count;
    proto.user_timeout_ms = user_timeout_ms;
    return ka_run_bulk(&proto, n, nthreads, KA_BACKEND_SYSCALLS);
}

#endif /* KA_BULK_H */
