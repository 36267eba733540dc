#ifndef HEROLD_BENCH_UTIL_H
#define HEROLD_BENCH_UTIL_H

/* Small pieces several benchmark programs share. Each C file in bench/ is a program of its own
 * (the Makefile builds one per file), so they live here as static inline functions. */

#include <stddef.h>
#include <unistd.h>

/* For qsort over doubles, ascending. */
static inline int bench_compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Writes bytes of zeros from the start of fd and fsyncs them, so that later writes
 * overwrite blocks that are allocated and written (as the journal's segments made ahead
 * are). Returns 0, or -1 with errno set. */
static inline int bench_prewrite_zeros(int fd, long bytes)
{
    static const char zeros[1 << 16];
    for (long at = 0; at < bytes; at += (long)sizeof(zeros)) {
        size_t n = bytes - at < (long)sizeof(zeros) ? (size_t)(bytes - at) : sizeof(zeros);
        if (pwrite(fd, zeros, n, at) != (ssize_t)n) {
            return -1;
        }
    }
    return fsync(fd);
}

#endif
