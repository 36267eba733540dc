#ifndef HEROLD_THREAD_H
#define HEROLD_THREAD_H

/*
 * Threads carry their role's name (`top -H`, `perf top`, gdb): ingest, ingest-commit,
 * journal-worker, store-writer, webhook and zap; the service thread keeps the process's
 * name. The thread that creates one names it right after pthread_create, so every name is
 * set before the broker says it is ready (a thread naming itself may not have run yet by
 * then).
 */

#include <pthread.h>

static inline void thread_name(pthread_t thread, const char *name)
{
    pthread_setname_np(thread, name); /* at most 15 bytes; a failure only loses the name */
}

#endif
