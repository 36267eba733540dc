#include "principals.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

/*
 * Interned principals live in an open-addressing table keyed by their text ("user:x",
 * "group:g"), deletion by backward shift; ids index a dense array of slots (freed ids on a
 * free list). Owner sets live in a chained table keyed by their id arrays.
 */

struct interned {
    char *text; /* NULL: empty slot */
    size_t len;
    uint64_t hash;
    uint32_t id;
    uint32_t refs;
};

struct principals {
    struct interned *slots;
    size_t capacity; /* a power of two */
    size_t count;
    uint32_t next_id;
    char **text_by_id; /* the text of each live id, to find its slot again */
    size_t text_by_id_capacity;
    uint32_t *free_ids;
    size_t free_count;
    size_t free_capacity;
    owner_set_t **owners;
    size_t owner_buckets; /* a power of two */
    size_t owner_count;
};

principals_t *principals_new(void)
{
    principals_t *p = xcalloc(1, sizeof(*p));
    p->capacity = 256;
    p->slots = xcalloc(p->capacity, sizeof(*p->slots));
    p->owner_buckets = 256;
    p->owners = xcalloc(p->owner_buckets, sizeof(*p->owners));
    return p;
}

void principals_free(principals_t *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->capacity; i++) {
        free(p->slots[i].text);
    }
    for (size_t i = 0; i < p->owner_buckets; i++) {
        for (owner_set_t *o = p->owners[i]; o != NULL;) {
            owner_set_t *next = o->next;
            free(o);
            o = next;
        }
    }
    free(p->slots);
    free(p->owners);
    free(p->free_ids);
    free(p->text_by_id);
    free(p);
}

static size_t find_slot(const principals_t *p, const char *text, size_t len, uint64_t hash)
{
    size_t mask = p->capacity - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        const struct interned *s = &p->slots[i];
        if (s->text == NULL ||
            (s->hash == hash && s->len == len && memcmp(s->text, text, len) == 0)) {
            return i;
        }
    }
}

static void place(struct interned *slots, size_t capacity, const struct interned *entry)
{
    size_t mask = capacity - 1;
    size_t i = entry->hash & mask;
    while (slots[i].text != NULL) {
        i = (i + 1) & mask;
    }
    slots[i] = *entry;
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
    text[len] = '\0';
    uint64_t hash = hash_bytes(HASH_SEED, text, len);
    size_t i = find_slot(p, text, len, hash);
    if (p->slots[i].text != NULL) {
        p->slots[i].refs++;
        if (text != stack) {
            free(text);
        }
        return p->slots[i].id;
    }
    if ((p->count + 1) * 4 > p->capacity * 3) {
        struct interned *bigger = xcalloc(p->capacity * 2, sizeof(*bigger));
        for (size_t j = 0; j < p->capacity; j++) {
            if (p->slots[j].text != NULL) {
                place(bigger, p->capacity * 2, &p->slots[j]);
            }
        }
        free(p->slots);
        p->slots = bigger;
        p->capacity *= 2;
        i = find_slot(p, text, len, hash);
    }
    uint32_t id = p->free_count > 0 ? p->free_ids[--p->free_count] : p->next_id++;
    char *owned = text != stack ? text : xstrndup(text, len);
    p->slots[i] = (struct interned){owned, len, hash, id, 1};
    p->count++;
    if (id >= p->text_by_id_capacity) {
        p->text_by_id_capacity = p->text_by_id_capacity == 0 ? 256 : p->text_by_id_capacity * 2;
        p->text_by_id = xrealloc(p->text_by_id, p->text_by_id_capacity * sizeof(char *));
    }
    p->text_by_id[id] = owned;
    return id;
}

/* Drops one reference to the principal with this id (found by its text). */
static void release(principals_t *p, uint32_t id)
{
    size_t mask = p->capacity - 1;
    const char *text = p->text_by_id[id];
    size_t len = strlen(text);
    size_t hole = find_slot(p, text, len, hash_bytes(HASH_SEED, text, len));
    if (--p->slots[hole].refs > 0) {
        return;
    }
    free(p->slots[hole].text);
    p->slots[hole].text = NULL;
    p->count--;
    for (size_t i = (hole + 1) & mask; p->slots[i].text != NULL; i = (i + 1) & mask) {
        size_t home = p->slots[i].hash & mask;
        if (hash_may_fill_hole(home, hole, i, mask)) {
            p->slots[hole] = p->slots[i];
            p->slots[i].text = NULL;
            hole = i;
        }
    }
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
    size_t bucket = fresh->hash & (p->owner_buckets - 1);
    for (owner_set_t *o = p->owners[bucket]; o != NULL; o = o->next) {
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
    if (p->owner_count + 1 > p->owner_buckets) {
        size_t buckets = p->owner_buckets * 2;
        owner_set_t **table = xcalloc(buckets, sizeof(*table));
        for (size_t i = 0; i < p->owner_buckets; i++) {
            for (owner_set_t *o = p->owners[i]; o != NULL;) {
                owner_set_t *next = o->next;
                o->next = table[o->hash & (buckets - 1)];
                table[o->hash & (buckets - 1)] = o;
                o = next;
            }
        }
        free(p->owners);
        p->owners = table;
        p->owner_buckets = buckets;
        bucket = fresh->hash & (buckets - 1);
    }
    fresh->refs = 1;
    fresh->next = p->owners[bucket];
    p->owners[bucket] = fresh;
    p->owner_count++;
    return fresh;
}

void principals_owner_put(principals_t *p, const owner_set_t *owner)
{
    if (owner == NULL) {
        return;
    }
    owner_set_t **link = &p->owners[owner->hash & (p->owner_buckets - 1)];
    while (*link != owner) {
        link = &(*link)->next;
    }
    owner_set_t *o = *link;
    if (--o->refs > 0) {
        return;
    }
    *link = o->next;
    p->owner_count--;
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
    size_t mask = p->capacity - 1;
    if (count > PRINCIPALS_MAX_READERS) {
        count = PRINCIPALS_MAX_READERS;
    }
    for (size_t i = 0; i < count; i++) {
        hashes[i] = hash_bytes(HASH_SEED, readers[i].p, readers[i].len);
        __builtin_prefetch(&p->slots[hashes[i] & mask]);
    }
    /* Then the text of the slot each is likely to be found in, compared below. */
    for (size_t i = 0; i < count; i++) {
        for (size_t j = hashes[i] & mask; p->slots[j].text != NULL; j = (j + 1) & mask) {
            if (p->slots[j].hash == hashes[i]) {
                __builtin_prefetch(p->slots[j].text);
                break;
            }
        }
    }
    out->is_everyone = false;
    out->count = 0;
    for (size_t i = 0; i < count; i++) {
        if (readers[i].len == 1 && readers[i].p[0] == '*') {
            out->is_everyone = true;
            continue;
        }
        size_t slot = find_slot(p, readers[i].p, readers[i].len, hashes[i]);
        if (p->slots[slot].text != NULL) {
            out->ids[out->count++] = p->slots[slot].id;
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
    return p->count;
}
