#ifndef HEROLD_DEDUP_H
#define HEROLD_DEDUP_H

/*
 * Publisher deduplication: which sequence number did (source, id) get, if any, within
 * the journal's retention?
 *
 * The table maps a hash of (source, id) to the seq of the event that carried it. It stores
 * no strings: a hash match is only a candidate, which the caller confirms by comparing the
 * event itself (from the batch in flight or from the journal). So a hash collision costs
 * one journal read, never a wrongly deduplicated event. A slot is 8 bytes (32 bits of the
 * hash and the seq's distance from the table's base); a table starts at most half full and
 * moves on at three quarters, expired entries included, so a retained event takes 11 to 22
 * bytes, or up to 32 for a moment while a move is under way (bench/dedup with 3 M events
 * retained: a table of 64 MiB, 128 MiB at the peak of a move). Entries older than the
 * journal's first seq are dropped as lookups meet them and as the table moves. A slot's
 * seq spans 32 bits: a journal retaining more than 2^31 events may have the repeats of its
 * older ones missed (the table then keeps the last 2^31 to 2^32 seqs).
 *
 * Open addressing with linear probing; deletions shift back the entries that follow. No
 * call takes time that grows with the table: growing, and dropping expired entries, move
 * the table a few slots per call (dedup.c says how). dedup_forget_after is the exception.
 * Owned by the ingest thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dedup dedup_t;

/* Called for each candidate seq whose hash matches; returns true when the candidate is
 * the same (source, id), which ends the lookup. */
typedef bool (*dedup_confirm_fn)(uint64_t seq, void *ctx);

dedup_t *dedup_new(void);

void dedup_free(dedup_t *dedup);

/* The hash of (source, id). */
uint64_t dedup_hash(const char *source, size_t source_len, const char *id, size_t id_len);

/* Remembers that the event with this hash got seq. */
void dedup_add(dedup_t *dedup, uint64_t hash, uint64_t seq);

/* Starts fetching the table's slot for hash, for a dedup_find a little later: with
 * millions of retained events every lookup is a cache miss, and a batch of lookups
 * prefetched first lets them overlap. */
void dedup_prefetch(const dedup_t *dedup, uint64_t hash);

/* The seq of an earlier event with this hash that confirm accepts, or 0. Entries with a
 * seq below oldest_seq (out of retention) are not found, and removed on the way. */
uint64_t dedup_find(dedup_t *dedup, uint64_t hash, uint64_t oldest_seq, dedup_confirm_fn confirm,
                    void *ctx);

/* Entries with a seq below oldest_seq are out of retention: no lookup finds them from now
 * on. They are dropped over the following calls (dedup_count counts them until then). */
void dedup_expire(dedup_t *dedup, uint64_t oldest_seq);

/* Forgets every entry with a seq above last_seq: the events of a batch the store could not
 * commit, whose seqs will be given to other events. Rare, and done at once: it takes time
 * in proportion to the table. */
void dedup_forget_after(dedup_t *dedup, uint64_t last_seq);

/* The number of entries held, expired ones not yet dropped included. */
size_t dedup_count(const dedup_t *dedup);

/* The bytes of its tables: the one taking adds, and what the one moving into it has not
 * given back yet. */
size_t dedup_table_bytes(const dedup_t *dedup);

#endif
