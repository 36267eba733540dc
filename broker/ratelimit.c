#include "ratelimit.h"

#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "mem.h"

#define BUCKETS_MIN 64

struct keyed {
    struct keyed *next; /* hash chain */
    uint64_t hash;
    rate_bucket_t bucket;
    char key[];
};

struct ratelimit {
    double per_second;
    double burst;
    struct keyed **chains;
    size_t chain_count; /* a power of two */
    size_t count;
};

static void refill(rate_bucket_t *b, double per_second, double burst, int64_t now_ms)
{
    if (b->last_ms == 0) {
        b->tokens = burst;
    } else if (now_ms > b->last_ms) {
        double tokens = b->tokens + (double)(now_ms - b->last_ms) * per_second / 1000.0;
        b->tokens = tokens < burst ? tokens : burst;
    }
    b->last_ms = now_ms;
}

bool rate_bucket_take(rate_bucket_t *bucket, double per_second, double burst, int64_t now_ms,
                      int64_t *retry_after_ms)
{
    refill(bucket, per_second, burst, now_ms);
    if (bucket->tokens >= 1.0) {
        bucket->tokens -= 1.0;
        return true;
    }
    if (retry_after_ms != NULL) {
        /* Rounded up: asked back a little late rather than refused again. */
        *retry_after_ms = (int64_t)((1.0 - bucket->tokens) * 1000.0 / per_second) + 1;
    }
    return false;
}

ratelimit_t *ratelimit_new(double per_second, double burst)
{
    ratelimit_t *limit = xcalloc(1, sizeof(*limit));
    limit->per_second = per_second;
    limit->burst = burst;
    limit->chain_count = BUCKETS_MIN;
    limit->chains = xcalloc(limit->chain_count, sizeof(*limit->chains));
    return limit;
}

static void grow(ratelimit_t *limit)
{
    size_t count = limit->chain_count * 2;
    struct keyed **chains = xcalloc(count, sizeof(*chains));
    for (size_t i = 0; i < limit->chain_count; i++) {
        for (struct keyed *k = limit->chains[i]; k != NULL;) {
            struct keyed *next = k->next;
            k->next = chains[k->hash & (count - 1)];
            chains[k->hash & (count - 1)] = k;
            k = next;
        }
    }
    free(limit->chains);
    limit->chains = chains;
    limit->chain_count = count;
}

bool ratelimit_take(ratelimit_t *limit, const char *key, int64_t now_ms, int64_t *retry_after_ms)
{
    uint64_t hash = hash_cstr(key);
    struct keyed *k = limit->chains[hash & (limit->chain_count - 1)];
    while (k != NULL && !(k->hash == hash && strcmp(k->key, key) == 0)) {
        k = k->next;
    }
    if (k == NULL) {
        if (limit->count + 1 > limit->chain_count) {
            grow(limit);
        }
        size_t len = strlen(key);
        k = xcalloc(1, sizeof(*k) + len + 1);
        memcpy(k->key, key, len);
        k->hash = hash;
        struct keyed **chain = &limit->chains[hash & (limit->chain_count - 1)];
        k->next = *chain;
        *chain = k;
        limit->count++;
    }
    return rate_bucket_take(&k->bucket, limit->per_second, limit->burst, now_ms, retry_after_ms);
}

void ratelimit_sweep(ratelimit_t *limit, int64_t now_ms)
{
    for (size_t i = 0; i < limit->chain_count; i++) {
        struct keyed **link = &limit->chains[i];
        while (*link != NULL) {
            struct keyed *k = *link;
            refill(&k->bucket, limit->per_second, limit->burst, now_ms);
            if (k->bucket.tokens >= limit->burst) {
                *link = k->next;
                free(k);
                limit->count--;
            } else {
                link = &k->next;
            }
        }
    }
}

size_t ratelimit_key_count(const ratelimit_t *limit)
{
    return limit->count;
}

void ratelimit_free(ratelimit_t *limit)
{
    if (limit == NULL) {
        return;
    }
    for (size_t i = 0; i < limit->chain_count; i++) {
        for (struct keyed *k = limit->chains[i]; k != NULL;) {
            struct keyed *next = k->next;
            free(k);
            k = next;
        }
    }
    free(limit->chains);
    free(limit);
}
