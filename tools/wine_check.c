/*
 * The Windows branch of the shim run for real (under Wine in tools/check_platforms.sh): a loopback
 * TCP connection, ka_apply_one with a full policy, ka_read_one, and each step's result printed
 * as "name=value" lines that the check compares. Wine answers WSAENOPROTOOPT for TCP_KEEPIDLE,
 * TCP_KEEPINTVL and TCP_KEEPCNT, so this runs the pre-1703 fallback (SIO_KEEPALIVE_VALS).
 */
#include <stdio.h>
#include "_platform.h"

static void show(const char *what, int err, int option)
{
    printf("%s=%d option=%d\n", what, err, option);
}

int main(void);

int main(void)
{
    WSADATA wsa;
    SOCKET listener, client;
    struct sockaddr_in addr;
    int len = (int)sizeof(addr), option = 0, err;
    ka_policy full = {1, 60, 10, 5, 30500};
    ka_policy no_count = {1, 60, 10, -1, -1};
    ka_policy interval_only = {1, -1, 10, -1, -1};
    ka_policy user_timeout = {1, 60, 10, -1, 30500};
    ka_values v;

    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        return 2;
    listener = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(listener, 1) != 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        return 3;
    client = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (connect(client, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        return 4;

    err = ka_apply_one(client, &full, &option);
    show("apply_full", err, option);
    err = ka_apply_one(client, &no_count, &option);
    show("apply_no_count", err, option);
    err = ka_apply_one(client, &interval_only, &option);
    show("apply_interval_only", err, option);
    err = ka_apply_one(client, &user_timeout, &option);
    show("apply_user_timeout", err, option);
    err = ka_read_one(client, &v, &option);
    show("read", err, option);
    printf("values=%d,%d,%d,%d,%d\n", v.enabled, v.idle, v.interval, v.count, v.user_timeout_ms);
    {
        /* The bulk path with two threads: _beginthreadex and the join, for real. */
        int64_t fds[2];
        int32_t errnos[2];
        uint8_t options[2];
        size_t failed;
        fds[0] = (int64_t)client;
        fds[1] = (int64_t)listener;
        failed = ka_apply_bulk(fds, 8, 2, &no_count, errnos, options, 2, KA_BACKEND_SYSCALLS);
        printf("bulk_failed=%d errnos=%d,%d first_bad=%lld platform=%d\n", (int)failed, errnos[0],
               errnos[1], ka_first_bad_fd(fds, 8, 0, 2), ka_platform_code());
    }
    {
        /* An 8-byte unsigned buffer: a value past INT64_MAX is no handle number (the twin agrees). */
        uint64_t handles[2] = {5u, 9223372036854775808u};
        printf("first_bad_unsigned=%lld\n", ka_first_bad_fd(handles, 8, 1, 2));
    }
    {
        /* ka.capabilities() on Windows asks as Go does: setsockopt 1 on a fresh socket, for
         * TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_MAXRTMS and TCP_MAXRT. */
        SOCKET fresh = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
        int names[5] = {TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_MAXRTMS, TCP_MAXRT};
        int k;
        printf("probe=");
        for (k = 0; k < 5; k++)
            printf("%s%d", k ? "," : "", ka_set_int(fresh, IPPROTO_TCP, names[k], 1));
        printf("\n");
        closesocket(fresh);
    }
    closesocket(client);
    closesocket(listener);
    WSACleanup();
    return 0;
}
