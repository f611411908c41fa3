/*
 * ka/_ka_uring.h: bulk apply through io_uring on Linux (IORING_OP_URING_CMD with
 * SOCKET_URING_OP_SETSOCKOPT, Linux 6.7+): the options of many sockets go to the kernel in one
 * submission instead of one system call each.
 *
 *   ka_uring_status()   0 where usable, else the errno that ruled it out (detected once)
 *   ka_uring_acquire()  a ring for this thread's batch, from a small pool; NULL: use the syscalls
 *   ka_uring_apply()    apply a policy to fds[start, end) on that ring; same results as the loop
 *   ka_uring_release()  give the ring back
 *
 * No liburing: the ABI is three system calls and a few structures, defined here under our own
 * names (the manylinux images' kernel headers predate io_uring). The first option of every socket
 * goes by a system call, which proves the descriptor is a socket before any command is sent to
 * it; the others go one phase per option in ka_apply_one's order, a socket whose option failed
 * getting none of the later ones, as with the syscall loop; every socket that failed through the
 * ring is redone by ka_apply_one, whose errno and option are the result.
 * Included after _platform.h's single-descriptor functions; everything is static.
 */
#ifndef KA_URING_H
#define KA_URING_H

#if defined(__linux__) && !defined(KA_NO_URING)
#  define KA_HAVE_URING 1

#  include <stdlib.h>
#  include <sys/mman.h>
#  include <sys/syscall.h>
#  include <unistd.h>
#  include <pthread.h>

/* unistd.h declares syscall() only with _DEFAULT_SOURCE, which -std=c99 turns off. */
long syscall(long number, ...);
#  ifndef MAP_POPULATE
#    define MAP_POPULATE 0 /* only a hint: fault the rings in now rather than on first use */
#  endif

#  ifndef __NR_io_uring_setup
#    define __NR_io_uring_setup 425 /* the same number on every architecture (since Linux 5.1) */
#  endif
#  ifndef __NR_io_uring_enter
#    define __NR_io_uring_enter 426
#  endif

/* include/uapi/linux/io_uring.h, under ka_ names so a newer system header cannot clash. */
struct ka_uring_sq_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
};
struct ka_uring_cq_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
};
struct ka_uring_params {
    uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle, features, wq_fd;
    uint32_t resv[3];
    struct ka_uring_sq_offsets sq_off;
    struct ka_uring_cq_offsets cq_off;
};
/* struct io_uring_sqe as IORING_OP_URING_CMD on a socket reads it (cmd_op, level, optname,
 * optlen and optval share unions with the I/O fields). */
struct ka_uring_sqe {
    uint8_t opcode;
    uint8_t flags;
    uint16_t ioprio;
    int32_t fd;
    uint32_t cmd_op;
    uint32_t pad1;
    uint32_t level;
    uint32_t optname;
    uint32_t len;
    uint32_t op_flags;
    uint64_t user_data;
    uint16_t buf_index;
    uint16_t personality;
    uint32_t optlen;
    uint64_t optval;
    uint64_t pad2;
};
struct ka_uring_cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};
typedef char ka_uring_sqe_is_64_bytes[sizeof(struct ka_uring_sqe) == 64 ? 1 : -1];
typedef char ka_uring_params_is_120_bytes[sizeof(struct ka_uring_params) == 120 ? 1 : -1];

#  define KA_IORING_OFF_SQ_RING 0ULL
#  define KA_IORING_OFF_SQES 0x10000000ULL
#  define KA_IORING_FEAT_SINGLE_MMAP (1U << 0)
#  define KA_IORING_SETUP_SUBMIT_ALL (1U << 7)
#  define KA_IORING_SETUP_COOP_TASKRUN (1U << 8)
#  define KA_IORING_SETUP_NO_SQARRAY (1U << 16)
#  define KA_IORING_ENTER_GETEVENTS (1U << 0)
#  define KA_IORING_OP_URING_CMD 46
#  define KA_SOCKET_URING_OP_GETSOCKOPT 2
#  define KA_SOCKET_URING_OP_SETSOCKOPT 3

#  define KA_URING_ENTRIES 1024u /* SQEs per ring: one option of 1024 sockets per submission */
#  define KA_URING_POOL 8        /* idle rings kept for later calls (one per concurrent caller) */
#  define KA_URING_STEPS 5       /* options per socket at most: idle, interval, count, UTO, on/off */

typedef struct ka_uring {
    int fd;
    unsigned entries;
    void *rings;
    size_t rings_size;
    struct ka_uring_sqe *sqes;
    size_t sqes_size;
    uint32_t *sq_tail, *cq_head, *cq_tail;
    uint32_t sq_mask, cq_mask;
    struct ka_uring_cqe *cqes;
    unsigned long generation; /* the fork generation it was made in */
    int values[KA_URING_STEPS]; /* what the current policy's options point to */
    struct ka_uring *next;
} ka_uring;

static long ka_uring_setup_call(unsigned entries, struct ka_uring_params *p)
{
    return syscall(__NR_io_uring_setup, entries, p);
}

static long ka_uring_enter_call(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
    return syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static void ka_uring_destroy(ka_uring *r)
{
    if (r->sqes != NULL && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_size);
    if (r->rings != NULL && r->rings != MAP_FAILED)
        munmap(r->rings, r->rings_size);
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

/* A new ring, or NULL with *err set (ENOSYS: no io_uring; EPERM: kernel.io_uring_disabled or a
 * seccomp filter; ENOMEM: locked-memory limit). */
static ka_uring *ka_uring_create(int *err)
{
    static const unsigned flag_sets[3] = {
        KA_IORING_SETUP_SUBMIT_ALL | KA_IORING_SETUP_COOP_TASKRUN | KA_IORING_SETUP_NO_SQARRAY,
        KA_IORING_SETUP_SUBMIT_ALL | KA_IORING_SETUP_COOP_TASKRUN,
        0,
    };
    struct ka_uring_params p;
    ka_uring *r;
    size_t sq_size, cq_size;
    long fd = -1;
    unsigned k, i;
    char *base;
    for (k = 0; k < 3; k++) {
        memset(&p, 0, sizeof(p));
        p.flags = flag_sets[k];
        fd = ka_uring_setup_call(KA_URING_ENTRIES, &p);
        if (fd >= 0 || errno != EINVAL)
            break; /* EINVAL: a flag this kernel does not know; try fewer */
    }
    if (fd < 0) {
        *err = errno;
        return NULL;
    }
    if (!(p.features & KA_IORING_FEAT_SINGLE_MMAP)) { /* before 5.4: far older than the 6.7 needed */
        close((int)fd);
        *err = ENOSYS;
        return NULL;
    }
    r = (ka_uring *)calloc(1, sizeof(*r));
    if (r == NULL) {
        close((int)fd);
        *err = ENOMEM;
        return NULL;
    }
    r->fd = (int)fd;
    r->entries = p.sq_entries;
    sq_size = (p.flags & KA_IORING_SETUP_NO_SQARRAY) ? 0 : p.sq_off.array + p.sq_entries * sizeof(uint32_t);
    cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct ka_uring_cqe);
    r->rings_size = sq_size > cq_size ? sq_size : cq_size;
    r->rings = mmap(NULL, r->rings_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                    (off_t)KA_IORING_OFF_SQ_RING);
    r->sqes_size = p.sq_entries * sizeof(struct ka_uring_sqe);
    r->sqes = (struct ka_uring_sqe *)mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE,
                                          MAP_SHARED | MAP_POPULATE, r->fd, (off_t)KA_IORING_OFF_SQES);
    if (r->rings == MAP_FAILED || r->sqes == MAP_FAILED) {
        *err = errno;
        ka_uring_destroy(r);
        return NULL;
    }
    base = (char *)r->rings;
    r->sq_tail = (uint32_t *)(base + p.sq_off.tail);
    r->sq_mask = *(uint32_t *)(base + p.sq_off.ring_mask);
    r->cq_head = (uint32_t *)(base + p.cq_off.head);
    r->cq_tail = (uint32_t *)(base + p.cq_off.tail);
    r->cq_mask = *(uint32_t *)(base + p.cq_off.ring_mask);
    r->cqes = (struct ka_uring_cqe *)(base + p.cq_off.cqes);
    if (!(p.flags & KA_IORING_SETUP_NO_SQARRAY)) {
        /* We fill SQEs in ring order, so the indirection array is the identity, set once. */
        uint32_t *array = (uint32_t *)(base + p.sq_off.array);
        for (i = 0; i < p.sq_entries; i++)
            array[i] = i;
    }
    return r;
}

/* One SOCKET_URING_OP_* command in the next free SQE (the caller makes sure there is one). */
static void ka_uring_put(ka_uring *r, uint32_t tail, uint32_t cmd, ka_fd_t fd, int level, int name,
                         void *value, uint8_t flags, uint64_t user_data)
{
    struct ka_uring_sqe *sqe = &r->sqes[tail & r->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = KA_IORING_OP_URING_CMD;
    sqe->flags = flags;
    sqe->fd = (int32_t)fd;
    sqe->cmd_op = cmd;
    sqe->level = (uint32_t)level;
    sqe->optname = (uint32_t)name;
    sqe->optlen = (uint32_t)sizeof(int);
    sqe->optval = (uint64_t)(uintptr_t)value;
    sqe->user_data = user_data;
}

/* Submit what was queued up to `tail` and wait for every completion; call on_cqe for each.
 * Returns 0, or an errno when the ring failed (the caller then falls back to the syscalls for
 * every socket whose chain did not complete). */
typedef void (*ka_uring_cqe_fn)(void *ctx, uint64_t user_data, int32_t res);

static int ka_uring_run(ka_uring *r, uint32_t tail, unsigned queued, ka_uring_cqe_fn on_cqe, void *ctx,
                        unsigned *completed)
{
    unsigned submitted = 0, to_submit, in_flight;
    int failure = 0;
    uint32_t head;
    long rc;
    *completed = 0;
    __atomic_store_n(r->sq_tail, tail, __ATOMIC_RELEASE);
    for (;;) {
        to_submit = failure ? 0 : queued - submitted;
        in_flight = submitted - *completed;
        if (to_submit == 0 && in_flight == 0)
            return failure;
        /* The kernel skips the wait when it took fewer than to_submit: this never blocks on an
         * entry it did not take. */
        rc = ka_uring_enter_call(r->fd, to_submit, to_submit + in_flight, KA_IORING_ENTER_GETEVENTS);
        if (rc < 0) {
            if (errno != EINTR) {
                if (to_submit == 0)
                    return errno; /* cannot even wait: the caller destroys the ring */
                failure = errno;  /* none of this submission went in: wait for what did */
            }
        } else {
            submitted += (unsigned)rc;
            if (rc == 0 && to_submit > 0)
                failure = EBUSY; /* the ring takes no more: finish what it has, no more */
        }
        head = *r->cq_head;
        while (head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
            struct ka_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
            on_cqe(ctx, cqe->user_data, cqe->res);
            head++;
            (*completed)++;
        }
        __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The pool of rings, and detection. A child after fork() must not use its parent's rings (they
 * share the mapped queues): an atfork handler drops the pool and bumps the generation, so a ring
 * made before the fork is destroyed, never reused, in the child.
 * ------------------------------------------------------------------------------------------- */
static pthread_mutex_t ka_uring_lock = PTHREAD_MUTEX_INITIALIZER;
static ka_uring *ka_uring_idle = NULL;
static unsigned ka_uring_idle_count = 0;
static unsigned long ka_uring_generation = 0;
static int ka_uring_state = 0;        /* 0: not probed, 1: usable, -1: not usable */
static int ka_uring_errno = 0;        /* why not */
static int ka_uring_getsockopt_tcp = -1; /* SOCKET_URING_OP_GETSOCKOPT at IPPROTO_TCP: 1 ok, else errno */
static pthread_once_t ka_uring_once = PTHREAD_ONCE_INIT;

static void ka_uring_after_fork_child(void)
{
    ka_uring *r = ka_uring_idle;
    pthread_mutex_init(&ka_uring_lock, NULL);
    ka_uring_idle = NULL;
    ka_uring_idle_count = 0;
    ka_uring_generation++;
    while (r != NULL) {
        ka_uring *next = r->next;
        ka_uring_destroy(r); /* the child's own mapping and descriptor; the parent keeps its ring */
        r = next;
    }
}

typedef struct {
    int32_t res[2];
} ka_uring_probe_result;

static void ka_uring_probe_cqe(void *ctx, uint64_t user_data, int32_t res)
{
    ((ka_uring_probe_result *)ctx)->res[user_data & 1] = res;
}

/* Run once: can this process make a ring, and does the kernel take a socket's setsockopt
 * through it (6.7+)? Also records whether getsockopt works at the TCP level (it does not: the
 * kernel's io_uring_cmd_getsockopt takes SOL_SOCKET only, so read_many keeps its syscalls). */
static void ka_uring_detect(void)
{
    int err = 0, sock, off = 0, value = 0;
    unsigned completed = 0;
    ka_uring_probe_result probe = {{1, 1}};
    ka_uring *r;
    pthread_atfork(NULL, NULL, ka_uring_after_fork_child);
    r = ka_uring_create(&err);
    if (r == NULL) {
        ka_uring_errno = err;
        ka_uring_state = -1;
        return;
    }
    sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        ka_uring_errno = errno;
        ka_uring_state = -1;
        ka_uring_destroy(r);
        return;
    }
    ka_uring_put(r, 0, KA_SOCKET_URING_OP_SETSOCKOPT, (ka_fd_t)sock, SOL_SOCKET, SO_KEEPALIVE, &off, 0, 0);
    ka_uring_put(r, 1, KA_SOCKET_URING_OP_GETSOCKOPT, (ka_fd_t)sock, IPPROTO_TCP, TCP_KEEPIDLE, &value, 0, 1);
    err = ka_uring_run(r, 2, 2, ka_uring_probe_cqe, &probe, &completed);
    close(sock);
    /* The probe's ring is closed: asking capabilities() must not leave a descriptor open in the
     * process; rings are kept only once backend="io_uring" has used one. */
    ka_uring_destroy(r);
    if (err == 0 && completed == 2 && probe.res[0] == 0) {
        ka_uring_state = 1;
        ka_uring_getsockopt_tcp = probe.res[1] >= 0 ? 1 : -probe.res[1];
        return;
    }
    ka_uring_errno = err ? err : (completed == 2 && probe.res[0] < 0 ? -probe.res[0] : EIO);
    ka_uring_state = -1;
}

/* 0 where bulk apply can go through io_uring, else the errno that ruled it out. */
static int ka_uring_status(void)
{
    pthread_once(&ka_uring_once, ka_uring_detect);
    return ka_uring_state == 1 ? 0 : ka_uring_errno;
}

/* 1 where SOCKET_URING_OP_GETSOCKOPT reads IPPROTO_TCP options, else the errno it gave (or -1:
 * not probed because io_uring is unusable). */
static inline int ka_uring_getsockopt_tcp_status(void)
{
    pthread_once(&ka_uring_once, ka_uring_detect);
    return ka_uring_getsockopt_tcp;
}

static ka_uring *ka_uring_acquire(void)
{
    ka_uring *r;
    int err = 0;
    if (ka_uring_status() != 0)
        return NULL;
    pthread_mutex_lock(&ka_uring_lock);
    r = ka_uring_idle;
    if (r != NULL) {
        ka_uring_idle = r->next;
        ka_uring_idle_count--;
    }
    pthread_mutex_unlock(&ka_uring_lock);
    if (r == NULL) {
        r = ka_uring_create(&err);
        if (r != NULL)
            r->generation = __atomic_load_n(&ka_uring_generation, __ATOMIC_RELAXED);
    }
    return r;
}

static void ka_uring_release(ka_uring *r, int broken)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&ka_uring_lock);
    if (!broken && r->generation == ka_uring_generation && ka_uring_idle_count < KA_URING_POOL) {
        r->next = ka_uring_idle;
        ka_uring_idle = r;
        ka_uring_idle_count++;
        r = NULL;
    }
    pthread_mutex_unlock(&ka_uring_lock);
    if (r != NULL)
        ka_uring_destroy(r);
}

/* ---------------------------------------------------------------------------------------------
 * Bulk apply on one ring.
 * ------------------------------------------------------------------------------------------- */
typedef struct {
    int32_t *errnos;
    uint8_t *options;
    uint8_t option;  /* the option of the phase being run */
    size_t base;     /* user_data holds index - base */
} ka_uring_apply_ctx;

static void ka_uring_apply_cqe(void *ctx, uint64_t user_data, int32_t res)
{
    ka_uring_apply_ctx *c = (ka_uring_apply_ctx *)ctx;
    size_t i = c->base + (size_t)user_data;
    if (res < 0) {
        c->errnos[i] = -res;
        c->options[i] = c->option;
    }
}

/* Apply p to fds[start, end) through the ring: errnos/options as ka_apply_one would give them.
 * The options go in phases, one per option in ka_apply_one's order: every socket's first option
 * by a system call, then the next option of those that took it in one submission, and so on, so
 * a socket whose option failed gets none of the later ones, as with the loop. A socket that failed through the ring is redone by ka_apply_one,
 * whose errno and option are the result.
 * *broken is set when the ring failed (it must not be reused); what it did not finish was done by
 * the system calls. Returns how many entries failed. */
static size_t ka_uring_apply(ka_uring *r, const void *fds, int width, size_t start, size_t end,
                             const ka_policy *p, int32_t *errnos, uint8_t *options, int *broken)
{
    struct step { int level, name; } steps[KA_URING_STEPS];
    uint8_t step_option[KA_URING_STEPS];
    unsigned nsteps = 0, k, queued, completed;
    size_t i, j, batch_end, failed = 0;
    uint32_t tail;
    ka_uring_apply_ctx ctx;
    int err = 0, option;
    /* The calls ka_apply_one makes, in its order (SO_KEEPALIVE first); -1 fields are left alone. */
    steps[nsteps].level = SOL_SOCKET; steps[nsteps].name = SO_KEEPALIVE;
    r->values[nsteps] = p->enable ? 1 : 0; step_option[nsteps++] = KA_OPT_KEEPALIVE;
    if (p->enable) {
        if (p->idle >= 0) {
            steps[nsteps].level = IPPROTO_TCP; steps[nsteps].name = KA_IDLE_OPTNAME;
            r->values[nsteps] = p->idle; step_option[nsteps++] = KA_OPT_IDLE;
        }
        if (p->interval >= 0) {
            steps[nsteps].level = IPPROTO_TCP; steps[nsteps].name = TCP_KEEPINTVL;
            r->values[nsteps] = p->interval; step_option[nsteps++] = KA_OPT_INTERVAL;
        }
        if (p->count >= 0) {
            steps[nsteps].level = IPPROTO_TCP; steps[nsteps].name = TCP_KEEPCNT;
            r->values[nsteps] = p->count; step_option[nsteps++] = KA_OPT_COUNT;
        }
    }
    if (p->user_timeout_ms >= 0) {
        steps[nsteps].level = IPPROTO_TCP; steps[nsteps].name = TCP_USER_TIMEOUT;
        r->values[nsteps] = p->user_timeout_ms; step_option[nsteps++] = KA_OPT_USER_TIMEOUT;
    }

    ctx.errnos = errnos;
    ctx.options = options;
    *broken = 0;
    for (i = start; i < end; i = batch_end) {
        batch_end = end - i > r->entries ? i + r->entries : end;
        ctx.base = i;
        /* The first option by a system call, which also proves the descriptor is a socket:
         * io_uring would hand a command to any file with a uring_cmd handler (/dev/null takes
         * every command and answers 0; NVMe and ublk devices have commands of their own). */
        for (j = i; j < batch_end; j++) {
            errnos[j] = ka_set_int(ka_fd_at(fds, width, j), steps[0].level, steps[0].name, r->values[0]);
            options[j] = errnos[j] ? step_option[0] : KA_OPT_NONE;
        }
        for (k = 1; k < nsteps && err == 0; k++) {
            ctx.option = step_option[k];
            tail = *r->sq_tail;
            queued = 0;
            for (j = i; j < batch_end; j++) {
                if (errnos[j] != 0)
                    continue; /* an earlier option failed: the loop would have stopped there */
                ka_uring_put(r, tail++, KA_SOCKET_URING_OP_SETSOCKOPT, ka_fd_at(fds, width, j),
                             steps[k].level, steps[k].name, &r->values[k], 0, (uint64_t)(j - i));
                queued++;
            }
            if (queued == 0)
                break;
            err = ka_uring_run(r, tail, queued, ka_uring_apply_cqe, &ctx, &completed);
            if (err == 0 && completed != queued)
                err = EIO;
        }
        if (err != 0) {
            /* The ring gave up part-way: this batch and the rest go through the system calls,
             * which set the same values again where the ring already had. */
            *broken = 1;
            for (j = i; j < end; j++) {
                errnos[j] = ka_apply_one(ka_fd_at(fds, width, j), p, &option);
                options[j] = (uint8_t)option;
                failed += errnos[j] != 0;
            }
            return failed;
        }
        for (j = i; j < batch_end; j++) {
            if (errnos[j] != 0 && options[j] != step_option[0]) {
                /* Failed through the ring: redone by the system calls, whose errno and option
                 * are the result. A first option's failure already is a system call's. */
                errnos[j] = ka_apply_one(ka_fd_at(fds, width, j), p, &option);
                options[j] = (uint8_t)option;
            }
            failed += errnos[j] != 0;
        }
    }
    return failed;
}

#else /* not Linux, or KA_NO_URING (the recording stand-in) */
#  define KA_HAVE_URING 0
static inline int ka_uring_status(void) { return ENOSYS; }
static inline int ka_uring_getsockopt_tcp_status(void) { return -1; }
#endif

#endif /* KA_URING_H */
