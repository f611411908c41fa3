/*
 * Compile-only check of src/ka/_platform.h (the dispatcher, its OS header and _ka_bulk.h) for a
 * platform this machine cannot run: every function of the shim is called, so each OS header is
 * type-checked with warnings as errors.
 * tools/check_dist.sh compiles it with x86_64-w64-mingw32-gcc (the Windows branch) and with gcc
 * (the Linux branch): cc -std=c99 -Wall -Wextra -Werror -I src/ka -c tools/win_compile_check.c
 */
#include "_platform.h"

int ka_compile_check(ka_fd_t fd, ka_fd_t *pool, size_t n);

int ka_compile_check(ka_fd_t fd, ka_fd_t *pool, size_t n)
{
    ka_policy policy = {1, 60, 10, 5, -1};
    ka_values values;
    int option = KA_OPT_NONE;
    int32_t errnos[4];
    uint8_t options[4];
    int8_t enabled[4];
    int32_t idle[4], interval[4], count[4], user_timeout_ms[4];
    size_t failed;
    int err;

    if (n > 4)
        n = 4;
    ka_bulk_init();
    err = ka_apply_one(fd, &policy, &option);
    if (err == 0)
        err = ka_read_one(fd, &values, &option);
    if (ka_first_bad_fd(pool, (int)sizeof(ka_fd_t), 0, n) >= 0)
        return -1;
    failed = ka_apply_bulk(pool, (int)sizeof(ka_fd_t), n, &policy, errnos, options, 2, KA_BACKEND_URING);
    failed += ka_apply_bulk(pool, (int)sizeof(ka_fd_t), n, &policy, errnos, options, 1, KA_BACKEND_AUTO);
    failed += ka_read_bulk(pool, (int)sizeof(ka_fd_t), n, errnos, options, enabled, idle, interval, count,
                           user_timeout_ms, 2);
    /* The limits and capability flags are compile-time constants on every platform. */
    if (KA_MAX_IDLE <= 0 || KA_MAX_INTERVAL <= 0 || KA_MAX_COUNT <= 0 || KA_MAX_USER_TIMEOUT_MS < 0)
        return -1;
    if (!KA_HAVE_IDLE || !KA_HAVE_INTERVAL || !KA_HAVE_COUNT)
        return -1;
    err += ka_uring_status() + ka_uring_getsockopt_tcp_status() + ka_uring_refusal_is_final(err);
    return err + (int)failed + ka_platform_code() + values.enabled + ka_worker_count() + ka_release_workers();
}
