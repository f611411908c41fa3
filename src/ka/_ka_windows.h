/*
 * ka/_ka_windows.h: Windows (Winsock). Option names, limits and whole functions, including the
 * SIO_KEEPALIVE_VALS fallback for Windows before 10 1709. Included by _platform.h only.
 */
#ifndef KA_WINDOWS_H
#define KA_WINDOWS_H

#ifndef WIN32_LEAN_AND_MEAN
#  define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mstcpip.h>
#include <windows.h>
#include <process.h>

typedef SOCKET ka_fd_t;
#define KA_FD_IS_INT 0   /* a SOCKET is pointer-sized */
#define KA_PLATFORM KA_PLATFORM_WINDOWS
/* ws2ipdef.h values (Go's internal/syscall/windows uses the same); mingw-w64 12 lacks all four. */
#ifndef TCP_KEEPALIVE
#  define TCP_KEEPALIVE 3
#endif
#ifndef TCP_KEEPIDLE
#  define TCP_KEEPIDLE TCP_KEEPALIVE
#endif
#ifndef TCP_KEEPCNT
#  define TCP_KEEPCNT 16
#endif
#ifndef TCP_KEEPINTVL
#  define TCP_KEEPINTVL 17
#endif
#ifndef TCP_MAXRT
#  define TCP_MAXRT 5
#endif
#ifndef TCP_MAXRTMS
#  define TCP_MAXRTMS 14
#endif
#ifndef SIO_KEEPALIVE_VALS
#  define SIO_KEEPALIVE_VALS _WSAIOW(IOC_VENDOR, 4)
#endif
#define KA_IDLE_OPTNAME TCP_KEEPIDLE
#define KA_MAX_IDLE 4294967       /* seconds whose milliseconds fit SIO_KEEPALIVE_VALS' u_long */
#define KA_MAX_INTERVAL 4294967
#define KA_MAX_COUNT 255           /* "illegal to set TCP_KEEPCNT to a value greater than 255" */
/* TCP_MAXRT (documented since Vista): DWORD seconds of retransmission before the connection is
 * dropped, -1 = forever. TCP_MAXRTMS (ws2ipdef.h, not in Microsoft's option table) takes ms:
 * tried first, TCP_MAXRT where it is missing. */
#define KA_MAX_USER_TIMEOUT_MS 2147483647
#define KA_LAST_ERROR() ((int)WSAGetLastError())
#define KA_EINTR WSAEINTR

#define KA_HAVE_IDLE 1
#define KA_HAVE_INTERVAL 1
#define KA_HAVE_COUNT 1
#define KA_HAVE_USER_TIMEOUT 1

#ifndef ENOPROTOOPT
#  define ENOPROTOOPT 92
#endif
#define KA_ENOPROTOOPT WSAENOPROTOOPT

/* ---------------------------------------------------------------------------------------------
 * One option
 * ------------------------------------------------------------------------------------------- */
static inline int ka_set_int(ka_fd_t fd, int level, int name, int value)
{
    DWORD v = (DWORD)value;
    if (setsockopt(fd, level, name, (const char *)&v, (int)sizeof(v)) == SOCKET_ERROR)
        return KA_LAST_ERROR();
    return 0;
}

static inline int ka_get_int(ka_fd_t fd, int level, int name, int *value)
{
    DWORD v = 0;
    int len = (int)sizeof(v);
    if (getsockopt(fd, level, name, (char *)&v, &len) == SOCKET_ERROR)
        return KA_LAST_ERROR();
    *value = (int)v;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * One descriptor. Order: SO_KEEPALIVE, idle, interval (or SIO_KEEPALIVE_VALS for both), count,
 * user timeout. Options that this Windows build lacks answer WSAENOPROTOOPT (or WSAEINVAL):
 *   TCP_KEEPIDLE, TCP_KEEPINTVL  since 10 1709; before, SIO_KEEPALIVE_VALS (ms) sets both at once
 *   TCP_KEEPCNT                  since 10 1703; before, the count is fixed (10) and reported failed
 *   TCP_MAXRTMS                  newer than TCP_MAXRT (s), which it falls back to
 * Returns 0, or the error of the first failing call with *option naming it.
 * ------------------------------------------------------------------------------------------- */
static int ka_is_missing_option(int err) { return err == WSAENOPROTOOPT || err == WSAEINVAL; }

/* SIO_KEEPALIVE_VALS sets on/off, idle and interval at once, in milliseconds (libuv and Go do
 * the same). Its fields cannot be left unchanged: an interval alone is refused (the idle it
 * would overwrite cannot be read back); an idle alone takes the documented 1 s interval. */
static int ka_win_keepalive_vals(ka_fd_t fd, const ka_policy *p)
{
    struct tcp_keepalive vals;
    DWORD returned = 0;
    if (p->idle < 0)
        return WSAENOPROTOOPT;
    vals.onoff = 1;
    vals.keepalivetime = (u_long)((DWORD)p->idle * 1000u);
    vals.keepaliveinterval = (u_long)(p->interval >= 0 ? (DWORD)p->interval * 1000u : 1000u);
    if (WSAIoctl(fd, SIO_KEEPALIVE_VALS, &vals, sizeof(vals), NULL, 0, &returned, NULL, NULL) ==
        SOCKET_ERROR)
        return KA_LAST_ERROR();
    return 0;
}

static int ka_apply_one(ka_fd_t fd, const ka_policy *p, int *option)
{
    int err;
    int use_ioctl = 0;
    *option = KA_OPT_KEEPALIVE;
    if ((err = ka_set_int(fd, SOL_SOCKET, SO_KEEPALIVE, p->enable ? 1 : 0)) != 0)
        return err;
    if (p->enable) {
        if (p->idle >= 0) {
            *option = KA_OPT_IDLE;
            err = ka_set_int(fd, IPPROTO_TCP, KA_IDLE_OPTNAME, p->idle);
            if (err && ka_is_missing_option(err))
                use_ioctl = 1;
            else if (err)
                return err;
        }
        if (p->interval >= 0 && !use_ioctl) {
            *option = KA_OPT_INTERVAL;
            err = ka_set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, p->interval);
            if (err && ka_is_missing_option(err))
                use_ioctl = 1;
            else if (err)
                return err;
        }
        if (use_ioctl) {
            *option = p->idle >= 0 ? KA_OPT_IDLE : KA_OPT_INTERVAL;
            if ((err = ka_win_keepalive_vals(fd, p)) != 0)
                return err;
        }
        if (p->count >= 0) {
            *option = KA_OPT_COUNT;
            if ((err = ka_set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, p->count)) != 0)
                return err;
        }
    }
    if (p->user_timeout_ms >= 0) {
        *option = KA_OPT_USER_TIMEOUT;
        err = ka_set_int(fd, IPPROTO_TCP, TCP_MAXRTMS, p->user_timeout_ms);
        if (err && ka_is_missing_option(err)) /* whole seconds, rounded up */
            err = ka_set_int(fd, IPPROTO_TCP, TCP_MAXRT,
                             (int)(((long long)p->user_timeout_ms + 999) / 1000));
        if (err)
            return err;
    }
    *option = KA_OPT_NONE;
    return 0;
}

/* One IPPROTO_TCP option. One this Windows build lacks reads as -1 (unknown), not as an error:
 * after SIO_KEEPALIVE_VALS the socket's idle and interval cannot be read back. */
static int ka_read_tcp(ka_fd_t fd, int name, int *value)
{
    int err = ka_get_int(fd, IPPROTO_TCP, name, value);
    if (err && ka_is_missing_option(err)) {
        *value = -1;
        err = 0;
    }
    return err;
}

/* One knob's value in ka's units (seconds, probes, milliseconds), for ka_read_one (_platform.h):
 * the user timeout from TCP_MAXRTMS, or TCP_MAXRT (seconds) where that is missing. */
static int ka_read_knob(ka_fd_t fd, int option, int *value)
{
    int err;
    switch (option) {
    case KA_OPT_IDLE:
        return ka_read_tcp(fd, KA_IDLE_OPTNAME, value);
    case KA_OPT_INTERVAL:
        return ka_read_tcp(fd, TCP_KEEPINTVL, value);
    case KA_OPT_COUNT:
        return ka_read_tcp(fd, TCP_KEEPCNT, value);
    case KA_OPT_USER_TIMEOUT:
        if ((err = ka_read_tcp(fd, TCP_MAXRTMS, value)) != 0 || *value != -1)
            return err;
        if ((err = ka_read_tcp(fd, TCP_MAXRT, value)) != 0)
            return err;
        if (*value >= 0 && *value <= KA_MAX_USER_TIMEOUT_MS / 1000)
            *value *= 1000;
        else
            *value = -1; /* -1: retransmits forever, or unknown */
        return 0;
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Threads, for _ka_bulk.h
 * ------------------------------------------------------------------------------------------- */
typedef HANDLE ka_thread_t;
typedef unsigned ka_thread_ret;
#define KA_THREAD_CALL __stdcall
#define KA_THREAD_DONE 0u
typedef ka_thread_ret (KA_THREAD_CALL *ka_thread_proc)(void *);

static int ka_thread_start(ka_thread_t *t, ka_thread_proc proc, void *arg)
{
    uintptr_t h = _beginthreadex(NULL, 0, proc, arg, 0, NULL);
    if (h == 0)
        return -1;
    *t = (HANDLE)h;
    return 0;
}
/* No kernel id is needed to wait for a thread here: its handle is signalled when it has ended. */
static long ka_thread_os_id(void) { return 0; }
static void ka_thread_join(ka_thread_t t, long os_id)
{
    (void)os_id;
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}

/* The worker pool's lock and wake-ups (_ka_bulk.h); Windows has no fork(). */
typedef SRWLOCK ka_mutex_t;
typedef CONDITION_VARIABLE ka_cond_t;
#define KA_MUTEX_INIT SRWLOCK_INIT
#define KA_COND_INIT CONDITION_VARIABLE_INIT
static void ka_mutex_lock(ka_mutex_t *m) { AcquireSRWLockExclusive(m); }
static void ka_mutex_unlock(ka_mutex_t *m) { ReleaseSRWLockExclusive(m); }
static void ka_mutex_reset(ka_mutex_t *m) { InitializeSRWLock(m); }
static void ka_cond_reset(ka_cond_t *c) { InitializeConditionVariable(c); }
static void ka_cond_broadcast(ka_cond_t *c) { WakeAllConditionVariable(c); }
static void ka_cond_wait(ka_cond_t *c, ka_mutex_t *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
/* 1 when `ms` milliseconds passed without a wake-up, else 0. */
static int ka_cond_wait_ms(ka_cond_t *c, ka_mutex_t *m, unsigned ms)
{
    return !SleepConditionVariableSRW(c, m, (DWORD)ms, 0) && GetLastError() == ERROR_TIMEOUT;
}
static void ka_at_fork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
    (void)prepare;
    (void)parent;
    (void)child;
}

#endif /* KA_WINDOWS_H */
