#ifndef HEROLD_PATTERNS_H
#define HEROLD_PATTERNS_H

/*
 * The matching index: subscriptions by pattern, and the match of an event against them
 * with the reader check.
 *
 * One record per distinct pattern text holds its subscriptions (its members). A pattern
 * without `*` segments is found by its text in one hash table; a resource matches exactly
 * the literal patterns that are its prefixes (path.h: a subscription covers everything
 * beneath it), so a match hashes the resource's prefixes in one pass and probes the table
 * once per segment, whatever else is subscribed; a prefix of a length that no record has
 * (deeper than any subscription, mostly: a document in a subscribed folder) is not probed.
 * A pattern with `*` segments hangs off the record of its literal prefix (the text before
 * its first `*`; the root for a pattern that starts with one) and is compared segment by
 * segment when that prefix is probed.
 *
 * The reader check. A pattern with few members scans them: up to four compare the
 * event's reader names with each owner's, more intersect sorted principal ids
 * (principals.h). A pattern with PATTERNS_FILING_MIN members or more also *files* them by
 * principal: per chunk of members, a directory of buckets over 32-bit entries (a 16-bit
 * hash tag of the principal id, the member's slot in the chunk), about 4.5 bytes per
 * principal an owner holds, so an event visits, reader by reader, only members whose
 * owner may read it. Every
 * candidate is confirmed against its owner's ids, and reported only under the smallest
 * id it shares with the readers, so tags that collide cost a check and never a wrong or a
 * second delivery.
 *
 * A match writes nothing: several threads may match at once as long as none changes the
 * index meanwhile. Changes (join, leave, maintain) belong to one thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "principals.h"

struct sub;

typedef struct patterns patterns_t;
typedef struct pattern pattern_t;

/* Members from which a pattern files them by principal; below half of it, it scans. */
#define PATTERNS_FILING_MIN 16
/* A filing covers this many members (slots 0..4095 of a chunk fit its 16-bit entries); a
 * pattern with more has one per chunk, so that a join or a leave rewrites one chunk's
 * entries, not all of them. */
#define PATTERNS_FILING_CHUNK 4096

/* Called once per subscription an event concerns; returning false stops the match. */
typedef bool (*patterns_match_fn)(struct sub *sub, void *ctx);

/* A new empty index that reads owner sets and translates readers through principals,
 * which must outlive it. Never NULL. */
patterns_t *patterns_new(const principals_t *principals);

/* Frees the index. Every subscription must have left. NULL is a no-op. */
void patterns_free(patterns_t *patterns);

/* Adds sub to the pattern text[0..len), which must be a valid pattern (path.h). Reads
 * sub->owner_set and sets sub->pattern and sub->pattern_slot. */
void patterns_join(patterns_t *patterns, struct sub *sub, const char *text, size_t len);

/* Removes sub from its pattern, freeing the pattern when it was the last member. */
void patterns_leave(patterns_t *patterns, struct sub *sub);

/* Moves a doubling of the table of patterns on by up to slots slots, for the thread that
 * changes the index when it has nothing else to do (adding or removing a pattern moves it
 * too).
 * Returns the slots still to move, 0 when no doubling is under way. */
size_t patterns_maintain(patterns_t *patterns, size_t slots);

/* The memory the table of patterns holds in its own mappings, outside malloc (for
 * benchmarks, which count what malloc hands out). */
size_t patterns_table_bytes(const patterns_t *patterns);

/* The bytes of the blocks of the pattern records' pools (recpool.h), for tests: a pool
 * grows only when its free records run out. */
size_t patterns_record_pool_bytes(const patterns_t *patterns);

/* The pattern's text, NUL-terminated, and its length. */
const char *patterns_text(const pattern_t *pattern);
size_t patterns_text_len(const pattern_t *pattern);

/* Calls fn once for every subscription whose pattern matches the event's resource or, for
 * a move, its previous path, whose change mask has the event's type and whose owner may
 * read the event. Returns the number of calls. An event without readers matches nothing. */
size_t patterns_match(const patterns_t *patterns, const event_t *event, patterns_match_fn fn,
                      void *ctx);

/* patterns_match for each of events in turn, with ctxs[i] for events[i]; returns the calls
 * in all. The table's slots and records of the next few events are fetched while one is
 * visited, so that the cache misses of consecutive events overlap. */
size_t patterns_match_many(const patterns_t *patterns, const event_t *const *events, size_t count,
                           patterns_match_fn fn, void *const *ctxs);

/* The number of distinct patterns with members (for tests and benchmarks). */
size_t patterns_count(const patterns_t *patterns);

/* True when the pattern files its members by principal (for tests). */
bool patterns_is_filed(const pattern_t *pattern);

#endif
