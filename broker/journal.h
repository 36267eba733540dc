#ifndef HEROLD_JOURNAL_H
#define HEROLD_JOURNAL_H

/*
 * The embedded journal: herold's durable log of accepted events, under DATA/journal/.
 *
 * Files. The journal is a sequence of segment files named by the sequence number of their
 * first record (`00000000000000000001.seg`, twenty digits so that names sort); other files
 * in the directory are ignored. A segment starts with a 16-byte header (the magic
 * "HEROLDJ1", a u32 format version, now 1, and a u32 reserved as 0) and holds records back
 * to back. A new segment starts when the next record would take the current one past
 * segment_bytes; a record is never split across segments, so a record larger than
 * segment_bytes gets a segment of its own. A new file is created, given its header and
 * fsynced, and the directory fsynced, before any record goes into it.
 *
 * Segments made ahead (journal_config_t.preallocate). fdatasync after an append must also
 * commit the file's new size, which on ext4 costs more than overwriting blocks that are
 * already there: 0.22 against 0.16 ms per sync of one record here, and 1.35-1.7 times the
 * records per second for batches of 1 to 512 (bench/journal_append -p). So a thread of the
 * journal's makes the next segment ahead of time: `next-segment.tmp`, its header followed by
 * zeros up to segment_bytes, written 256 KiB at a time with a pause between (64 MiB take
 * about half a second) and fsynced. It starts once the current segment holds half of
 * segment_bytes, or 1 MiB when the current segment was not made ahead (a new journal, or
 * the last segment after a restart), and that segment then ends as soon as the next one is
 * ready. A new segment is the file made ahead, renamed, when one is ready (else it is
 * created as above), and the directory fsynced. Records then overwrite the zeros, and the
 * file keeps its size until the segment ends: it is cut to its records (ftruncate + fsync)
 * before the next segment starts and at journal_close. The file made ahead is removed at
 * journal_open and journal_close. The disk holds up to two segments' worth of zeros beyond
 * the records (retention counts records). A failure to make one is logged and the journal
 * goes on creating segments as above.
 *
 * Records. Little-endian, explicit widths:
 *   u32 length   of the payload
 *   u32 crc      CRC32C over the length, seq and time_ms fields (the 4 bytes before it and
 *                the 16 after it, in file order) and then the payload
 *   u64 seq      consecutive, starting at 1 for a new journal
 *   i64 time_ms  when the record was appended (wall clock, for retention by age)
 *   payload      the event's msgpack bytes, exactly as the publisher sent them
 *
 * Durability. journal_append only writes into the current segment (through a buffer of
 * JOURNAL_WRITE_BUFFER_BYTES, written out with write() when full, but not synced);
 * journal_sync makes everything appended so far durable (write + fdatasync). The caller
 * acks only after journal_sync returned 0: one sync covers every record appended since
 * the last one (group commit). A sync may also run in two halves, so that the journal
 * thread appends on during the fdatasync: journal_sync_start writes out what is buffered
 * and names what the sync covers, and journal_sync_finish, on any thread, fdatasyncs and
 * publishes it; at most one runs at a time. Starting a new segment also syncs the old
 * one. A failed write or fdatasync is fatal: the journal logs it and returns
 * HEROLD_E_SYSTEM, from then on refuses every append and sync, and the caller must exit
 * without acking; a sync is never retried and trusted.
 *
 * Recovery. journal_open checks every record of every segment (length within bounds, CRC,
 * seq continuing the previous one; the first record's seq is the segment's name), which
 * costs one sequential read of the retained journal at start-up. In the last segment, the
 * first record that is torn or fails its CRC — a torn write from a crash, a flipped bit —
 * and everything after it is cut (ftruncate + fsync), with a warning saying where and
 * why; such records were never acked. Zeros where the next record's header would be (all
 * 24 bytes: no record has seq 0) are the end of a segment made ahead, and are cut with
 * everything after them in the same way (past the zeros a crash may have left records that
 * were written but never synced, so never acked); in an older segment, which was cut to its
 * records before the next one began, they are damage. A last segment shorter than its header, or
 * holding only a header of zero bytes, is a creation cut short by a crash and is removed.
 * Everything else means the journal is damaged beyond a torn tail, and journal_open fails
 * with a message naming the file and the offset rather than silently replaying less than
 * was acked: a bad record in an older segment, a segment whose first seq does not follow
 * the previous one, a record with a valid CRC but the wrong seq (no crash writes that), a
 * bad magic, or an unknown format version (even in the last segment: cutting a newer
 * format would destroy it).
 *
 * Reading. journal_read skips whole segments by their seq ranges and, inside a segment,
 * starts from the nearest of the seek points the journal keeps in memory (one per 64 KiB
 * or so of records), so a read from a cursor costs a short scan, not a whole segment. It
 * reads through its own descriptor with pread, never the writer's buffer.
 *
 * Retention. journal_trim deletes whole segments, oldest first, while the journal is over
 * retention_bytes or the segment's newest record is older than retention_ms; the current
 * segment is never deleted. Each deletion is followed by a directory fsync, so that a
 * crash can only leave a contiguous run of segments. Readers asking for a seq before
 * journal_first_seq learn that it is gone (cursor beyond retention). With preallocate,
 * the journal's own thread removes the files after journal_trim has returned (the
 * segments are out of the journal at once), and journal_close those it has not yet.
 *
 * Threads: one thread appends, syncs, trims and closes (the journal thread), one other
 * may finish the syncs it started, and with preallocate one of the journal's own makes
 * segments ahead and removes trimmed ones; journal_read and the inspection functions may
 * run on other threads concurrently with it, and see records up to the last completed
 * sync. The journal guards the little state they share with a mutex, never held during
 * I/O of the journal thread or during a read callback. Only one journal may have a
 * directory open: journal_open takes an exclusive flock on it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

#define JOURNAL_MAX_RECORD_BYTES (64 * 1024) /* the ingest message limit */
#define JOURNAL_DEFAULT_SEGMENT_BYTES (64ULL * 1024 * 1024)
#define JOURNAL_DEFAULT_RETENTION_MS (7LL * 24 * 3600 * 1000)
#define JOURNAL_DEFAULT_RETENTION_BYTES (1024ULL * 1024 * 1024)
#define JOURNAL_RECORD_HEADER_BYTES 24
#define JOURNAL_SEGMENT_HEADER_BYTES 16
#define JOURNAL_FORMAT_VERSION 1
#define JOURNAL_WRITE_BUFFER_BYTES (1024 * 1024) /* appends between write()s */

typedef struct journal journal_t;

typedef struct journal_config {
    const char *dir;          /* created (with its parents) if missing */
    uint64_t segment_bytes;   /* 0: the default */
    int64_t retention_ms;     /* 0: the default; negative is refused */
    uint64_t retention_bytes; /* 0: the default */
    bool preallocate;         /* make segments ahead (see the top of this file) */
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
 * NULL with err set: HEROLD_E_CONFIG for a bad config, HEROLD_E_UNAVAILABLE when another
 * journal has the directory open, HEROLD_E_SYSTEM when the directory cannot be used or
 * the journal is damaged. Release with journal_close. */
journal_t *journal_open(const journal_config_t *config, struct herr *err);

/* Syncs what was appended (unless an earlier write failed) and releases the journal. No
 * read may be running. NULL is a no-op. */
void journal_close(journal_t *journal);

/* Appends one record with the next sequence number (returned in *seq unless seq is NULL)
 * stamped time_ms; payload is copied. Not durable until journal_sync. Returns 0,
 * HEROLD_E_TOO_LARGE for a payload over JOURNAL_MAX_RECORD_BYTES (nothing written, no
 * seq used), or HEROLD_E_SYSTEM (fatal). */
int journal_append(journal_t *journal, const void *payload, size_t len, int64_t time_ms,
                   uint64_t *seq, struct herr *err);

/* Makes every appended record durable. Returns 0 or HEROLD_E_SYSTEM (fatal). */
int journal_sync(journal_t *journal, struct herr *err);

/* A sync in two halves (see Durability above). */
typedef struct journal_sync {
    int fd; /* -1: nothing to sync */
    uint64_t segment_first_seq;
    uint64_t last_seq; /* durable once finished */
    uint64_t size;     /* the segment's bytes then */
    int64_t newest_ms;
} journal_sync_t;

/* Journal thread: waits for a sync still running, then writes out every appended record
 * and fills *sync with what the sync will cover (nothing when all of it is durable
 * already). Appends may go on at once; they are not covered. Returns 0 or HEROLD_E_SYSTEM
 * (fatal). Every 0 must be followed by exactly one journal_sync_finish. */
int journal_sync_start(journal_t *journal, journal_sync_t *sync, struct herr *err);

/* Any thread: makes what *sync names durable and visible to readers. Returns 0 or
 * HEROLD_E_SYSTEM (fatal: nothing more may be acked). */
int journal_sync_finish(journal_t *journal, journal_sync_t *sync, struct herr *err);

/* Calls fn for every durable record with seq >= from_seq (0: from the first retained
 * record), in order, up to the last record durable when the read began. Returns 0,
 * HEROLD_E_NOT_FOUND when from_seq is before the first retained record (nothing is read:
 * the caller decides whether to send `missed` and read from journal_first_seq), or
 * HEROLD_E_SYSTEM (an I/O error, or a record found damaged after journal_open). A
 * from_seq past the end reads nothing and returns 0. If journal_trim deletes the records
 * a long read has not reached yet, the read stops there with HEROLD_E_NOT_FOUND after the
 * records already handed to fn. */
int journal_read(journal_t *journal, uint64_t from_seq, journal_read_fn fn, void *ctx,
                 struct herr *err);

/* Deletes segments outside retention at now_ms (ms since the epoch, as time_ms).
 * Returns the number deleted. A failed unlink is logged; the file stays until the next
 * start-up, where it is simply the oldest segment again. */
size_t journal_trim(journal_t *journal, int64_t now_ms);

/* The first retained and the last durable sequence numbers. journal_first_seq is 0 while
 * no durable record is retained (a new journal, or everything trimmed but a current
 * segment not yet synced); journal_last_seq is 0 until the first record is durable. */
uint64_t journal_first_seq(journal_t *journal);
uint64_t journal_last_seq(journal_t *journal);

/* Bytes of all segments as far as they are durable (headers included). */
uint64_t journal_size_bytes(journal_t *journal);

/* Whether the current segment was made ahead (journal thread; for tests and benchmarks). */
bool journal_is_preallocated(journal_t *journal);

/* CRC32C (Castagnoli) of len bytes, continuing from crc (0 to start): the SSE4.2 crc32
 * instruction where the CPU has it, else the table. */
uint32_t journal_crc32c(uint32_t crc, const void *data, size_t len);

/* The two implementations behind journal_crc32c, for tests and benchmarks: slicing-by-8
 * tables, and the SSE4.2 instruction (which falls back to the table when
 * journal_crc32c_has_sse42() is false, so any CPU may call it). */
uint32_t journal_crc32c_table(uint32_t crc, const void *data, size_t len);
uint32_t journal_crc32c_sse42(uint32_t crc, const void *data, size_t len);
bool journal_crc32c_has_sse42(void);

#endif
