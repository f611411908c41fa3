/*
 * ka/_platform.h: the C shim's dispatcher. It defines the platform-free types, includes the one
 * header of this operating-system family, then the platform-free bulk machinery:
 *
 *   _ka_posix.h    Linux, macOS, the BSDs, other POSIX: whole functions, option names, limits
 *   _ka_windows.h  Windows (Winsock): whole functions, option names, limits, the ioctl fallback
 *   _ka_bulk.h     arrays of descriptors split over threads; no operating-system detail. It
 *                  includes _ka_uring.h (io_uring batches, Linux), and both include _ka_fds.h
 *                  (arrays of descriptor numbers): each looks only down at the next
 *
 * Each OS header provides: ka_fd_t, KA_PLATFORM, KA_MAX_*, KA_HAVE_*, KA_FD_IS_INT, ka_get_int,
 * ka_apply_one, ka_read_knob (one value in ka's units), and the thread primitives (ka_thread_t, ka_thread_ret,
 * KA_THREAD_CALL, KA_THREAD_DONE, ka_thread_start, ka_thread_os_id, ka_thread_join, and the
 * worker pool's ka_mutex_t/ka_cond_t with lock, wait, timed wait, signal, and ka_at_fork).
 *
 *   ka_apply_one   apply one policy to one descriptor -> 0 or errno, and which option failed
 *   ka_read_one    read one descriptor's keepalive values back
 *   ka_apply_bulk  / ka_read_bulk: the same over an array of descriptors, on persistent worker
 *                  threads, and on Linux 6.7+ through io_uring (_ka_uring.h); ka_bulk_init first
 *
 * Nothing here knows Python; nothing above these files has an #if on the platform.
 * Option identifiers (KA_OPT_*) and limits (KA_MAX_*) are mirrored by ka/_options.py; a test
 * checks that the two agree.
 */
#ifndef KA_PLATFORM_H
#define KA_PLATFORM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>

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

#if defined(_WIN32)
#  include "_ka_windows.h"
#else
#  include "_ka_posix.h"
#endif

static inline int ka_platform_code(void) { return KA_PLATFORM; }

/* Read one descriptor's values: SO_KEEPALIVE, then each knob through the OS header's
 * ka_read_knob. A knob the platform lacks reads as -1 and is not an error; on failure *option
 * names the option whose read failed. */
static int ka_read_one(ka_fd_t fd, ka_values *v, int *option)
{
    int *knobs[4];
    int err, k;
    knobs[0] = &v->idle;
    knobs[1] = &v->interval;
    knobs[2] = &v->count;
    knobs[3] = &v->user_timeout_ms;
    v->enabled = v->idle = v->interval = v->count = v->user_timeout_ms = -1;
    *option = KA_OPT_KEEPALIVE;
    if ((err = ka_get_int(fd, SOL_SOCKET, SO_KEEPALIVE, &v->enabled)) != 0)
        return err;
    if (v->enabled)
        v->enabled = 1; /* some systems return the flag bit, not 1 */
    for (k = 0; k < 4; k++) {
        *option = KA_OPT_IDLE + k;
        if ((err = ka_read_knob(fd, KA_OPT_IDLE + k, knobs[k])) != 0)
            return err;
    }
    *option = KA_OPT_NONE;
    return 0;
}

#include "_ka_bulk.h"

#endif /* KA_PLATFORM_H */
