#ifndef KA_STANDIN_WINDOWS_H
#define KA_STANDIN_WINDOWS_H
typedef void *HANDLE;
#define INFINITE 0xffffffffu
DWORD WaitForSingleObject(HANDLE h, DWORD ms);
int CloseHandle(HANDLE h);
#endif
