#include "dedup.h"

#include <stdlib.h>

#include "hash.h"
#include "mem.h"

struct slot {
    uint64_t hash;
    uint64_t seq; /* 0: empty */
};

struct dedup {
    struct slot *slots;
    size_t capacity; /* a power of two */
    size_t count;
};

dedup_t *dedup_new(void)
{
    dedup_t *dedup = xcalloc(1, sizeof(*dedup));
    dedup->capacity = 1024;
    dedup->slots = xcalloc(dedup->capacity, sizeof(struct slot));
    return dedup;
}

void dedup_free(dedup_t *dedup)
{
    if (dedup != NULL) {
        free(dedup->slots);
        free(dedup);
    }
}

uint64_t dedup_hash(const char *source, size_t source_len, const char *id, size_t id_len)
{
    /* FNV-1a over source, a separator no UTF-8 string contains, and id. */
    static const unsigned char separator = 0xff;
    uint64_t h = hash_fnv1a(HASH_FNV1A_SEED, source, source_len);
    h = hash_fnv1a(h, &separator, 1);
    h = hash_fnv1a(h, id, id_len);
    /* A final mix spreads FNV's weak low bits over the table index. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static void remove_at(dedup_t *dedup, size_t hole)
{
    size_t mask = dedup->capacity - 1;
    dedup->slots[hole].seq = 0;
    dedup->count--;
    for (size_t i = (hole + 1) & mask; dedup->slots[i].seq != 0; i = (i + 1) & mask) {
        size_t home = dedup->slots[i].hash & mask;
        if (hash_may_fill_hole(home, hole, i, mask)) {
            dedup->slots[hole] = dedup->slots[i];
            dedup->slots[i].seq = 0;
            hole = i;
        }
    }
}

static void insert(struct slot *slots, size_t capacity, uint64_t hash, uint64_t seq)
{
    size_t mask = capacity - 1;
    size_t i = hash & mask;
    while (slots[i].seq != 0) {
        i = (i + 1) & mask;
    }
    slots[i].hash = hash;
    slots[i].seq = seq;
}

/* Keeps the entries with lowest <= seq <= highest. */
static void keep_range(dedup_t *dedup, uint64_t lowest, uint64_t highest)
{
    /* Rebuilding is simpler than deleting in place while scanning a wrapping table. */
    struct slot *fresh = xcalloc(dedup->capacity, sizeof(struct slot));
    size_t count = 0;
    for (size_t i = 0; i < dedup->capacity; i++) {
        uint64_t seq = dedup->slots[i].seq;
        if (seq != 0 && seq >= lowest && seq <= highest) {
            insert(fresh, dedup->capacity, dedup->slots[i].hash, dedup->slots[i].seq);
            count++;
        }
    }
    free(dedup->slots);
    dedup->slots = fresh;
    dedup->count = count;
}

void dedup_expire(dedup_t *dedup, uint64_t oldest_seq)
{
    keep_range(dedup, oldest_seq, UINT64_MAX);
}

void dedup_forget_after(dedup_t *dedup, uint64_t last_seq)
{
    keep_range(dedup, 1, last_seq);
}

void dedup_add(dedup_t *dedup, uint64_t hash, uint64_t seq)
{
    if ((dedup->count + 1) * 4 > dedup->capacity * 3) {
        struct slot *bigger = xcalloc(dedup->capacity * 2, sizeof(struct slot));
        for (size_t i = 0; i < dedup->capacity; i++) {
            if (dedup->slots[i].seq != 0) {
                insert(bigger, dedup->capacity * 2, dedup->slots[i].hash, dedup->slots[i].seq);
            }
        }
        free(dedup->slots);
        dedup->slots = bigger;
        dedup->capacity *= 2;
    }
    insert(dedup->slots, dedup->capacity, hash, seq);
    dedup->count++;
}

void dedup_prefetch(const dedup_t *dedup, uint64_t hash)
{
    __builtin_prefetch(&dedup->slots[hash & (dedup->capacity - 1)]);
}

uint64_t dedup_find(dedup_t *dedup, uint64_t hash, uint64_t oldest_seq, dedup_confirm_fn confirm,
                    void *ctx)
{
    size_t mask = dedup->capacity - 1;
    size_t i = hash & mask;
    while (dedup->slots[i].seq != 0) {
        if (dedup->slots[i].seq < oldest_seq) {
            remove_at(dedup, i); /* the slot now holds the next entry of the run, or none */
            continue;
        }
        if (dedup->slots[i].hash == hash && confirm(dedup->slots[i].seq, ctx)) {
            return dedup->slots[i].seq;
        }
        i = (i + 1) & mask;
    }
    return 0;
}

size_t dedup_count(const dedup_t *dedup)
{
    return dedup->count;
}
