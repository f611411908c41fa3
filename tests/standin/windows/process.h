#ifndef KA_STANDIN_PROCESS_H
#define KA_STANDIN_PROCESS_H
/* Always fails: the bulk code then runs every chunk on the calling thread. */
uintptr_t _beginthreadex(void *security, unsigned stack, unsigned (*proc)(void *), void *arg,
                         unsigned flags, unsigned *id);
#endif
