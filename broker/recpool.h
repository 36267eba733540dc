#ifndef HEROLD_RECPOOL_H
#define HEROLD_RECPOOL_H

/*
 * Records of one size, carved from blocks, for the index's millions of small records.
 *
 * malloc puts an 8-byte header before every chunk and rounds chunks to 16 bytes: a 41-byte
 * pattern record takes 64 bytes. A pool lays its records back to back, 8-byte aligned, with
 * nothing between them (48 bytes there). The price: under AddressSanitizer a write past a
 * record's end into the next one is not caught, as there is no red zone between them (a
 * record freed or never handed out is caught).
 *
 * A freed record is kept for the pool's next record, chained through its first bytes and
 * poisoned for AddressSanitizer (mem.h) until it is handed out again; blocks go back to
 * malloc only when the pool is destroyed. So a pool holds as many records as it ever held
 * at once, which for the index is its peak of subscriptions. Blocks grow from a few
 * records to RECPOOL_BLOCK_BYTES, so that a pool of a handful of records stays small.
 *
 * Not thread-safe: a pool belongs to the one thread that changes its owner.
 */

#include <stddef.h>

/* The largest block; below glibc's mmap threshold, so blocks come from the heap. */
#define RECPOOL_BLOCK_BYTES ((size_t)64 * 1024)
/* The first block's records; each next block has twice as many, up to the largest. */
#define RECPOOL_FIRST_BLOCK_RECORDS 8

typedef struct recpool {
    size_t record_bytes;       /* a multiple of 8 */
    size_t next_block_records; /* for the next block */
    void *blocks;              /* chained through their first pointer */
    void *free_records;
    size_t block_bytes; /* all blocks together, for benchmarks and tests */
} recpool_t;

/* An empty pool of records of record_bytes, rounded up to a multiple of 8 (at least 8,
 * at most what one largest block holds). */
void recpool_init(recpool_t *pool, size_t record_bytes);

/* Frees every block; every record the pool handed out goes with them. */
void recpool_destroy(recpool_t *pool);

/* A zeroed record, 8-byte aligned. Never NULL. */
void *recpool_get(recpool_t *pool);

/* Gives record (from recpool_get of this pool) back for reuse. NULL is a no-op. */
void recpool_put(recpool_t *pool, void *record);

#endif
