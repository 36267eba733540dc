#ifndef HEROLD_RATELIMIT_H
#define HEROLD_RATELIMIT_H

/*
 * Token buckets: a rate that may be exceeded in bursts up to a bound, then not.
 *
 * rate_bucket_t is one bucket, kept by its owner (a WebSocket connection's ops).
 * ratelimit_t keeps one bucket per key (a user's subscription creations); a bucket that
 * has filled up again is dropped by ratelimit_sweep, so memory follows the keys active
 * recently, not every key ever seen. Times are milliseconds of a monotonic clock. One
 * thread (the service thread).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rate_bucket {
    double tokens;
    int64_t last_ms; /* 0: not used yet (full) */
} rate_bucket_t;

/* Takes one token from a bucket refilled at per_second up to burst. On false, sets
 * *retry_after_ms (when not NULL) to the wait for the next token. */
bool rate_bucket_take(rate_bucket_t *bucket, double per_second, double burst, int64_t now_ms,
                      int64_t *retry_after_ms);

typedef struct ratelimit ratelimit_t;

/* Buckets per key, refilled at per_second up to burst. Never NULL. */
ratelimit_t *ratelimit_new(double per_second, double burst);

/* rate_bucket_take on the bucket of key (made full on first use). */
bool ratelimit_take(ratelimit_t *limit, const char *key, int64_t now_ms, int64_t *retry_after_ms);

/* Drops the buckets that are full again at now_ms. */
void ratelimit_sweep(ratelimit_t *limit, int64_t now_ms);

/* The number of keys with a bucket (for tests). */
size_t ratelimit_key_count(const ratelimit_t *limit);

/* NULL is a no-op. */
void ratelimit_free(ratelimit_t *limit);

#endif
