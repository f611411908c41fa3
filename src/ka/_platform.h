/*
 * ka/_platform.h: every operating-system difference of ka, behind a few C functions.
 *
 *   ka_apply_one   apply one policy to one descriptor -> 0 or errno, and which option failed
 *   ka_read_one    read one descriptor's keepalive values back
 *   ka_apply_bulk  / ka_read_bulk: the same over an array of descriptors, split over threads
 *
 * Nothing here knows Python; nothing above this file has an #if on the platform.
 * Option identifiers (KA_OPT_*) and limits (KA_MAX_*) are mirrored by ka/_options.py; a test
 * checks that the two agree.
 */
#ifndef KA_PLATFORM_H
#define KA_PLATFORM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>

#if defined(_WIN32)
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <winsock2.h>
#  include <ws2tcpip.h>
#  include <mstcpip.h>
#  include <windows.h>
#  include <process.h>
#else
#  include <sys/types.h>
#  include <sys/socket.h>
#  include <netinet/in.h>
#  include <netinet/tcp.h>
#  include <pthread.h>
#endif

/* Which option a failure belongs to; 0 = none. */
#define KA_OPT_NONE 0
#define KA_OPT_KEEPALIVE 1
#define KA_OPT_IDLE 2
#define KA_OPT_INTERVAL 3
#define KA_OPT_COUNT 4
#define KA_OPT_USER_TIMEOUT 5

/* Platform codes, as reported by ka_platform_code(). */
#define KA_PLATFORM_LINUX 1
#define KA_PLATFORM_DARWIN 2
#define KA_PLATFORM_FREEBSD 3
#define KA_PLATFORM_WINDOWS 4
#define KA_PLATFORM_OTHER 5

/* ---------------------------------------------------------------------------------------------
 * Per-platform option names and limits (seconds for idle/interval, probes for count,
 * milliseconds for the user timeout). A limit of 0 means the knob does not exist there.
 * ------------------------------------------------------------------------------------------- */
#if defined(_WIN32)
typedef SOCKET ka_fd_t;
#  define KA_PLATFORM KA_PLATFORM_WINDOWS
/* ws2ipdef.h values (Go's internal/syscall/windows uses the same); mingw-w64 12 lacks all four. */
#  ifndef TCP_KEEPALIVE
#    define TCP_KEEPALIVE 3
#  endif
#  ifndef TCP_KEEPIDLE
#    define TCP_KEEPIDLE TCP_KEEPALIVE
#  endif
#  ifndef TCP_KEEPCNT
#    define TCP_KEEPCNT 16
#  endif
#  ifndef TCP_KEEPINTVL
#    define TCP_KEEPINTVL 17
#  endif
#  ifndef SIO_KEEPALIVE_VALS
#    define SIO_KEEPALIVE_VALS _WSAIOW(IOC_VENDOR, 4)
#  endif
#  define KA_IDLE_OPTNAME TCP_KEEPIDLE
#  define KA_MAX_IDLE 4294967       /* seconds whose milliseconds fit SIO_KEEPALIVE_VALS' u_long */
#  define KA_MAX_INTERVAL 4294967
#  define KA_MAX_COUNT 255           /* "illegal to set TCP_KEEPCNT to a value greater than 255" */
#  define KA_MAX_USER_TIMEOUT_MS 0   /* no TCP_USER_TIMEOUT on Windows */
#  define KA_LAST_ERROR() ((int)WSAGetLastError())
#  define KA_EINTR WSAEINTR
#elif defined(__APPLE__)
typedef int ka_fd_t;
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
/* xnu tcp_usrreq.c tcp_ctloutput: idle (TCP_KEEPALIVE) and interval are seconds in
 * 0..UINT32_MAX / TCP_RETRANSHZ (1000), the count 0..INT32_MAX; else EINVAL. */
#  define KA_IDLE_OPTNAME TCP_KEEPALIVE
#  define KA_MAX_IDLE 4294967
#  define KA_MAX_INTERVAL 4294967
#  define KA_MAX_COUNT 2147483647
#  define KA_MAX_USER_TIMEOUT_MS 0   /* TCP_RXT_CONNDROPTIME is not the same thing: unsupported */
#  define KA_LAST_ERROR() errno
#  define KA_EINTR EINTR
#elif defined(__linux__)
typedef int ka_fd_t;
#  define KA_PLATFORM KA_PLATFORM_LINUX
#  ifndef TCP_USER_TIMEOUT
#    define TCP_USER_TIMEOUT 18     /* since Linux 2.6.37; old libc headers lack it */
#  endif
#  define KA_IDLE_OPTNAME TCP_KEEPIDLE
/* include/net/tcp.h: MAX_TCP_KEEPIDLE, MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT */
#  define KA_MAX_IDLE 32767
#  define KA_MAX_INTERVAL 32767
#  define KA_MAX_COUNT 127
#  define KA_MAX_USER_TIMEOUT_MS 2147483647
#  define KA_LAST_ERROR() errno
#  define KA_EINTR EINTR
#elif defined(__FreeBSD__) || defined(__DragonFly__) || defined(__NetBSD__) || defined(__OpenBSD__)
typedef int ka_fd_t;
#  define KA_PLATFORM KA_PLATFORM_FREEBSD
#  if defined(TCP_KEEPIDLE)
#    define KA_IDLE_OPTNAME TCP_KEEPIDLE
#  endif
/* FreeBSD tcp_usrreq.c: idle and interval are u_int seconds, EINVAL above UINT_MAX / hz; the
 * cap INT_MAX / 1000 (= UINT_MAX / 2000) holds for any kern.hz up to 2000. Count: any u_int. */
#  define KA_MAX_IDLE 2147483
#  define KA_MAX_INTERVAL 2147483
#  define KA_MAX_COUNT 2147483647
#  define KA_MAX_USER_TIMEOUT_MS 0
#  define KA_LAST_ERROR() errno
#  define KA_EINTR EINTR
#else
typedef int ka_fd_t;
#  define KA_PLATFORM KA_PLATFORM_OTHER
#  if defined(TCP_KEEPIDLE)
#    define KA_IDLE_OPTNAME TCP_KEEPIDLE
#  endif
#  define KA_MAX_IDLE 32767
#  define KA_MAX_INTERVAL 32767
#  define KA_MAX_COUNT 127
#  define KA_MAX_USER_TIMEOUT_MS 0
#  define KA_LAST_ERROR() errno
#  define KA_EINTR EINTR
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
#if defined(__linux__)
#  define KA_HAVE_USER_TIMEOUT 1
#else
#  define KA_HAVE_USER_TIMEOUT 0
#endif

#ifndef ENOPROTOOPT
#  define ENOPROTOOPT 92
#endif
#if defined(_WIN32)
#  define KA_ENOPROTOOPT WSAENOPROTOOPT
#else
#  define KA_ENOPROTOOPT ENOPROTOOPT
#endif

/* A policy in the units the kernel takes. -1 in a field leaves that option untouched. */
typedef struct {
    int enable;              /* 1: SO_KEEPALIVE on, 0: off */
    int idle;                /* seconds */
    int interval;            /* seconds */
    int count;               /* probes */
    int user_timeout_ms;     /* milliseconds; 0 = the system's default behaviour */
} ka_policy;

/* Values read back; -1 where the platform cannot tell. */
typedef struct {
    int enabled;
    int idle;
    int interval;
    int count;
    int user_timeout_ms;
} ka_values;

static int ka_platform_code(void) { return KA_PLATFORM; }

/* ---------------------------------------------------------------------------------------------
 * One option
 * ------------------------------------------------------------------------------------------- */
static inline int ka_set_int(ka_fd_t fd, int level, int name, int value)
{
    int rc;
#if defined(_WIN32)
    DWORD v = (DWORD)value;
    rc = setsockopt(fd, level, name, (const char *)&v, (int)sizeof(v));
    if (rc == SOCKET_ERROR)
        return KA_LAST_ERROR();
    return 0;
#else
    do {
        rc = setsockopt(fd, level, name, &value, (socklen_t)sizeof(value));
    } while (rc != 0 && errno == KA_EINTR);
    return rc == 0 ? 0 : errno;
#endif
}

static inline int ka_get_int(ka_fd_t fd, int level, int name, int *value)
{
    int rc;
#if defined(_WIN32)
    DWORD v = 0;
    int len = (int)sizeof(v);
    rc = getsockopt(fd, level, name, (char *)&v, &len);
    if (rc == SOCKET_ERROR)
        return KA_LAST_ERROR();
    *value = (int)v;
    return 0;
#else
    int v = 0;
    socklen_t len = (socklen_t)sizeof(v);
    do {
        rc = getsockopt(fd, level, name, &v, &len);
    } while (rc != 0 && errno == KA_EINTR);
    if (rc != 0)
        return errno;
    *value = v;
    return 0;
#endif
}

/* ---------------------------------------------------------------------------------------------
 * One descriptor. Order: idle, interval, count, user timeout, then SO_KEEPALIVE, so that the
 * keepalive timer starts with the new values (and a socket is never left enabled on defaults
 * when a timing option fails).
 * Returns 0, or the errno of the first failing call with *option naming it.
 * ------------------------------------------------------------------------------------------- */
#if defined(_WIN32)
/* Windows before 10 1709 has no TCP_KEEPIDLE/TCP_KEEPINTVL: fall back to SIO_KEEPALIVE_VALS,
 * which sets on/off, idle and interval at once in milliseconds (libuv and Go do the same). */
static int ka_win_keepalive_vals(ka_fd_t fd, const ka_policy *p)
{
    struct tcp_keepalive vals;
    DWORD returned = 0;
    vals.onoff = (u_long)(p->enable ? 1 : 0);
    /* Fields cannot be left unchanged here; use the documented system defaults (2 h, 1 s). */
    vals.keepalivetime = (u_long)(p->idle >= 0 ? (DWORD)p->idle * 1000u : 7200000u);
    vals.keepaliveinterval = (u_long)(p->interval >= 0 ? (DWORD)p->interval * 1000u : 1000u);
    if (WSAIoctl(fd, SIO_KEEPALIVE_VALS, &vals, sizeof(vals), NULL, 0, &returned, NULL, NULL) ==
        SOCKET_ERROR)
        return KA_LAST_ERROR();
    return 0;
}

static int ka_is_missing_option(int err) { return err == WSAENOPROTOOPT || err == WSAEINVAL; }
#endif

static int ka_apply_one(ka_fd_t fd, const ka_policy *p, int *option)
{
    int err;
#if defined(_WIN32)
    int use_ioctl = 0;
#endif
    *option = KA_OPT_NONE;
    if (p->enable) {
        if (p->idle >= 0) {
#if KA_HAVE_IDLE
            err = ka_set_int(fd, IPPROTO_TCP, KA_IDLE_OPTNAME, p->idle);
#  if defined(_WIN32)
            if (err && ka_is_missing_option(err)) {
                use_ioctl = 1;
                err = 0;
            }
#  endif
#else
            err = KA_ENOPROTOOPT;
#endif
            if (err) {
                *option = KA_OPT_IDLE;
                return err;
            }
        }
        if (p->interval >= 0) {
#if KA_HAVE_INTERVAL
#  if defined(_WIN32)
            err = use_ioctl ? 0 : ka_set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, p->interval);
            if (err && ka_is_missing_option(err)) {
                use_ioctl = 1;
                err = 0;
            }
#  else
            err = ka_set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, p->interval);
#  endif
#else
            err = KA_ENOPROTOOPT;
#endif
            if (err) {
                *option = KA_OPT_INTERVAL;
                return err;
            }
        }
        if (p->count >= 0) {
#if KA_HAVE_COUNT
            err = ka_set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, p->count);
#else
            err = KA_ENOPROTOOPT;
#endif
            if (err) {
                *option = KA_OPT_COUNT;
                return err;
            }
        }
    }
    if (p->user_timeout_ms >= 0) {
#if KA_HAVE_USER_TIMEOUT
        err = ka_set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, p->user_timeout_ms);
#else
        err = KA_ENOPROTOOPT;
#endif
        if (err) {
            *option = KA_OPT_USER_TIMEOUT;
            return err;
        }
    }
#if defined(_WIN32)
    if (use_ioctl) {
        err = ka_win_keepalive_vals(fd, p);
        if (err) {
            *option = KA_OPT_IDLE;
            return err;
        }
    }
#endif
    err = ka_set_int(fd, SOL_SOCKET, SO_KEEPALIVE, p->enable ? 1 : 0);
    if (err) {
        *option = KA_OPT_KEEPALIVE;
        return err;
    }
    return 0;
}

/* One IPPROTO_TCP knob. On Windows before 10 1709 the option is missing (the values went in by
 * ioctl and cannot be read back): it reads as -1, not as an error. */
static int ka_read_knob(ka_fd_t fd, int name, int *value)
{
    int err = ka_get_int(fd, IPPROTO_TCP, name, value);
#if defined(_WIN32)
    if (err && ka_is_missing_option(err)) {
        *value = -1;
        err = 0;
    }
#endif
    return err;
}

/* Read one descriptor's values. A knob the platform lacks reads as -1 and is not an error. */
static int ka_read_one(ka_fd_t fd, ka_values *v, int *option)
{
    int err;
    v->enabled = v->idle = v->interval = v->count = v->user_timeout_ms = -1;
    *option = KA_OPT_KEEPALIVE;
    err = ka_get_int(fd, SOL_SOCKET, SO_KEEPALIVE, &v->enabled);
    if (err)
        return err;
    if (v->enabled)
        v->enabled = 1; /* some systems return the flag bit, not 1 */
#if KA_HAVE_IDLE
    *option = KA_OPT_IDLE;
    if ((err = ka_read_knob(fd, KA_IDLE_OPTNAME, &v->idle)) != 0)
        return err;
#endif
#if KA_HAVE_INTERVAL
    *option = KA_OPT_INTERVAL;
    if ((err = ka_read_knob(fd, TCP_KEEPINTVL, &v->interval)) != 0)
        return err;
#endif
#if KA_HAVE_COUNT
    *option = KA_OPT_COUNT;
    if ((err = ka_read_knob(fd, TCP_KEEPCNT, &v->count)) != 0)
        return err;
#endif
#if KA_HAVE_USER_TIMEOUT
    *option = KA_OPT_USER_TIMEOUT;
    if ((err = ka_read_knob(fd, TCP_USER_TIMEOUT, &v->user_timeout_ms)) != 0)
        return err;
#endif
    *option = KA_OPT_NONE;
    return 0;
}

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
#if defined(_WIN32)
    (void)fds; (void)width; (void)is_unsigned; (void)n; (void)i;
    return -1; /* a SOCKET is pointer-sized: every 8-byte value is a handle number */
#else
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
#endif
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

#if defined(_WIN32)
typedef HANDLE ka_thread_t;
static unsigned __stdcall ka_thread_main(void *arg)
{
    ka_run_chunk((ka_chunk *)arg);
    return 0;
}
static int ka_thread_start(ka_thread_t *t, ka_chunk *c)
{
    uintptr_t h = _beginthreadex(NULL, 0, ka_thread_main, c, 0, NULL);
    if (h == 0)
        return -1;
    *t = (HANDLE)h;
    return 0;
}
static void ka_thread_join(ka_thread_t t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}
#else
typedef pthread_t ka_thread_t;
static void *ka_thread_main(void *arg)
{
    ka_run_chunk((ka_chunk *)arg);
    return NULL;
}
static int ka_thread_start(ka_thread_t *t, ka_chunk *c)
{
    return pthread_create(t, NULL, ka_thread_main, c) == 0 ? 0 : -1;
}
static void ka_thread_join(ka_thread_t t) { pthread_join(t, NULL); }
#endif

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
        started[k] = ka_thread_start(&threads[k], &chunks[k]) == 0;
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

#endif /* KA_PLATFORM_H */
