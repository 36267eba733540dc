#ifndef HEROLD_DECIMAL_H
#define HEROLD_DECIMAL_H

/*
 * Unsigned integers as decimal text, for the per-event and per-item paths where snprintf
 * was a visible cost (event labels, notification sequence numbers).
 */

#include <stddef.h>
#include <stdint.h>

/* Writes value in decimal into out (at least 21 bytes), NUL-terminated; returns the number
 * of digits. */
static inline size_t decimal_u64(uint64_t value, char *out)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = digits[n - 1 - i];
    }
    out[n] = '\0';
    return n;
}

#endif
