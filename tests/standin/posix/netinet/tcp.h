/* Stand-in <netinet/tcp.h>: each OS's keepalive option numbers, as its SDK headers define them
 * (tools/platform_constants.c asserts the same numbers against the real headers). */
#ifndef KA_STANDIN_NETINET_TCP_H
#define KA_STANDIN_NETINET_TCP_H
#if defined(KA_STANDIN_LINUX)
#  define TCP_KEEPIDLE 4
#  define TCP_KEEPINTVL 5
#  define TCP_KEEPCNT 6
#  define TCP_USER_TIMEOUT 18
#elif defined(KA_STANDIN_DARWIN)
#  define TCP_KEEPALIVE 0x10
#  define TCP_RXT_CONNDROPTIME 0x80
#  define TCP_KEEPINTVL 0x101
#  define TCP_KEEPCNT 0x102
#elif defined(KA_STANDIN_FREEBSD)
#  define TCP_KEEPIDLE 256
#  define TCP_KEEPINTVL 512
#  define TCP_KEEPCNT 1024
#elif defined(KA_STANDIN_NETBSD)
#  define TCP_KEEPIDLE 3
#  define TCP_KEEPINTVL 5
#  define TCP_KEEPCNT 6
#endif
/* OpenBSD: no per-socket keepalive options at all. */
#endif
