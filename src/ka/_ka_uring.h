/*
 * ka/_ka_uring.h: bulk apply through io_uring on Linux (IORING_OP_URING_CMD with
 * SOCKET_URING_OP_SETSOCKOPT, Linux 6.7+): the options of many sockets go to the kernel in a few
 * submissions instead of one system call each.
 *
 *   ka_uring_status()      0 where usable, else the errno that ruled it out (asked again later
 *                          where the cause can pass: ka_uring_refusal_is_final)
 *   ka_uring_for_thread()  this thread's ring, made on first use; NULL: use the system calls
 *   ka_uring_apply()       apply a policy to fds[start, end) on it; the same results as the loop
 *   ka_uring_drop_thread() end this thread's ring now (one that failed; ka.release_workers)
 *
 * A ring has no descriptor. It is made with IORING_SETUP_REGISTERED_FD_ONLY and
 * IORING_SETUP_NO_MMAP (Linux 6.5+): the kernel puts it in the calling thread's registered-ring
 * table (per thread, 16 slots) instead of the fd table, and its queues live in pages ka mapped
 * itself. So no number in the fd table is ever ka's: a program that closes descriptors it does
 * not know (closerange while daemonizing) closes no ring, and ka never closes, or submits to, a
 * number that might have been reused. Only the thread that made a ring can use it, so each
 * thread (a caller or a worker) has its own: the kernel drops a thread's registered rings when
 * it exits, and a thread-key destructor unmaps the pages. fork(): the child's thread starts with
 * an empty table and the pages are MADV_DONTFORK, so a child holds nothing of any ring, in use
 * or not; the forking thread's record of its ring is forgotten in the child (never unmapped:
 * that range is no longer the child's).
 *
 * No liburing: the ABI is three system calls and a few structures, defined here under our own
 * names (the manylinux images' kernel headers predate io_uring). The first option of every socket
 * goes by a system call, which proves the descriptor is a socket before any command is sent to
 * it; the others go one phase per option in ka_apply_one's order, over batches of
 * KA_URING_BATCH sockets, a socket whose option failed getting none of the later ones, as with
 * the syscall loop; every socket that failed through the ring is redone by ka_apply_one, whose
 * errno and option are the result. Included by _ka_bulk.h; everything is static.
 */
#ifndef KA_URING_H
#define KA_URING_H

#include "_ka_fds.h"

#if defined(__linux__) && !defined(KA_NO_URING)
#  define KA_HAVE_URING 1

#  include <stdlib.h>
#  include <sys/mman.h>
#  include <sys/syscall.h>
#  include <time.h>
#  include <unistd.h>
#  include <pthread.h>

/* unistd.h declares syscall() only with _DEFAULT_SOURCE, which -std=c99 turns off. */
long syscall(long number, ...);
/* Hidden by -std=c99 (they are not POSIX); the values are the Linux ABI. */
#  ifndef MADV_DONTFORK
#    define MADV_DONTFORK 10
#  endif
#  ifndef MAP_ANONYMOUS
#    if defined(__mips__)
#      define MAP_ANONYMOUS 0x800
#    elif defined(__hppa__) || defined(__alpha__)
#      define MAP_ANONYMOUS 0x10
#    else
#      define MAP_ANONYMOUS 0x20
#    endif
#  endif
int madvise(void *addr, size_t length, int advice);

#  ifndef __NR_io_uring_setup
#    define __NR_io_uring_setup 425 /* the same numbers on every architecture (since Linux 5.1) */
#  endif
#  ifndef __NR_io_uring_enter
#    define __NR_io_uring_enter 426
#  endif
#  ifndef __NR_io_uring_register
#    define __NR_io_uring_register 427
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

struct ka_uring_rsrc_update { /* IORING_UNREGISTER_RING_FDS: which slot */
    uint32_t offset, resv;
    uint64_t data;
};

#  define KA_IORING_SETUP_CQSIZE (1U << 3)
#  define KA_IORING_SETUP_SUBMIT_ALL (1U << 7)
#  define KA_IORING_SETUP_COOP_TASKRUN (1U << 8)
#  define KA_IORING_SETUP_NO_MMAP (1U << 14)              /* 6.5: the queues in our own pages */
#  define KA_IORING_SETUP_REGISTERED_FD_ONLY (1U << 15)   /* 6.5: a table slot, no descriptor */
#  define KA_IORING_SETUP_NO_SQARRAY (1U << 16)           /* 6.6 */
#  define KA_IORING_ENTER_GETEVENTS (1U << 0)
#  define KA_IORING_ENTER_REGISTERED_RING (1U << 4)
#  define KA_IORING_UNREGISTER_RING_FDS 21u
#  define KA_IORING_REGISTER_USE_REGISTERED_RING (1U << 31)
#  define KA_IORING_OP_URING_CMD 46
#  define KA_SOCKET_URING_OP_GETSOCKOPT 2
#  define KA_SOCKET_URING_OP_SETSOCKOPT 3

#  ifndef KA_URING_ENTRIES
#    define KA_URING_ENTRIES 256u  /* SQEs per ring where the kernel takes queues of several pages */
#  endif
#  define KA_URING_ENTRIES_ONE_PAGE 64u  /* 64 SQEs fill one 4 KiB page: what 6.5-6.12 take */
#  define KA_URING_BATCH 256u    /* sockets per batch: still in cache from one phase to the next */
#  define KA_URING_STEPS 5       /* options per socket at most: on/off, idle, interval, count, UTO */
/* Room for struct io_rings before its CQEs (64 bytes on 6.18, a few cache lines on older
 * kernels or 256-byte lines): a guard page after it turns any shortfall into EFAULT at setup. */
#  define KA_URING_RINGS_HEADER 2048u

typedef struct ka_uring {
    unsigned index;            /* its slot in the thread's registered-ring table: no descriptor */
    unsigned entries;
    char *memory;              /* rings, a guard page, SQEs: pages ka mapped, pinned by the kernel */
    size_t memory_size;
    struct ka_uring_sqe *sqes;
    uint32_t *sq_tail, *cq_head, *cq_tail;
    uint32_t sq_mask, cq_mask;
    struct ka_uring_cqe *cqes;
    unsigned long generation;  /* the fork generation it was made in */
    int values[KA_URING_STEPS]; /* what the current policy's options point to */
} ka_uring;

static long ka_uring_setup_call(unsigned entries, struct ka_uring_params *p)
{
    return syscall(__NR_io_uring_setup, entries, p);
}

static long ka_uring_enter_call(const ka_uring *r, unsigned to_submit, unsigned min_complete)
{
    return syscall(__NR_io_uring_enter, (int)r->index, to_submit, min_complete,
                   KA_IORING_ENTER_GETEVENTS | KA_IORING_ENTER_REGISTERED_RING, NULL, 0);
}

static size_t ka_page_round(size_t n, size_t page) { return (n + page - 1) / page * page; }

/* Free a ring's record and pages, in the thread that made it and the process it was made in:
 * its slot is emptied first (the kernel frees the ring once no request holds it; none does
 * between calls), then the pages are unmapped. */
static void ka_uring_destroy(ka_uring *r)
{
    struct ka_uring_rsrc_update slot;
    memset(&slot, 0, sizeof(slot));
    slot.offset = r->index;
    syscall(__NR_io_uring_register, (int)r->index,
            KA_IORING_UNREGISTER_RING_FDS | KA_IORING_REGISTER_USE_REGISTERED_RING, &slot, 1);
    munmap(r->memory, r->memory_size);
    free(r);
}

/* One attempt at a ring of `entries` SQEs; NULL with *err set. */
static ka_uring *ka_uring_make(unsigned entries, int *err)
{
    struct ka_uring_params p;
    ka_uring *r;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t rings_size = ka_page_round(KA_URING_RINGS_HEADER + entries * sizeof(struct ka_uring_cqe), page);
    size_t sqes_size = ka_page_round(entries * sizeof(struct ka_uring_sqe), page);
    size_t size = rings_size + page + sqes_size;
    char *memory;
    long index;
    memory = (char *)mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) {
        *err = errno;
        return NULL;
    }
    /* A child after fork() gets none of these pages; the guard page stops the kernel at the
     * end of the rings' pages, should its struct io_rings be larger than KA_URING_RINGS_HEADER. */
    if (madvise(memory, size, MADV_DONTFORK) != 0 || mprotect(memory + rings_size, page, PROT_NONE) != 0) {
        *err = errno;
        munmap(memory, size);
        return NULL;
    }
    memset(&p, 0, sizeof(p));
    p.flags = KA_IORING_SETUP_NO_MMAP | KA_IORING_SETUP_REGISTERED_FD_ONLY | KA_IORING_SETUP_NO_SQARRAY |
              KA_IORING_SETUP_CQSIZE | KA_IORING_SETUP_SUBMIT_ALL | KA_IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = entries; /* never more than one SQ's worth in flight */
    p.cq_off.user_addr = (uint64_t)(uintptr_t)memory;
    p.sq_off.user_addr = (uint64_t)(uintptr_t)(memory + rings_size + page);
    index = ka_uring_setup_call(entries, &p);
    if (index < 0) {
        *err = errno;
        munmap(memory, size);
        return NULL;
    }
    r = (ka_uring *)calloc(1, sizeof(*r));
    if (r == NULL) {
        struct ka_uring_rsrc_update slot;
        memset(&slot, 0, sizeof(slot));
        slot.offset = (uint32_t)index;
        syscall(__NR_io_uring_register, (int)index,
                KA_IORING_UNREGISTER_RING_FDS | KA_IORING_REGISTER_USE_REGISTERED_RING, &slot, 1);
        munmap(memory, size);
        *err = ENOMEM;
        return NULL;
    }
    r->index = (unsigned)index;
    r->memory = memory;
    r->memory_size = size;
    r->entries = p.sq_entries;
    r->sqes = (struct ka_uring_sqe *)(memory + rings_size + page);
    r->sq_tail = (uint32_t *)(memory + p.sq_off.tail);
    r->sq_mask = *(uint32_t *)(memory + p.sq_off.ring_mask);
    r->cq_head = (uint32_t *)(memory + p.cq_off.head);
    r->cq_tail = (uint32_t *)(memory + p.cq_off.tail);
    r->cq_mask = *(uint32_t *)(memory + p.cq_off.ring_mask);
    r->cqes = (struct ka_uring_cqe *)(memory + p.cq_off.cqes);
    if (p.cq_off.cqes + p.cq_entries * sizeof(struct ka_uring_cqe) > rings_size || p.sq_entries > entries) {
        ka_uring_destroy(r); /* cannot happen past the guard page; never use memory we did not size */
        *err = EFAULT;
        return NULL;
    }
    return r;
}

/* A new ring for the calling thread, or NULL with *err set (ENOSYS: no io_uring; EPERM:
 * kernel.io_uring_disabled or a seccomp filter; EINVAL: a kernel before 6.6; ENOMEM: the
 * locked-memory limit; EBUSY: the thread's 16 registered-ring slots are taken). Queues of several
 * pages need 6.13+ (earlier kernels took only physically contiguous pages: EINVAL), so a ring
 * whose queues fit one page each is the fallback. */
static unsigned ka_uring_entries = KA_URING_ENTRIES;

static ka_uring *ka_uring_create(int *err)
{
    unsigned entries = __atomic_load_n(&ka_uring_entries, __ATOMIC_RELAXED);
    ka_uring *r = ka_uring_make(entries, err);
    if (r == NULL && entries > KA_URING_ENTRIES_ONE_PAGE && (*err == EINVAL || *err == EFAULT)) {
        r = ka_uring_make(KA_URING_ENTRIES_ONE_PAGE, err);
        if (r != NULL)
            __atomic_store_n(&ka_uring_entries, KA_URING_ENTRIES_ONE_PAGE, __ATOMIC_RELAXED);
    }
    return r;
}

/* Submit what was queued up to `tail` and wait for every completion; call on_cqe for each.
 * Returns 0, or an errno when the ring failed (the caller then falls back to the syscalls for
 * every socket whose command did not complete). */
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
        rc = ka_uring_enter_call(r, to_submit, to_submit + in_flight);
        if (rc < 0) {
            if (errno != EINTR) {
                if (to_submit == 0)
                    return errno; /* cannot even wait: the caller drops the ring */
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

/* ---------------------------------------------------------------------------------------------
 * Detection, and each thread's ring.
 * ------------------------------------------------------------------------------------------- */
static pthread_mutex_t ka_uring_state_lock = PTHREAD_MUTEX_INITIALIZER;
static int ka_uring_state = 0;            /* 0: not asked yet, 1: usable, -1: not here, -2: refused for now */
static int ka_uring_errno = 0;            /* why not */
static long long ka_uring_asked = 0;      /* when it was refused for now (time(), seconds) */
static int ka_uring_getsockopt_tcp = -1;  /* SOCKET_URING_OP_GETSOCKOPT at IPPROTO_TCP: 1 ok, else errno */
static unsigned long ka_uring_generation = 0; /* bumped in a child after fork() */
static pthread_key_t ka_uring_key;
static int ka_uring_key_ready = 0;

/* 1 where a refusal holds for the life of the process: no io_uring in this kernel or hidden by
 * seccomp (ENOSYS), or a kernel without the flags or the socket command (EINVAL, EOPNOTSUPP).
 * Anything else can pass (EMFILE, ENOMEM, EPERM from kernel.io_uring_disabled) and is asked
 * again, at most once a second. */
static int ka_uring_refusal_is_final(int err)
{
    return err == ENOSYS || err == EINVAL || err == EOPNOTSUPP;
}

typedef struct {
    int32_t res[2];
} ka_uring_probe_result;

static void ka_uring_probe_cqe(void *ctx, uint64_t user_data, int32_t res)
{
    ((ka_uring_probe_result *)ctx)->res[user_data & 1] = res;
}

/* Can this thread make a ring, and does the kernel take a socket's setsockopt through it (6.7+)?
 * Also records whether getsockopt works at the TCP level (it does not: the kernel's
 * io_uring_cmd_getsockopt takes SOL_SOCKET only, so read_many keeps its syscalls).
 * Returns 0 or why not. Called with ka_uring_state_lock held. */
static int ka_uring_probe(void)
{
    int err = 0, sock, off = 0, value = 0;
    unsigned completed = 0;
    ka_uring_probe_result probe = {{1, 1}};
    ka_uring *r = ka_uring_create(&err);
    if (r == NULL)
        return err;
    sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        err = errno;
        ka_uring_destroy(r);
        return err;
    }
    ka_uring_put(r, 0, KA_SOCKET_URING_OP_SETSOCKOPT, (ka_fd_t)sock, SOL_SOCKET, SO_KEEPALIVE, &off, 0, 0);
    ka_uring_put(r, 1, KA_SOCKET_URING_OP_GETSOCKOPT, (ka_fd_t)sock, IPPROTO_TCP, TCP_KEEPIDLE, &value, 0, 1);
    err = ka_uring_run(r, 2, 2, ka_uring_probe_cqe, &probe, &completed);
    close(sock);
    ka_uring_destroy(r); /* the probe's own ring: a thread gets its ring on its first batch */
    if (err == 0 && completed == 2 && probe.res[0] == 0) {
        ka_uring_getsockopt_tcp = probe.res[1] >= 0 ? 1 : -probe.res[1];
        return 0;
    }
    return err ? err : (completed == 2 && probe.res[0] < 0 ? -probe.res[0] : EIO);
}

/* 0 where bulk apply can go through io_uring, else the errno that ruled it out. */
static int ka_uring_status(void)
{
    int state = __atomic_load_n(&ka_uring_state, __ATOMIC_ACQUIRE), err;
    if (state == 1)
        return 0;
    if (state == -1 || (state == -2 && (long long)time(NULL) == __atomic_load_n(&ka_uring_asked, __ATOMIC_RELAXED)))
        return __atomic_load_n(&ka_uring_errno, __ATOMIC_RELAXED);
    pthread_mutex_lock(&ka_uring_state_lock);
    state = ka_uring_state;
    if (state == 0 || (state == -2 && (long long)time(NULL) != ka_uring_asked)) {
        err = ka_uring_probe();
        __atomic_store_n(&ka_uring_errno, err, __ATOMIC_RELAXED);
        __atomic_store_n(&ka_uring_asked, (long long)time(NULL), __ATOMIC_RELAXED);
        state = err == 0 ? 1 : (ka_uring_refusal_is_final(err) ? -1 : -2);
        __atomic_store_n(&ka_uring_state, state, __ATOMIC_RELEASE);
    }
    err = state == 1 ? 0 : ka_uring_errno;
    pthread_mutex_unlock(&ka_uring_state_lock);
    return err;
}

/* 1 where SOCKET_URING_OP_GETSOCKOPT reads IPPROTO_TCP options, else the errno it gave (or -1:
 * not probed because io_uring is unusable). */
static inline int ka_uring_getsockopt_tcp_status(void)
{
    return ka_uring_status() == 0 ? ka_uring_getsockopt_tcp : -1;
}

/* A thread's ring when the thread ends: its own (the kernel drops the slot at exit anyway), or
 * a record from before a fork(), whose slot and pages this process never had. */
static void ka_uring_thread_exit(void *value)
{
    ka_uring *r = (ka_uring *)value;
    if (r->generation == __atomic_load_n(&ka_uring_generation, __ATOMIC_RELAXED))
        ka_uring_destroy(r);
    else
        free(r);
}

/* When a thread last failed to make a ring (time(), seconds): ENOMEM under a low locked-memory
 * limit, EBUSY with 16 registered rings taken. Not tried again within that second, so such a
 * process does not pay a failing setup on every call. */
static long long ka_uring_make_failed = -1;

/* This thread's ring, made on its first batch; NULL: go by the system calls this time. */
static ka_uring *ka_uring_for_thread(void)
{
    ka_uring *r;
    unsigned long generation;
    long long now;
    int err = 0;
    if (!ka_uring_key_ready || ka_uring_status() != 0)
        return NULL;
    generation = __atomic_load_n(&ka_uring_generation, __ATOMIC_RELAXED);
    r = (ka_uring *)pthread_getspecific(ka_uring_key);
    if (r != NULL && r->generation == generation)
        return r;
    if (r != NULL) {
        free(r); /* made in the parent before fork(): not this process's slot, nor its pages */
        pthread_setspecific(ka_uring_key, NULL);
    }
    now = (long long)time(NULL);
    if (now == __atomic_load_n(&ka_uring_make_failed, __ATOMIC_RELAXED))
        return NULL;
    r = ka_uring_create(&err);
    if (r == NULL) {
        __atomic_store_n(&ka_uring_make_failed, now, __ATOMIC_RELAXED);
        return NULL;
    }
    r->generation = generation;
    if (pthread_setspecific(ka_uring_key, r) != 0) {
        ka_uring_destroy(r); /* a ring nothing would end: not made at all */
        return NULL;
    }
    return r;
}

/* End this thread's ring now; the next batch makes another. */
static void ka_uring_drop_thread(void)
{
    ka_uring *r;
    if (!ka_uring_key_ready)
        return;
    r = (ka_uring *)pthread_getspecific(ka_uring_key);
    if (r != NULL) {
        pthread_setspecific(ka_uring_key, NULL);
        ka_uring_thread_exit(r);
    }
}

/* Once, before any other call (ka_bulk_init): the key whose destructor ends a thread's ring. */
static void ka_uring_init(void)
{
    if (!ka_uring_key_ready && pthread_key_create(&ka_uring_key, ka_uring_thread_exit) == 0)
        ka_uring_key_ready = 1;
}

/* Around fork(), called by _ka_bulk.h's handlers: the detection's lock is held across it, so the
 * child's copy is consistent; in the child, every ring record is stale. */
static void ka_uring_before_fork(void) { pthread_mutex_lock(&ka_uring_state_lock); }
static void ka_uring_after_fork_parent(void) { pthread_mutex_unlock(&ka_uring_state_lock); }
static void ka_uring_after_fork_child(void)
{
    pthread_mutex_init(&ka_uring_state_lock, NULL);
    ka_uring_generation++;
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
 * Batches of KA_URING_BATCH sockets go option by option, in ka_apply_one's order: every
 * socket's first option by a system call (which proves it is a socket), then each later option
 * for the sockets that took every option before it, in submissions of up to the ring's size, so
 * a socket whose option failed gets none of the later ones, as with the loop. A batch stays in
 * the cache from one option to the next (1024-socket batches overran it between phases). A
 * socket that failed through the ring is redone by ka_apply_one, whose errno and option are the
 * result. *broken is set when the ring failed (the caller drops it); what it did not finish was
 * done by the system calls. Returns how many entries failed. */
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
        batch_end = end - i > KA_URING_BATCH ? i + KA_URING_BATCH : end;
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
            for (j = i; j < batch_end && err == 0;) {
                tail = *r->sq_tail;
                queued = 0;
                for (; j < batch_end && queued < r->entries; j++) {
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
static inline int ka_uring_refusal_is_final(int err) { (void)err; return 1; }
static inline void ka_uring_drop_thread(void) {}
static inline void ka_uring_init(void) {}
static inline void ka_uring_before_fork(void) {}
static inline void ka_uring_after_fork_parent(void) {}
static inline void ka_uring_after_fork_child(void) {}
#endif

#endif /* KA_URING_H */
