/* Stand-in <sys/socket.h>: the target OS's SOL_SOCKET/SO_KEEPALIVE, calls go to the recorder. */
#ifndef KA_STANDIN_SYS_SOCKET_H
#define KA_STANDIN_SYS_SOCKET_H
#include <sys/types.h>
typedef unsigned int socklen_t;
#if defined(KA_STANDIN_LINUX)
#  define SOL_SOCKET 1
#  define SO_KEEPALIVE 9
#else /* macOS and the BSDs */
#  define SOL_SOCKET 0xffff
#  define SO_KEEPALIVE 0x0008
#endif
/* Renamed: the host libc's own setsockopt must not be the one called. */
#define setsockopt ka_rec_setsockopt
#define getsockopt ka_rec_getsockopt
int setsockopt(int fd, int level, int name, const void *value, socklen_t len);
int getsockopt(int fd, int level, int name, void *value, socklen_t *len);
#endif
