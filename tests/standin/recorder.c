/*
 * Recording stand-in: builds the shim's OS header for one OS (chosen by the include path and
 * KA_STANDIN_*) with setsockopt/getsockopt/WSAIoctl replaced by a recorder, for
 * tests/test_platforms.py. Each call is logged as (kind, level, name, value[, v2, v3]); a
 * failure rule makes every matching call fail with the given error, as the real OS would.
 */
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <pthread.h>
#include <sys/types.h>

/* The OS macros are defined here, after the host's libc headers, which would misread them. */
#if defined(KA_STANDIN_DARWIN)
#  define __APPLE__ 1
#elif defined(KA_STANDIN_FREEBSD)
#  define __FreeBSD__ 14
#elif defined(KA_STANDIN_NETBSD)
#  define __NetBSD__ 1
#elif defined(KA_STANDIN_OPENBSD)
#  define __OpenBSD__ 1
#endif

#if defined(KA_STANDIN_WINDOWS)
#  define _WIN32 1
#  include "winsock2.h"
#endif

#include "_platform.h"

#define REC_MAX_CALLS 64
#define REC_MAX_RULES 8
#define REC_MAX_VALUES 16

typedef struct {
    int kind; /* 0 setsockopt, 1 getsockopt, 2 WSAIoctl */
    int level, name;
    long long value, v2, v3;
    int result; /* 0 or the error it answered */
} rec_call;

static rec_call calls[REC_MAX_CALLS];
static int ncalls;
static struct { int kind, level, name, err; } rules[REC_MAX_RULES];
static int nrules;
static struct { int level, name, value; } values[REC_MAX_VALUES];
static int nvalues;
static int last_error;

void rec_reset(void) { ncalls = nrules = nvalues = 0; last_error = 0; }
int rec_count(void) { return ncalls; }
const rec_call *rec_calls(void) { return calls; }
int rec_call_size(void) { return (int)sizeof(rec_call); }
int rec_platform(void) { return ka_platform_code(); }
int rec_have(int which)
{
    int have[4] = {KA_HAVE_IDLE, KA_HAVE_INTERVAL, KA_HAVE_COUNT, KA_HAVE_USER_TIMEOUT};
    return have[which];
}
long long rec_limit(int which)
{
    long long limits[4] = {KA_MAX_IDLE, KA_MAX_INTERVAL, KA_MAX_COUNT, KA_MAX_USER_TIMEOUT_MS};
    return limits[which];
}

/* Every later call of this kind on (level, name) fails with err; level -1 matches any level. */
void rec_fail(int kind, int level, int name, int err)
{
    if (nrules < REC_MAX_RULES) {
        rules[nrules].kind = kind;
        rules[nrules].level = level;
        rules[nrules].name = name;
        rules[nrules].err = err;
        nrules++;
    }
}

static int rec_log(int kind, int level, int name, long long value, long long v2, long long v3)
{
    int i, err = 0;
    for (i = 0; i < nrules; i++)
        if (rules[i].kind == kind && (rules[i].level == -1 || rules[i].level == level) &&
            rules[i].name == name)
            err = rules[i].err;
    if (ncalls < REC_MAX_CALLS) {
        rec_call *c = &calls[ncalls++];
        c->kind = kind;
        c->level = level;
        c->name = name;
        c->value = value;
        c->v2 = v2;
        c->v3 = v3;
        c->result = err;
    }
    return err;
}

static void rec_store(int level, int name, int value)
{
    int i;
    for (i = 0; i < nvalues; i++)
        if (values[i].level == level && values[i].name == name) {
            values[i].value = value;
            return;
        }
    if (nvalues < REC_MAX_VALUES) {
        values[nvalues].level = level;
        values[nvalues].name = name;
        values[nvalues].value = value;
        nvalues++;
    }
}

static int rec_load(int level, int name)
{
    int i;
    for (i = 0; i < nvalues; i++)
        if (values[i].level == level && values[i].name == name)
            return values[i].value;
    return 0;
}

/* What getsockopt answers for an option never set (the OS default). */
void rec_preset(int level, int name, int value) { rec_store(level, name, value); }

#if defined(KA_STANDIN_WINDOWS)
int WSAGetLastError(void) { return last_error; }
int setsockopt(SOCKET s, int level, int name, const char *value, int len)
{
    int v, err;
    (void)s;
    memcpy(&v, value, sizeof(v) < (size_t)len ? sizeof(v) : (size_t)len);
    if ((err = rec_log(0, level, name, v, len, 0)) != 0) {
        last_error = err;
        return SOCKET_ERROR;
    }
    rec_store(level, name, v);
    return 0;
}
int getsockopt(SOCKET s, int level, int name, char *value, int *len)
{
    int err, v;
    (void)s;
    if ((err = rec_log(1, level, name, 0, *len, 0)) != 0) {
        last_error = err;
        return SOCKET_ERROR;
    }
    v = rec_load(level, name);
    memcpy(value, &v, sizeof(v));
    *len = (int)sizeof(v);
    return 0;
}
int WSAIoctl(SOCKET s, DWORD code, LPVOID in, DWORD in_len, LPVOID out, DWORD out_len,
             LPDWORD returned, LPWSAOVERLAPPED overlapped, LPWSAOVERLAPPED_COMPLETION_ROUTINE done)
{
    const struct tcp_keepalive *k = (const struct tcp_keepalive *)in;
    int err;
    (void)s; (void)in_len; (void)out; (void)out_len; (void)overlapped; (void)done;
    *returned = 0;
    if ((err = rec_log(2, -1, (int)code, k->onoff, k->keepalivetime, k->keepaliveinterval)) != 0) {
        last_error = err;
        return SOCKET_ERROR;
    }
    return 0;
}
DWORD WaitForSingleObject(HANDLE h, DWORD ms) { (void)h; (void)ms; return 0; }
int CloseHandle(HANDLE h) { (void)h; return 1; }
void AcquireSRWLockExclusive(SRWLOCK *lock) { (void)lock; }
void ReleaseSRWLockExclusive(SRWLOCK *lock) { (void)lock; }
void InitializeSRWLock(SRWLOCK *lock) { (void)lock; }
void InitializeConditionVariable(CONDITION_VARIABLE *cond) { (void)cond; }
void WakeAllConditionVariable(CONDITION_VARIABLE *cond) { (void)cond; }
int SleepConditionVariableSRW(CONDITION_VARIABLE *cond, SRWLOCK *lock, DWORD ms, unsigned long flags)
{
    (void)cond; (void)lock; (void)ms; (void)flags;
    return 0; /* never reached: no worker thread starts here */
}
DWORD GetLastError(void) { return (DWORD)ERROR_TIMEOUT; }
uintptr_t _beginthreadex(void *security, unsigned stack, unsigned (*proc)(void *), void *arg,
                         unsigned flags, unsigned *id)
{
    (void)security; (void)stack; (void)proc; (void)arg; (void)flags; (void)id;
    return 0;
}
#else
int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
    int v, err;
    (void)fd;
    memcpy(&v, value, sizeof(v));
    if ((err = rec_log(0, level, name, v, (long long)len, 0)) != 0) {
        errno = err;
        return -1;
    }
    rec_store(level, name, v);
    return 0;
}
int getsockopt(int fd, int level, int name, void *value, socklen_t *len)
{
    int err, v;
    (void)fd;
    if ((err = rec_log(1, level, name, 0, (long long)*len, 0)) != 0) {
        errno = err;
        return -1;
    }
    v = rec_load(level, name);
    memcpy(value, &v, sizeof(v));
    *len = (socklen_t)sizeof(v);
    return 0;
}
#endif

int rec_apply(int enable, int idle, int interval, int count, int user_timeout_ms, int *option)
{
    ka_policy p;
    p.enable = enable;
    p.idle = idle;
    p.interval = interval;
    p.count = count;
    p.user_timeout_ms = user_timeout_ms;
    return ka_apply_one((ka_fd_t)7, &p, option);
}

int rec_read(int *out, int *option)
{
    ka_values v;
    int err = ka_read_one((ka_fd_t)7, &v, option);
    out[0] = v.enabled;
    out[1] = v.idle;
    out[2] = v.interval;
    out[3] = v.count;
    out[4] = v.user_timeout_ms;
    return err;
}

/* The compiled core's check of a buffer of descriptors (its fast path), for this OS. */
long long rec_first_bad_fd(const void *fds, int width, int is_unsigned, size_t n)
{
    return ka_first_bad_fd(fds, width, is_unsigned, n);
}

/* The bulk path on the same stand-in (one call per descriptor, in order). */
size_t rec_apply_bulk(size_t n, int enable, int idle, int interval, int count, int user_timeout_ms,
                      int32_t *errnos, uint8_t *options)
{
    int64_t fds[8] = {7, 7, 7, 7, 7, 7, 7, 7};
    ka_policy p;
    p.enable = enable;
    p.idle = idle;
    p.interval = interval;
    p.count = count;
    p.user_timeout_ms = user_timeout_ms;
    if (ka_first_bad_fd(fds, 8, 0, n > 8 ? 8 : n) >= 0)
        return (size_t)-1;
    return ka_apply_bulk(fds, 8, n > 8 ? 8 : n, &p, errnos, options, 1, KA_BACKEND_SYSCALLS);
}
