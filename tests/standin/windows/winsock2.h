/* Stand-in <winsock2.h>: Winsock's types and constants, calls go to the recorder. */
#ifndef KA_STANDIN_WINSOCK2_H
#define KA_STANDIN_WINSOCK2_H
#include <stdint.h>
#define __stdcall /* x86-64 Linux has one calling convention */
typedef uintptr_t SOCKET;
typedef uint32_t DWORD;
typedef uint32_t u_long; /* 32 bits on Windows, LLP64 */
typedef DWORD *LPDWORD;
typedef void *LPVOID;
typedef void *LPWSAOVERLAPPED;
typedef void *LPWSAOVERLAPPED_COMPLETION_ROUTINE;
#define SOCKET_ERROR (-1)
#define SOL_SOCKET 0xffff
#define SO_KEEPALIVE 0x0008
#define IPPROTO_TCP 6
#define WSAEINTR 10004
#define WSAEINVAL 10022
#define WSAENOPROTOOPT 10042
#define IOC_IN 0x80000000u
#define IOC_VENDOR 0x18000000u
#define _WSAIOW(x, y) (IOC_IN | (x) | (y))
/* Renamed: the host libc's own setsockopt must not be the one called. */
#define setsockopt ka_rec_setsockopt
#define getsockopt ka_rec_getsockopt
int setsockopt(SOCKET s, int level, int name, const char *value, int len);
int getsockopt(SOCKET s, int level, int name, char *value, int *len);
int WSAIoctl(SOCKET s, DWORD code, LPVOID in, DWORD in_len, LPVOID out, DWORD out_len,
             LPDWORD returned, LPWSAOVERLAPPED overlapped, LPWSAOVERLAPPED_COMPLETION_ROUTINE done);
int WSAGetLastError(void);
#endif
