/*
 * The numbers and units ka/system.py reads the BSDs' keepalive sysctls with, against the real
 * SDK headers (compiled by tools/check_platforms.sh for NetBSD and OpenBSD; a difference fails
 * the build). NetBSD's timers count PR_SLOWHZ ticks a second, so are net.inet.tcp.keepidle and
 * keepintvl; OpenBSD has no sysctlbyname, so ka asks sysctl(2) by MIB, and its count has no
 * sysctl at all (TCPTV_KEEPCNT).
 */
#include <sys/types.h>
#include <sys/param.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/sysctl.h>
#include <netinet/in.h>
#include <netinet/in_systm.h>
#include <netinet/ip.h>
#include <netinet/ip_var.h>
#include <netinet/tcp.h>
#include <netinet/tcp_seq.h>
#if defined(__NetBSD__)
#  include <sys/protosw.h>
#endif
#include <netinet/tcp_timer.h>
#if defined(__NetBSD__)
#  include <netinet/tcpip.h>
#endif
#include <netinet/tcp_var.h>
#define KA_EXPECT(what, value) _Static_assert((what) == (value), #what " differs from ka/system.py")
#if defined(__NetBSD__)
KA_EXPECT(PR_SLOWHZ, 2);                       /* system.NETBSD_SLOWHZ */
KA_EXPECT(TCPTV_KEEP_IDLE, 7200 * PR_SLOWHZ);  /* the sysctls' unit: slow ticks */
KA_EXPECT(TCPTV_KEEPINTVL, 75 * PR_SLOWHZ);
KA_EXPECT(TCPTV_KEEPCNT, 8);
#elif defined(__OpenBSD__)
KA_EXPECT(CTL_NET, 4);                          /* system.OPENBSD_KEEPIDLE / KEEPINTVL */
KA_EXPECT(PF_INET, 2);
KA_EXPECT(IPPROTO_TCP, 6);
KA_EXPECT(TCPCTL_KEEPIDLE, 3);
KA_EXPECT(TCPCTL_KEEPINTVL, 4);
KA_EXPECT(TCPTV_KEEPCNT, 8);                    /* system.OPENBSD_KEEPCNT */
#endif
typedef int ka_sysctl_constants_checked;
