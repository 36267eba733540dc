#ifndef HEROLD_CLI_H
#define HEROLD_CLI_H

/*
 * Small helpers the command-line clients share. Header-only: every file in clients/ that
 * ends in .c becomes its own program, so shared code lives here as static functions.
 */

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static inline struct timespec cli_monotonic_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now;
}

static inline double cli_seconds_between(struct timespec from, struct timespec to)
{
    return (double)(to.tv_sec - from.tv_sec) + (double)(to.tv_nsec - from.tv_nsec) / 1e9;
}

/* A whole decimal count of at least 1 (digits only, no sign, no overflow). */
static inline bool cli_parse_count(const char *text, uint64_t *value)
{
    char *end;
    errno = 0;
    if (text[0] < '0' || text[0] > '9') {
        return false;
    }
    unsigned long long parsed = strtoull(text, &end, 10);
    if (*end != '\0' || errno != 0 || parsed == 0) {
        return false;
    }
    *value = parsed;
    return true;
}

#endif
