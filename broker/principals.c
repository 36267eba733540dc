#include "principals.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "ptable.h"

/*
 * Interned principals are records (hash, id, references, text) in a ptable keyed by their
 * text ("user:x", "group:g"); ids index the records through chunks (by_id, below; freed
 * ids on a free list). Owner sets are in a ptable keyed by their id arrays. Both tables
 * double over a while (ptable.h), as the index's do: a session's first subscription
 * interns its user's principals on the service thread, and doubling a table of millions at
 * once held that thread, and every delivery, for as long as rehashing them all took.
 */

struct interned {
    uint64_t hash;
    uint32_t id;
    uint32_t refs;
    uint32_t len;
    char text[]; /* NUL-terminated */
};

/* The record of each live id, in chunks of 32 KiB that never move. One array grown by
 * realloc took 11-13 ms to double at half a million and a million ids (bench/match
 * 10000000), on the service thread, at a session's first subscription. */
#define BY_ID_CHUNK_BITS 12
#define BY_ID_CHUNK_IDS (1u << BY_ID_CHUNK_BITS)

struct principals {
    ptable_t interned;               /* struct interned, by the hash of its text */
    struct interned ***by_id_chunks; /* BY_ID_CHUNK_IDS records each */
    size_t by_id_chunk_count;
    size_t by_id_chunk_capacity;
    uint32_t next_id;
    uint32_t *free_ids;
    size_t free_count;
    size_t free_capacity;
    ptable_t owners; /* owner_set_t, by the hash of its ids */
};

static uint64_t interned_hash(const void *item, const void *ctx)
{
    (void)ctx;
    return ((const struct interned *)item)->hash;
}

static uint64_t owner_hash(const void *item, const void *ctx)
{
    (void)ctx;
    return ((const owner_set_t *)item)->hash;
}

principals_t *principals_new(void)
{
    principals_t *p = xcalloc(1, sizeof(*p));
    ptable_init(&p->interned, interned_hash, NULL);
    ptable_init(&p->owners, owner_hash, NULL);
    return p;
}

void principals_free(principals_t *p)
{
    if (p == NULL) {
        return;
    }
    assert(p->owners.count == 0 && p->interned.count == 0);
    ptable_destroy(&p->interned);
    ptable_destroy(&p->owners);
    free(p->free_ids);
    for (size_t i = 0; i < p->by_id_chunk_count; i++) {
        free(p->by_id_chunks[i]);
    }
    free(p->by_id_chunks);
    free(p);
}

static struct interned **by_id_slot(const principals_t *p, uint32_t id)
{
    return &p->by_id_chunks[id >> BY_ID_CHUNK_BITS][id & (BY_ID_CHUNK_IDS - 1)];
}

/* Ids are handed out in order (a released one is reused first), so the chunk of a new id
 * is at most the next one. */
static void by_id_chunk_add(principals_t *p)
{
    if (p->by_id_chunk_count == p->by_id_chunk_capacity) {
        p->by_id_chunk_capacity = p->by_id_chunk_capacity == 0 ? 16 : p->by_id_chunk_capacity * 2;
        p->by_id_chunks =
            xrealloc(p->by_id_chunks, p->by_id_chunk_capacity * sizeof(*p->by_id_chunks));
    }
    p->by_id_chunks[p->by_id_chunk_count++] = xmalloc(BY_ID_CHUNK_IDS * sizeof(struct interned *));
}

static struct interned *find(const principals_t *p, const char *text, size_t len, uint64_t hash)
{
    ptable_probe_t probe = ptable_probe(&p->interned, hash);
    for (struct interned *r; (r = ptable_next(&p->interned, &probe)) != NULL;) {
        if (r->hash == hash && r->len == len && memcmp(r->text, text, len) == 0) {
            return r;
        }
    }
    return NULL;
}

static uint32_t intern(principals_t *p, const char *prefix, const char *name)
{
    char stack[256];
    size_t prefix_len = strlen(prefix);
    size_t name_len = strlen(name);
    size_t len = prefix_len + name_len;
    char *text = len < sizeof(stack) ? stack : xmalloc(len + 1);
    memcpy(text, prefix, prefix_len);
    memcpy(text + prefix_len, name, name_len);
    uint64_t hash = hash_bytes(HASH_SEED, text, len);
    struct interned *r = find(p, text, len, hash);
    if (r != NULL) {
        r->refs++;
    } else {
        uint32_t id = p->free_count > 0 ? p->free_ids[--p->free_count] : p->next_id++;
        r = xmalloc(sizeof(*r) + len + 1);
        *r = (struct interned){.hash = hash, .id = id, .refs = 1, .len = (uint32_t)len};
        memcpy(r->text, text, len);
        r->text[len] = '\0';
        ptable_insert(&p->interned, r, hash);
        if ((id >> BY_ID_CHUNK_BITS) == p->by_id_chunk_count) {
            by_id_chunk_add(p);
        }
        *by_id_slot(p, id) = r;
    }
    if (text != stack) {
        free(text);
    }
    return r->id;
}

/* Drops one reference to the principal with this id. */
static void release(principals_t *p, uint32_t id)
{
    struct interned *r = *by_id_slot(p, id);
    if (--r->refs > 0) {
        return;
    }
    ptable_remove(&p->interned, r, r->hash);
    *by_id_slot(p, id) = NULL;
    free(r);
    if (p->free_count == p->free_capacity) {
        p->free_capacity = p->free_capacity == 0 ? 64 : p->free_capacity * 2;
        p->free_ids = xrealloc(p->free_ids, p->free_capacity * sizeof(uint32_t));
    }
    p->free_ids[p->free_count++] = id;
}

static int compare_ids(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts and removes duplicates; returns the new count. */
static size_t sort_unique(uint32_t *ids, size_t count)
{
    qsort(ids, count, sizeof(uint32_t), compare_ids);
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) {
        if (kept == 0 || ids[kept - 1] != ids[i]) {
            ids[kept++] = ids[i];
        }
    }
    return kept;
}

const owner_set_t *principals_owner_get(principals_t *p, const auth_principal_t *principal)
{
    size_t count = 1 + principal->group_count;
    owner_set_t *fresh = xmalloc(sizeof(*fresh) + count * sizeof(uint32_t));
    fresh->ids[0] = intern(p, "user:", principal->user);
    for (size_t i = 0; i < principal->group_count; i++) {
        fresh->ids[1 + i] = intern(p, "group:", principal->groups[i]);
    }
    /* A duplicate group took a reference of its own: give it back. */
    uint32_t *all = xmalloc(count * sizeof(uint32_t));
    memcpy(all, fresh->ids, count * sizeof(uint32_t));
    fresh->count = (uint32_t)sort_unique(fresh->ids, count);
    qsort(all, count, sizeof(uint32_t), compare_ids);
    for (size_t i = 1; i < count; i++) {
        if (all[i] == all[i - 1]) {
            release(p, all[i]);
        }
    }
    free(all);
    fresh->hash = hash_bytes(HASH_SEED, fresh->ids, fresh->count * sizeof(uint32_t));
    ptable_probe_t probe = ptable_probe(&p->owners, fresh->hash);
    for (owner_set_t *o; (o = ptable_next(&p->owners, &probe)) != NULL;) {
        if (o->hash == fresh->hash && o->count == fresh->count &&
            memcmp(o->ids, fresh->ids, fresh->count * sizeof(uint32_t)) == 0) {
            /* Shared: the ids' references stay with the one set. */
            for (uint32_t i = 0; i < fresh->count; i++) {
                release(p, fresh->ids[i]);
            }
            free(fresh);
            o->refs++;
            return o;
        }
    }
    fresh->refs = 1;
    ptable_insert(&p->owners, fresh, fresh->hash);
    return fresh;
}

void principals_owner_put(principals_t *p, const owner_set_t *owner)
{
    if (owner == NULL) {
        return;
    }
    owner_set_t *o = (owner_set_t *)owner;
    if (--o->refs > 0) {
        return;
    }
    ptable_remove(&p->owners, o, o->hash);
    for (uint32_t i = 0; i < o->count; i++) {
        release(p, o->ids[i]);
    }
    free(o);
}

/* An event has a few readers: an insertion sort beats qsort's calls there. */
static size_t sort_unique_readers(uint32_t *ids, size_t count)
{
    if (count > 32) {
        return sort_unique(ids, count);
    }
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t id = ids[i];
        size_t j = kept;
        while (j > 0 && ids[j - 1] > id) {
            j--;
        }
        if (j > 0 && ids[j - 1] == id) {
            continue;
        }
        memmove(ids + j + 1, ids + j, (kept - j) * sizeof(*ids));
        ids[j] = id;
        kept++;
    }
    return kept;
}

void principals_readers(const principals_t *p, const hstr_t *readers, size_t count,
                        reader_ids_t *out)
{
    /* Every reader's slot is fetched before any is compared, then every likely text: in a
     * table of a million principals each is a cache miss, and they overlap instead of
     * queueing. */
    uint64_t hashes[PRINCIPALS_MAX_READERS];
    if (count > PRINCIPALS_MAX_READERS) {
        count = PRINCIPALS_MAX_READERS;
    }
    for (size_t i = 0; i < count; i++) {
        hashes[i] = hash_bytes(HASH_SEED, readers[i].p, readers[i].len);
        ptable_prefetch(&p->interned, hashes[i]);
    }
    /* Then the record each is likely to be, compared below. */
    for (size_t i = 0; i < count; i++) {
        ptable_probe_t probe = ptable_probe(&p->interned, hashes[i]);
        const struct interned *likely = ptable_next(&p->interned, &probe);
        if (likely != NULL) {
            __builtin_prefetch(likely);
        }
    }
    out->is_everyone = false;
    out->count = 0;
    for (size_t i = 0; i < count; i++) {
        if (readers[i].len == 1 && readers[i].p[0] == '*') {
            out->is_everyone = true;
            continue;
        }
        const struct interned *r = find(p, readers[i].p, readers[i].len, hashes[i]);
        if (r != NULL) {
            out->ids[out->count++] = r->id;
        }
    }
    out->count = sort_unique_readers(out->ids, out->count);
    principals_readers_filter(out);
}

void principals_readers_filter(reader_ids_t *readers)
{
    memset(readers->filter, 0, sizeof(readers->filter));
    for (size_t i = 0; i < readers->count; i++) {
        unsigned bit = principals_filter_bit(readers->ids[i]);
        readers->filter[bit >> 6] |= UINT64_C(1) << (bit & 63);
    }
}

size_t principals_count(const principals_t *p)
{
    return p->interned.count;
}

size_t principals_maintain(principals_t *p, size_t slots)
{
    return ptable_maintain(&p->interned, slots) + ptable_maintain(&p->owners, slots);
}

size_t principals_table_bytes(const principals_t *p)
{
    return ptable_bytes(&p->interned) + ptable_bytes(&p->owners);
}
