#ifndef KA_STANDIN_WINDOWS_H
#define KA_STANDIN_WINDOWS_H
typedef void *HANDLE;
#define INFINITE 0xffffffffu
DWORD WaitForSingleObject(HANDLE h, DWORD ms);
int CloseHandle(HANDLE h);
/* The worker pool's lock and wake-ups: the stand-in starts no thread (_beginthreadex fails), so
 * these only need to exist; the recorder defines them as single-threaded no-ops. */
typedef struct { void *ptr; } SRWLOCK;
typedef struct { void *ptr; } CONDITION_VARIABLE;
#define SRWLOCK_INIT {0}
#define CONDITION_VARIABLE_INIT {0}
#define ERROR_TIMEOUT 1460L
void AcquireSRWLockExclusive(SRWLOCK *lock);
void ReleaseSRWLockExclusive(SRWLOCK *lock);
void InitializeSRWLock(SRWLOCK *lock);
void InitializeConditionVariable(CONDITION_VARIABLE *cond);
void WakeAllConditionVariable(CONDITION_VARIABLE *cond);
int SleepConditionVariableSRW(CONDITION_VARIABLE *cond, SRWLOCK *lock, DWORD ms, unsigned long flags);
DWORD GetLastError(void);
#endif
