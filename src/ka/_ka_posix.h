/*
 * ka/_ka_posix.h: the POSIX family (Linux, macOS, FreeBSD/DragonFly/NetBSD/OpenBSD, other
 * POSIX such as Cygwin): option names and limits per system, then whole functions that serve
 * all of them. Included by _platform.h only.
 */
#ifndef KA_POSIX_H
#define KA_POSIX_H

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <time.h>

typedef int ka_fd_t;
#define KA_FD_IS_INT 1
#define KA_LAST_ERROR() errno
#define KA_EINTR EINTR

/* ---------------------------------------------------------------------------------------------
 * Per-system option names and limits (seconds for idle/interval, probes for count,
 * milliseconds for the user timeout). A limit of 0 means the knob does not exist there.
 * ------------------------------------------------------------------------------------------- */
#if defined(__APPLE__)
#  define KA_PLATFORM KA_PLATFORM_DARWIN
/* XNU netinet/tcp.h hides these when _POSIX_C_SOURCE is set without _DARWIN_C_SOURCE; the
 * values are the kernel ABI (TCP_KEEPINTVL and TCP_KEEPCNT since OS X 10.8). */
#  ifndef TCP_KEEPALIVE
#    define TCP_KEEPALIVE 0x10
#  endif
#  ifndef TCP_KEEPINTVL
#    define TCP_KEEPINTVL 0x101
#  endif
#  ifndef TCP_KEEPCNT
#    define TCP_KEEPCNT 0x102
#  endif
#  ifndef TCP_RXT_CONNDROPTIME
#    define TCP_RXT_CONNDROPTIME 0x80
#  endif
/* xnu tcp_usrreq.c takes idle and interval up to UINT32_MAX / 1000 s, but tcp_timer.c compares
 * them as int32 milliseconds: from 2147484 s on the timer counts as expired at once. */
#  define KA_IDLE_OPTNAME TCP_KEEPALIVE
#  define KA_MAX_IDLE 2147483
#  define KA_MAX_INTERVAL 2147483
#  define KA_MAX_COUNT 2147483647
/* TCP_RXT_CONNDROPTIME: int seconds >= 0, stored as seconds * TCP_RETRANSHZ (1000) in an int. */
#  define KA_USER_TIMEOUT_OPTNAME TCP_RXT_CONNDROPTIME
#  define KA_USER_TIMEOUT_UNIT_MS 1000
#  define KA_MAX_USER_TIMEOUT_MS 2147483000
#elif defined(__linux__)
#  define KA_PLATFORM KA_PLATFORM_LINUX
#  ifndef TCP_USER_TIMEOUT
#    define TCP_USER_TIMEOUT 18     /* since Linux 2.6.37; old libc headers lack it */
#  endif
#  define KA_IDLE_OPTNAME TCP_KEEPIDLE
/* include/net/tcp.h: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT */
#  define KA_MAX_IDLE 32767
#  define KA_MAX_INTERVAL 32767
#  define KA_MAX_COUNT 127
#  define KA_USER_TIMEOUT_OPTNAME TCP_USER_TIMEOUT
#  define KA_USER_TIMEOUT_UNIT_MS 1
#  define KA_MAX_USER_TIMEOUT_MS 2147483647
#elif defined(__FreeBSD__) || defined(__DragonFly__) || defined(__NetBSD__) || defined(__OpenBSD__)
#  define KA_PLATFORM KA_PLATFORM_FREEBSD
#  if defined(__DragonFly__)
#    include <sys/param.h>
#    if !defined(__DragonFly_version) || __DragonFly_version < 500702
/* Before 5.8 (500702) DragonFly took TCP_KEEPIDLE/TCP_KEEPINTVL in milliseconds. */
#      error "ka needs DragonFly 5.8 or later: older releases take keepalive times in milliseconds"
#    endif
#  endif
#  if !defined(__OpenBSD__) && !(defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT))
/* FreeBSD and NetBSD hide these under __BSD_VISIBLE / _NETBSD_SOURCE, e.g. with _XOPEN_SOURCE. */
#    error "TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT are hidden: do not build ka with _XOPEN_SOURCE or _POSIX_C_SOURCE"
#  endif
/* OpenBSD has no per-socket keepalive times: KA_HAVE_* are 0 and capabilities() says so. */
#  if defined(TCP_KEEPIDLE)
#    define KA_IDLE_OPTNAME TCP_KEEPIDLE
#  endif
/* FreeBSD tcp_usrreq.c: idle and interval are u_int seconds, EINVAL above UINT_MAX / hz; the
 * cap INT_MAX / 1000 (= UINT_MAX / 2000) holds for any kern.hz up to 2000. Count: any u_int. */
#  define KA_MAX_IDLE 2147483
#  define KA_MAX_INTERVAL 2147483
#  define KA_MAX_COUNT 2147483647
#  define KA_MAX_USER_TIMEOUT_MS 0
#else
#  define KA_PLATFORM KA_PLATFORM_OTHER
#  if defined(TCP_KEEPIDLE)
#    define KA_IDLE_OPTNAME TCP_KEEPIDLE
#  endif
#  define KA_MAX_IDLE 32767
#  define KA_MAX_INTERVAL 32767
#  define KA_MAX_COUNT 127
#  define KA_MAX_USER_TIMEOUT_MS 0
#endif

/* Which knobs this build can set (1) or not (0). */
#if defined(KA_IDLE_OPTNAME)
#  define KA_HAVE_IDLE 1
#else
#  define KA_HAVE_IDLE 0
#endif
#if defined(TCP_KEEPINTVL)
#  define KA_HAVE_INTERVAL 1
#else
#  define KA_HAVE_INTERVAL 0
#endif
#if defined(TCP_KEEPCNT)
#  define KA_HAVE_COUNT 1
#else
#  define KA_HAVE_COUNT 0
#endif
#if defined(KA_USER_TIMEOUT_OPTNAME)
#  define KA_HAVE_USER_TIMEOUT 1
#else
#  define KA_HAVE_USER_TIMEOUT 0
#endif

#ifndef ENOPROTOOPT
#  define ENOPROTOOPT 92
#endif
#define KA_ENOPROTOOPT ENOPROTOOPT

/* ---------------------------------------------------------------------------------------------
 * One option
 * ------------------------------------------------------------------------------------------- */
static inline int ka_set_int(ka_fd_t fd, int level, int name, int value)
{
    int rc;
    do {
        rc = setsockopt(fd, level, name, &value, (socklen_t)sizeof(value));
    } while (rc != 0 && errno == KA_EINTR);
    return rc == 0 ? 0 : errno;
}

static inline int ka_get_int(ka_fd_t fd, int level, int name, int *value)
{
    int rc;
    int v = 0;
    socklen_t len = (socklen_t)sizeof(v);
    do {
        rc = getsockopt(fd, level, name, &v, &len);
    } while (rc != 0 && errno == KA_EINTR);
    if (rc != 0)
        return errno;
    *value = v;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * One descriptor. Order: SO_KEEPALIVE, then idle, interval, count, user timeout. SO_KEEPALIVE
 * goes first because XNU re-arms the keepalive timer with the socket's own idle only when
 * TCP_KEEPALIVE is set on a socket that already has SO_KEEPALIVE (tcp_usrreq.c); set last, the
 * timer stays at the 2 h default. Linux re-arms either way. If a later option fails, the socket
 * holds SO_KEEPALIVE and the options before the failing one.
 * Returns 0, or the errno of the first failing call with *option naming it.
 * ------------------------------------------------------------------------------------------- */
static int ka_apply_one(ka_fd_t fd, const ka_policy *p, int *option)
{
    int err;
    *option = KA_OPT_KEEPALIVE;
    if ((err = ka_set_int(fd, SOL_SOCKET, SO_KEEPALIVE, p->enable ? 1 : 0)) != 0)
        return err;
    if (p->enable) {
        if (p->idle >= 0) {
            *option = KA_OPT_IDLE;
#if KA_HAVE_IDLE
            err = ka_set_int(fd, IPPROTO_TCP, KA_IDLE_OPTNAME, p->idle);
#else
            err = KA_ENOPROTOOPT;
#endif
            if (err)
                return err;
        }
        if (p->interval >= 0) {
            *option = KA_OPT_INTERVAL;
#if KA_HAVE_INTERVAL
            err = ka_set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, p->interval);
#else
            err = KA_ENOPROTOOPT;
#endif
            if (err)
                return err;
        }
        if (p->count >= 0) {
            *option = KA_OPT_COUNT;
#if KA_HAVE_COUNT
            err = ka_set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, p->count);
#else
            err = KA_ENOPROTOOPT;
#endif
            if (err)
                return err;
        }
    }
    if (p->user_timeout_ms >= 0) {
        *option = KA_OPT_USER_TIMEOUT;
#if KA_HAVE_USER_TIMEOUT
        /* macOS takes whole seconds: round up, so the timeout is never shorter than asked. */
        err = ka_set_int(fd, IPPROTO_TCP, KA_USER_TIMEOUT_OPTNAME,
                         (int)(((long long)p->user_timeout_ms + KA_USER_TIMEOUT_UNIT_MS - 1) /
                               KA_USER_TIMEOUT_UNIT_MS));
#else
        err = KA_ENOPROTOOPT;
#endif
        if (err)
            return err;
    }
    *option = KA_OPT_NONE;
    return 0;
}

/* NetBSD's tcp_ctloutput (tcp_usrreq.c 1.209) sets TCP_KEEPIDLE/INTVL/CNT but answers their
 * getsockopt with ENOPROTOOPT: read as unknown (-1), as on Windows builds that lack them. */
#if defined(__NetBSD__)
#  define KA_KNOB_UNREADABLE(err) ((err) == ENOPROTOOPT)
#else
#  define KA_KNOB_UNREADABLE(err) 0
#endif
static inline int ka_get_knob(ka_fd_t fd, int name, int *value)
{
    int err = ka_get_int(fd, IPPROTO_TCP, name, value);
    if (err && KA_KNOB_UNREADABLE(err)) {
        *value = -1;
        err = 0;
    }
    return err;
}

/* One knob's value in ka's units (seconds, probes, milliseconds), for ka_read_one (_platform.h).
 * A knob this platform lacks leaves *value as it is (-1: unknown) and is not an error. */
static int ka_read_knob(ka_fd_t fd, int option, int *value)
{
    int err = 0;
    switch (option) {
#if KA_HAVE_IDLE
    case KA_OPT_IDLE:
        return ka_get_knob(fd, KA_IDLE_OPTNAME, value);
#endif
#if KA_HAVE_INTERVAL
    case KA_OPT_INTERVAL:
        return ka_get_knob(fd, TCP_KEEPINTVL, value);
#endif
#if KA_HAVE_COUNT
    case KA_OPT_COUNT:
        return ka_get_knob(fd, TCP_KEEPCNT, value);
#endif
#if KA_HAVE_USER_TIMEOUT
    case KA_OPT_USER_TIMEOUT:
        err = ka_get_int(fd, IPPROTO_TCP, KA_USER_TIMEOUT_OPTNAME, value);
        if (!err && *value > 0 && *value <= KA_MAX_USER_TIMEOUT_MS / KA_USER_TIMEOUT_UNIT_MS)
            *value *= KA_USER_TIMEOUT_UNIT_MS;
        break;
#endif
    default:
        break;
    }
    (void)fd;
    (void)value; /* no knob at all here (OpenBSD): every value stays -1 */
    return err;
}

/* ---------------------------------------------------------------------------------------------
 * Threads, for _ka_bulk.h
 * ------------------------------------------------------------------------------------------- */
#if defined(__linux__)
#  include <sched.h>
#  include <sys/syscall.h>
#  include <unistd.h>
/* unistd.h declares syscall() only with _DEFAULT_SOURCE, which -std=c99 turns off. */
long syscall(long number, ...);
#endif

typedef pthread_t ka_thread_t;
typedef void *ka_thread_ret;
#define KA_THREAD_CALL
#define KA_THREAD_DONE NULL
typedef ka_thread_ret (KA_THREAD_CALL *ka_thread_proc)(void *);

static int ka_thread_start(ka_thread_t *t, ka_thread_proc proc, void *arg)
{
    return pthread_create(t, NULL, proc, arg) == 0 ? 0 : -1;
}

/* The calling thread's id in the kernel, for ka_thread_join: Linux's tid, 0 elsewhere. */
static long ka_thread_os_id(void)
{
#if defined(__linux__)
    return syscall(SYS_gettid);
#else
    return 0;
#endif
}

/* Wait until thread t has ended. pthread_join returns once the kernel clears the thread's tid,
 * a moment before Linux releases the task; until then /proc/self/stat (CPython's fork warning)
 * and RLIMIT_NPROC still count it, so wait for that too (os_id: its ka_thread_os_id()). */
static void ka_thread_join(ka_thread_t t, long os_id)
{
    pthread_join(t, NULL);
#if defined(__linux__)
    {
        long k;
        for (k = 0; os_id > 0 && k < 1000000; k++) {
            if (syscall(SYS_tgkill, (long)getpid(), os_id, 0L) != 0)
                break; /* ESRCH: released */
            sched_yield();
        }
    }
#else
    (void)os_id;
#endif
}

/* The worker pool's lock and wake-ups (_ka_bulk.h), and the handlers run around fork(). */
typedef pthread_mutex_t ka_mutex_t;
typedef pthread_cond_t ka_cond_t;
#define KA_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define KA_COND_INIT PTHREAD_COND_INITIALIZER
static void ka_mutex_lock(ka_mutex_t *m) { pthread_mutex_lock(m); }
static void ka_mutex_unlock(ka_mutex_t *m) { pthread_mutex_unlock(m); }
static void ka_mutex_reset(ka_mutex_t *m) { pthread_mutex_init(m, NULL); }
static void ka_cond_reset(ka_cond_t *c) { pthread_cond_init(c, NULL); }
static void ka_cond_broadcast(ka_cond_t *c) { pthread_cond_broadcast(c); }
static void ka_cond_wait(ka_cond_t *c, ka_mutex_t *m) { pthread_cond_wait(c, m); }
/* 1 when about `ms` milliseconds (to the second) passed without a wake-up, else 0. time() keeps
 * this free of the POSIX clock feature macros that -std=c99 hides. */
static int ka_cond_wait_ms(ka_cond_t *c, ka_mutex_t *m, unsigned ms)
{
    struct timespec deadline;
    deadline.tv_sec = time(NULL) + (time_t)((ms + 999u) / 1000u);
    deadline.tv_nsec = 0;
    return pthread_cond_timedwait(c, m, &deadline) == ETIMEDOUT;
}
static void ka_at_fork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
    pthread_atfork(prepare, parent, child);
}

#endif /* KA_POSIX_H */
