#ifndef HEROLD_HASH_H
#define HEROLD_HASH_H

/*
 * The one string hash the hash tables share: 64-bit FNV-1a. Not keyed; the tables that
 * hold client-chosen keys say in their headers what bounds a deliberate collision run.
 * Chain calls to hash several fields: hash_fnv1a(hash_fnv1a(HASH_FNV1A_SEED, a, n), b, m).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HASH_FNV1A_SEED 1469598103934665603ULL

static inline uint64_t hash_fnv1a(uint64_t hash, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        hash = (hash ^ p[i]) * 1099511628211ULL;
    }
    return hash;
}

static inline uint64_t hash_fnv1a_cstr(const char *s)
{
    return hash_fnv1a(HASH_FNV1A_SEED, s, strlen(s));
}

/* Open addressing with linear probing, deletion by backward shift (every table here): after
 * the slot hole was emptied, may the member at slot i, whose home slot is home, move into
 * it? Not when home lies cyclically in (hole, i]: it would then sit before its home.
 * mask is the capacity (a power of two) minus one. */
static inline bool hash_may_fill_hole(size_t home, size_t hole, size_t i, size_t mask)
{
    return ((i - home) & mask) >= ((i - hole) & mask);
}

#endif
