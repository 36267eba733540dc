#ifndef HEROLD_JOURNAL_H
#define HEROLD_JOURNAL_H

/*
 * The embedded journal: herold's durable log of accepted events, under DATA/journal/.
 *
 * Files. The journal is a sequence of segment files named by the sequence number of their
 * first record (`00000000000000000001.seg`, twenty digits so that names sort). A segment
 * starts with a 16-byte header (magic "HEROLDJ1", format version, reserved) and holds
 * records back to back. A new segment starts when the current one would pass
 * segment_bytes.
 *
 * Records. Little-endian, explicit widths:
 *   u32 length   of the payload
 *   u32 crc      CRC32C over the 20 bytes after it and the payload
 *   u64 seq      consecutive, starting at 1 for a new journal
 *   i64 time_ms  when the record was appended (wall clock, for retention by age)
 *   payload      the event's msgpack bytes, exactly as the publisher sent them
 * A record is never split across segments.
 *
 * Durability. journal_append only writes into the current segment (through a buffer);
 * journal_sync makes everything appended so far durable (write + fdatasync). The caller
 * acks only after journal_sync returned 0: one sync covers every record appended since
 * the last one (group commit). A failed write or fdatasync is fatal: the journal logs it
 * and returns HEROLD_E_SYSTEM, after which the caller must exit without acking; a sync is
 * never retried and trusted.
 *
 * Recovery. journal_open scans the segments in order and checks every record of the last
 * one (length within bounds, CRC, seq continuing the previous). The first bad record —
 * a torn write from a crash, a flipped bit — and everything after it is cut
 * (ftruncate + fsync), with a warning saying where and why; such records were never
 * acked. A bad record in an older segment, or a segment whose first seq does not follow
 * the previous one, means the journal is damaged beyond a torn tail: journal_open fails
 * rather than silently replaying less than was acked.
 *
 * Retention. journal_trim deletes whole segments, oldest first, while the journal is over
 * retention_bytes or the segment's newest record is older than retention_ms; the current
 * segment is never deleted. Readers asking for a seq before journal_first_seq learn that
 * it is gone (cursor beyond retention).
 *
 * Threads: one thread appends and syncs (the journal thread); journal_read may run on
 * another thread concurrently with appends, and sees records up to the last completed
 * journal_sync. The journal guards the little state they share with a mutex.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

#define JOURNAL_MAX_RECORD_BYTES (64 * 1024)   /* the ingest message limit */
#define JOURNAL_DEFAULT_SEGMENT_BYTES (64ULL * 1024 * 1024)
#define JOURNAL_DEFAULT_RETENTION_MS (7LL * 24 * 3600 * 1000)
#define JOURNAL_DEFAULT_RETENTION_BYTES (1024ULL * 1024 * 1024)
#define JOURNAL_RECORD_HEADER_BYTES 24
#define JOURNAL_SEGMENT_HEADER_BYTES 16

typedef struct journal journal_t;

typedef struct journal_config {
    const char *dir;            /* created if missing */
    uint64_t segment_bytes;     /* 0: the default */
    int64_t retention_ms;       /* 0: the default */
    uint64_t retention_bytes;   /* 0: the default */
} journal_config_t;

/* One record as journal_read hands it out: views valid during the callback only. */
typedef struct journal_record {
    uint64_t seq;
    int64_t time_ms;
    const void *payload;
    size_t len;
} journal_record_t;

/* Called for each record in order; returning false stops the read. */
typedef bool (*journal_read_fn)(const journal_record_t *record, void *ctx);

/* Opens (or creates) the journal in config->dir, recovering as described above. Returns
 * NULL with err set when the directory cannot be used or the journal is damaged. */
journal_t *journal_open(const journal_config_t *config, struct herr *err);

/* Closes the journal (syncing what was appended). NULL is a no-op. */
void journal_close(journal_t *journal);

/* Appends one record with the next sequence number (returned in *seq) stamped time_ms.
 * Not durable until journal_sync. Returns 0, HEROLD_E_TOO_LARGE for a payload over
 * JOURNAL_MAX_RECORD_BYTES (nothing written), or HEROLD_E_SYSTEM (fatal). */
int journal_append(journal_t *journal, const void *payload, size_t len, int64_t time_ms,
                   uint64_t *seq, struct herr *err);

/* Makes every appended record durable. Returns 0 or HEROLD_E_SYSTEM (fatal). */
int journal_sync(journal_t *journal, struct herr *err);

/* Calls fn for every durable record with seq >= from_seq, in order. Returns 0, HEROLD_E_
 * NOT_FOUND when from_seq is before the first retained record (nothing is read: the
 * caller decides whether to send `missed` and read from journal_first_seq), or
 * HEROLD_E_SYSTEM. A from_seq past the end reads nothing and returns 0. */
int journal_read(journal_t *journal, uint64_t from_seq, journal_read_fn fn, void *ctx,
                 struct herr *err);

/* Deletes segments outside retention at now_ms. Returns the number deleted. */
size_t journal_trim(journal_t *journal, int64_t now_ms);

/* The first retained and the last durable sequence numbers (0 and 0 when empty). */
uint64_t journal_first_seq(journal_t *journal);
uint64_t journal_last_seq(journal_t *journal);

/* Bytes on disk, all segments. */
uint64_t journal_size_bytes(journal_t *journal);

/* CRC32C (Castagnoli) of len bytes, continuing from crc (0 to start). */
uint32_t journal_crc32c(uint32_t crc, const void *data, size_t len);

#endif
