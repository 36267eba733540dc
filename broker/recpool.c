#include "recpool.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* A block is this header, then its records back to back. */
struct block {
    struct block *next;
};
_Static_assert(sizeof(struct block) % 8 == 0, "records after the header stay 8-byte aligned");

/* A free record holds the next free one in its first bytes. */
static void free_link_set(void *record, void *next)
{
    memcpy(record, &next, sizeof(next));
}

static void *free_link_get(const void *record)
{
    void *next;
    memcpy(&next, record, sizeof(next));
    return next;
}

static size_t records_per_largest_block(size_t record_bytes)
{
    return (RECPOOL_BLOCK_BYTES - sizeof(struct block)) / record_bytes;
}

void recpool_init(recpool_t *pool, size_t record_bytes)
{
    size_t bytes = record_bytes < 8 ? 8 : (record_bytes + 7) & ~(size_t)7;
    assert(records_per_largest_block(bytes) >= 1);
    *pool = (recpool_t){.record_bytes = bytes, .next_block_records = RECPOOL_FIRST_BLOCK_RECORDS};
}

void recpool_destroy(recpool_t *pool)
{
    for (struct block *b = pool->blocks; b != NULL;) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
    *pool = (recpool_t){0};
}

/* A new block's records go on the free list, the first of them on top. */
static void add_block(recpool_t *pool)
{
    size_t largest = records_per_largest_block(pool->record_bytes);
    size_t records = pool->next_block_records < largest ? pool->next_block_records : largest;
    pool->next_block_records = records * 2;
    size_t bytes = sizeof(struct block) + records * pool->record_bytes;
    struct block *b = xmalloc(bytes);
    b->next = pool->blocks;
    pool->blocks = b;
    pool->block_bytes += bytes;
    unsigned char *first = (unsigned char *)(b + 1);
    for (size_t i = records; i-- > 0;) {
        void *r = first + i * pool->record_bytes;
        free_link_set(r, pool->free_records);
        pool->free_records = r;
        MEM_POISON(r, pool->record_bytes);
    }
}

void *recpool_get(recpool_t *pool)
{
    if (pool->free_records == NULL) {
        add_block(pool);
    }
    void *r = pool->free_records;
    MEM_UNPOISON(r, pool->record_bytes);
    pool->free_records = free_link_get(r);
    memset(r, 0, pool->record_bytes);
    return r;
}

void recpool_put(recpool_t *pool, void *record)
{
    if (record == NULL) {
        return;
    }
    free_link_set(record, pool->free_records);
    pool->free_records = record;
    MEM_POISON(record, pool->record_bytes);
}
