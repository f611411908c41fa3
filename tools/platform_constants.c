/*
 * The stand-in's option numbers (tests/standin, ka/_options.py OS_CALLS) against the real SDK
 * headers of each target: compiled by tools/check_platforms.sh with every cross target, so a
 * number that differs fails the build. Includes the real headers only, not the shim.
 */
#if defined(_WIN32)
#  include <winsock2.h>
#  include <ws2tcpip.h>
#  include <mstcpip.h>
#  define KA_EXPECT(name, value) _Static_assert((name) == (value), #name " differs from the stand-in")
KA_EXPECT(SOL_SOCKET, 0xffff);
KA_EXPECT(SO_KEEPALIVE, 8);
KA_EXPECT(IPPROTO_TCP, 6);
KA_EXPECT(TCP_KEEPALIVE, 3);
KA_EXPECT(TCP_KEEPIDLE, 3);
KA_EXPECT(TCP_KEEPINTVL, 17);
KA_EXPECT(TCP_KEEPCNT, 16);
KA_EXPECT(TCP_MAXRT, 5);
KA_EXPECT(TCP_MAXRTMS, 14);
KA_EXPECT(SIO_KEEPALIVE_VALS, 0x98000004u);
KA_EXPECT(WSAEINVAL, 10022);
KA_EXPECT(WSAENOPROTOOPT, 10042);
#else
#  include <sys/types.h>
#  include <sys/socket.h>
#  include <netinet/in.h>
#  include <netinet/tcp.h>
#  define KA_EXPECT(name, value) _Static_assert((name) == (value), #name " differs from the stand-in")
KA_EXPECT(IPPROTO_TCP, 6);
#  if defined(__linux__)
KA_EXPECT(SOL_SOCKET, 1);
KA_EXPECT(SO_KEEPALIVE, 9);
KA_EXPECT(TCP_KEEPIDLE, 4);
KA_EXPECT(TCP_KEEPINTVL, 5);
KA_EXPECT(TCP_KEEPCNT, 6);
KA_EXPECT(TCP_USER_TIMEOUT, 18);
#  else
KA_EXPECT(SOL_SOCKET, 0xffff);
KA_EXPECT(SO_KEEPALIVE, 8);
#  endif
#  if defined(__APPLE__)
KA_EXPECT(TCP_KEEPALIVE, 0x10);
KA_EXPECT(TCP_KEEPINTVL, 0x101);
KA_EXPECT(TCP_KEEPCNT, 0x102);
KA_EXPECT(TCP_RXT_CONNDROPTIME, 0x80);
#  elif defined(__FreeBSD__)
KA_EXPECT(TCP_KEEPIDLE, 256);
KA_EXPECT(TCP_KEEPINTVL, 512);
KA_EXPECT(TCP_KEEPCNT, 1024);
#  elif defined(__NetBSD__)
KA_EXPECT(TCP_KEEPIDLE, 3);
KA_EXPECT(TCP_KEEPINTVL, 5);
KA_EXPECT(TCP_KEEPCNT, 6);
#  elif defined(__OpenBSD__)
#    if defined(TCP_KEEPIDLE) || defined(TCP_KEEPINTVL) || defined(TCP_KEEPCNT)
#      error "OpenBSD grew keepalive options: update the stand-in and _options.py"
#    endif
#  endif
#endif
typedef int ka_platform_constants_checked;
