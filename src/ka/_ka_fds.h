/*
 * ka/_ka_fds.h: arrays of descriptor numbers as the caller's buffer holds them (4- or 8-byte
 * integers). Looked at by both the bulk machinery (_ka_bulk.h) and the io_uring batches
 * (_ka_uring.h), which otherwise know nothing of each other's insides. Uses ka_fd_t and
 * KA_FD_IS_INT from the OS header that _platform.h included first.
 */
#ifndef KA_FDS_H
#define KA_FDS_H

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

#endif /* KA_FDS_H */
