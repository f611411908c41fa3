/*
 * ka/_ka_bulk.h: arrays of descriptors, split over threads. No operating-system detail: it uses
 * ka_fd_t, ka_apply_one, ka_read_one and the thread primitives of the OS header that
 * _platform.h included before it, the descriptor arrays of _ka_fds.h and the io_uring batches
 * of _ka_uring.h (which looks at nothing here).
 *
 *   ka_bulk_init()         once, before any other call (the compiled module does it at import):
 *                          the handlers around fork() and the io_uring thread key
 *   ka_apply_bulk()        / ka_read_bulk(): one call over an array, on up to nthreads threads
 *   ka_release_workers()   end the idle workers now, and this thread's io_uring ring
 *   ka_worker_count()      workers alive now
 */
#ifndef KA_BULK_H
#define KA_BULK_H

#include "_ka_fds.h"
#include "_ka_uring.h"

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

#define KA_MAX_THREADS 64
#define KA_CHUNK 16                /* sockets per claim: small, so no thread waits for a late one */
#define KA_URING_CHUNK 256         /* per claim on io_uring: one batch (_ka_uring.h) */
#define KA_WORKER_IDLE_MS 2000u    /* an idle worker exits after this long without work */

/* Bulk backends, as the compiled core passes them. */
#define KA_BACKEND_SYSCALLS 0
#define KA_BACKEND_URING 1
#define KA_BACKEND_AUTO 2
/* What KA_BACKEND_AUTO uses: io_uring for calls of this many sockets or more where it is usable
 * (measured faster than the system calls from about 16 sockets on; docs/performance/internals.md),
 * else the loop. */
#ifndef KA_URING_AUTO_MIN
#  define KA_URING_AUTO_MIN 64
#endif

/* ---------------------------------------------------------------------------------------------
 * Persistent workers. A bulk call queues a job; it and up to nthreads - 1 workers claim chunks
 * of KA_CHUNK sockets from it until none is left, so a worker that wakes late just takes fewer.
 * Workers are started on first need, woken per call, and exit after KA_WORKER_IDLE_MS idle or
 * when ka_release_workers asks; each has a slot, so whoever reaps it can wait until its thread
 * has ended. A call on one thread takes no lock at all. The job lives on the caller's stack:
 * the caller unqueues it and waits until no worker is still in it before returning.
 * fork(): handlers registered by ka_bulk_init hold the pool lock across fork(), and the child
 * starts with no workers and no jobs (its parent's threads do not exist there).
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

#define KA_SLOT_FREE 0
#define KA_SLOT_RUNNING 1
#define KA_SLOT_ENDED 2            /* left its loop: to be joined */
typedef struct {
    ka_thread_t thread;
    long os_id;                    /* ka_thread_os_id() in the thread, for ka_thread_join */
    int state;
    int waiting;                   /* starting, or idle: in no job */
    unsigned long release;         /* ka_pool_release when it was started */
} ka_worker_slot;

static ka_mutex_t ka_pool_lock = KA_MUTEX_INIT;
static ka_cond_t ka_pool_wake = KA_COND_INIT;  /* a job was queued, or the workers were released */
static ka_cond_t ka_pool_done = KA_COND_INIT;  /* a worker left a job, or ended */
static ka_job *ka_pool_jobs = NULL;
static int ka_pool_workers = 0;                /* threads alive (running slots) */
static int ka_pool_idle = 0;                   /* of which waiting for a job */
static int ka_pool_starting = 0;               /* of which started but not yet looking for one */
static unsigned long ka_pool_release = 0;      /* bumped by ka_release_workers: idle workers end */
static ka_worker_slot ka_pool_slots[KA_MAX_THREADS];
static int ka_bulk_ready = 0;

static void ka_pool_before_fork(void)
{
    ka_mutex_lock(&ka_pool_lock);
    ka_uring_before_fork();
}

static void ka_pool_after_fork_parent(void)
{
    ka_uring_after_fork_parent();
    ka_mutex_unlock(&ka_pool_lock);
}

static void ka_pool_after_fork_child(void)
{
    ka_uring_after_fork_child();
    ka_mutex_reset(&ka_pool_lock);
    ka_cond_reset(&ka_pool_wake);
    ka_cond_reset(&ka_pool_done);
    ka_pool_jobs = NULL;
    ka_pool_workers = 0;
    ka_pool_idle = 0;
    ka_pool_starting = 0;
    memset(ka_pool_slots, 0, sizeof(ka_pool_slots)); /* the parent's threads: none of them here */
}

/* Once, before any other bulk call: the compiled module calls it at import, so the handlers
 * around fork() are in place before the pool lock is ever taken. */
static void ka_bulk_init(void)
{
    if (ka_bulk_ready)
        return;
    ka_bulk_ready = 1;
    ka_at_fork(ka_pool_before_fork, ka_pool_after_fork_parent, ka_pool_after_fork_child);
    ka_uring_init();
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

/* Do entries [start, end) of a job on this thread: through this thread's ring where the job
 * asks for io_uring and one can be had, else by the system calls. No lock is held. */
static size_t ka_job_range(ka_job *job, size_t start, size_t end)
{
    ka_chunk c = job->proto;
#if KA_HAVE_URING
    if (job->backend == KA_BACKEND_URING && c.policy != NULL) {
        int broken = 0;
        size_t failed;
        ka_uring *ring = ka_uring_for_thread();
        if (ring != NULL) {
            failed = ka_uring_apply(ring, c.fds, c.width, start, end, c.policy, c.errnos, c.options, &broken);
            if (broken)
                ka_uring_drop_thread();
            return failed;
        }
    }
#endif
    c.start = start;
    c.end = end;
    ka_run_chunk(&c);
    return c.failed;
}

/* Run chunks of `job` until none is left; the pool lock is held on entry and on return. */
static size_t ka_job_work(ka_job *job)
{
    size_t failed = 0, start, end;
    while (ka_job_claim(job, &start, &end)) {
        ka_mutex_unlock(&ka_pool_lock);
        failed += ka_job_range(job, start, end);
        ka_mutex_lock(&ka_pool_lock);
    }
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
    ka_worker_slot *slot = (ka_worker_slot *)arg;
    ka_job *job;
    size_t failed;
    unsigned long release;
    long os_id = ka_thread_os_id();
    ka_mutex_lock(&ka_pool_lock);
    slot->os_id = os_id;
    release = slot->release; /* a release asked while it was starting counts for it too */
    ka_pool_starting--;
    for (;;) {
        job = ka_pool_find_job();
        if (job != NULL) {
            slot->waiting = 0;
            job->helpers_joined++;
            job->helpers_active++;
            failed = ka_job_work(job);
            job->failed += failed;
            if (--job->helpers_active == 0)
                ka_cond_broadcast(&ka_pool_done);
            slot->waiting = 1;
            continue;
        }
        if (release != ka_pool_release)
            break; /* released: no job wants this worker now */
        ka_pool_idle++;
        if (ka_cond_wait_ms(&ka_pool_wake, &ka_pool_lock, KA_WORKER_IDLE_MS) && ka_pool_find_job() == NULL) {
            ka_pool_idle--;
            break; /* idle long enough: a program done with bulk work keeps no threads */
        }
        ka_pool_idle--;
    }
    ka_pool_workers--;
    slot->state = KA_SLOT_ENDED;
    ka_cond_broadcast(&ka_pool_done);
    ka_mutex_unlock(&ka_pool_lock);
    ka_uring_drop_thread(); /* its ring, now rather than in the key's destructor */
    return KA_THREAD_DONE;
}

/* Join every worker that has left its loop (pool lock held on entry and on return; released
 * while joining). A slot being joined is FREE to nobody else until then. */
static void ka_pool_reap(void)
{
    ka_worker_slot ended[KA_MAX_THREADS];
    int k, n = 0;
    for (k = 0; k < KA_MAX_THREADS; k++) {
        if (ka_pool_slots[k].state == KA_SLOT_ENDED) {
            ended[n++] = ka_pool_slots[k];
            ka_pool_slots[k].state = KA_SLOT_FREE;
        }
    }
    if (n == 0)
        return;
    ka_mutex_unlock(&ka_pool_lock);
    for (k = 0; k < n; k++)
        ka_thread_join(ended[k].thread, ended[k].os_id);
    ka_mutex_lock(&ka_pool_lock);
}

/* Queue the job, wake or start workers for it, work on it too, and wait for the helpers to
 * leave. A worker that cannot be started is simply not there: the caller's claims cover the
 * rest, so no descriptor is ever skipped. Returns how many entries failed. */
static size_t ka_run_job(ka_job *job)
{
    ka_job **link;
    int missing, k, s;
    size_t failed;
    if (job->helpers_wanted == 0)
        return ka_job_range(job, 0, job->n); /* one thread: no claim, no lock, no pool */
    ka_mutex_lock(&ka_pool_lock);
    ka_pool_reap();
    job->queue_next = ka_pool_jobs;
    ka_pool_jobs = job;
    /* A worker still starting will look for jobs before it waits: count it as available. */
    missing = job->helpers_wanted - ka_pool_idle - ka_pool_starting;
    if (missing > KA_MAX_THREADS - 1 - ka_pool_workers)
        missing = KA_MAX_THREADS - 1 - ka_pool_workers;
    for (k = 0, s = 0; k < missing; k++) {
        while (s < KA_MAX_THREADS && ka_pool_slots[s].state != KA_SLOT_FREE)
            s++;
        if (s == KA_MAX_THREADS || ka_thread_start(&ka_pool_slots[s].thread, ka_worker_main, &ka_pool_slots[s]) != 0)
            break;
        ka_pool_slots[s].state = KA_SLOT_RUNNING;
        ka_pool_slots[s].waiting = 1;
        ka_pool_slots[s].os_id = 0;
        ka_pool_slots[s].release = ka_pool_release;
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

/* Let the workers go now instead of after KA_WORKER_IDLE_MS: every idle worker ends, and this
 * returns once their threads have ended (joined; on Linux, released by the kernel too). A worker
 * busy in another thread's call ends when that call is done with it. Also ends the calling
 * thread's io_uring ring. Returns the workers still alive (busy in a concurrent call). */
/* 1 while a worker started before release `r` is in no job: it is about to end (pool lock held). */
static int ka_pool_releasing(unsigned long r)
{
    int k;
    for (k = 0; k < KA_MAX_THREADS; k++) {
        const ka_worker_slot *w = &ka_pool_slots[k];
        if (w->state == KA_SLOT_RUNNING && w->waiting && w->release != r)
            return 1;
    }
    return 0;
}

static int ka_release_workers(void)
{
    int n;
    unsigned long r;
    ka_uring_drop_thread();
    ka_mutex_lock(&ka_pool_lock);
    r = ++ka_pool_release;
    ka_cond_broadcast(&ka_pool_wake);
    /* Wait for those idle or starting: each ends without taking another job. Workers started
     * for a concurrent call after this point are that call's, and stay. */
    while (ka_pool_releasing(r))
        ka_cond_wait(&ka_pool_done, &ka_pool_lock);
    ka_pool_reap();
    n = ka_pool_workers;
    ka_mutex_unlock(&ka_pool_lock);
    return n;
}

static size_t ka_run_bulk(const ka_chunk *proto, size_t n, int nthreads, int backend)
{
    ka_job job;
    memset(&job, 0, sizeof(job));
    job.proto = *proto;
    if (nthreads > KA_MAX_THREADS)
        nthreads = KA_MAX_THREADS;
    if (nthreads < 1)
        nthreads = 1;
    if (backend == KA_BACKEND_AUTO)
        backend = n >= KA_URING_AUTO_MIN && ka_uring_status() == 0 ? KA_BACKEND_URING : KA_BACKEND_SYSCALLS;
    job.backend = backend;
    job.n = n;
    job.chunk = backend == KA_BACKEND_URING ? KA_URING_CHUNK : KA_CHUNK;
    /* No more helpers than chunks beyond the caller's first. */
    job.helpers_wanted = nthreads - 1;
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
