#ifndef HEROLD_STORE_H
#define HEROLD_STORE_H

/*
 * The store: everything herold keeps between runs (DESIGN 4) behind one interface with two
 * backends.
 *
 *   events         the log of accepted events: append a batch, commit it (the acks wait
 *                  for the commit), read from a sequence number, retention;
 *   subscriptions  persistent subscriptions: an id and an opaque JSON document that subs.c
 *                  writes and reads (subs_to_json, subs_restore), so neither backend knows
 *                  sub_t;
 *   cursors        delivery positions: the last seq delivered to a webhook subscription
 *                  (key: the subscription id) or to a user's websocket: subscriptions
 *                  (key: "user:" followed by the user id).
 *
 * Backends.
 * - Embedded (store_file_open, --data DIR): events in the journal under DIR/journal
 *   (journal.h: CRC-checked segments, group commit, torn tails cut at start); subscriptions
 *   and cursors in DIR/subscriptions.log, one line per change — `P <id> <json>` (put),
 *   `D <id>` (delete), `C <key> <seq>` (cursor) — appended and fdatasync'ed before the call
 *   returns, or once for a batch (store_state_begin). At open the log is read (a torn
 *   last line, from a crash in the middle of an append, is cut and logged; damage before
 *   it is refused) and rewritten compactly through subscriptions.log.new, fsync, rename
 *   and a directory fsync; it is compacted again whenever it holds more than twice as many
 *   lines as live entries.
 * - PostgreSQL (store_pg_open, --store postgresql://...; store_pg.c): the same three in
 *   tables created or migrated at open from schemas/sql/. A commit is one multi-row INSERT
 *   acknowledged by the server's COMMIT. When the server goes away, commits and reads
 *   fail with HEROLD_E_UNAVAILABLE (nothing of the failed batch is kept: its rows are
 *   removed after the reconnect, since no publisher was told they were stored) and the
 *   backend reconnects with backoff; the caller answers its clients with an error and
 *   tries again later.
 *
 * - Memory (store_mem_open, --store memory:; store_mem.c): all three in RAM, lost at exit.
 *   For tests and for measuring what durability costs (bench/durability.py); never for
 *   data anyone relies on.
 *
 * Threads. One thread appends, commits and trims events (ingest's); event reads and the
 * seq queries may run on any thread concurrently with it and see only committed events;
 * subscriptions and cursors are written by one thread only, the store writer's
 * (store_writer.h; once it has stopped, the thread that stopped it).
 *
 * Why a table of functions: the two backends share no code below this line, and the
 * callers (ingest, dispatch, rest, main) should not know which one runs. store_conformance
 * tests (tests/unit/test_store_conformance.c) hold the backends to the same behaviour.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "journal.h"

#define STORE_MAX_DOCUMENT_BYTES (64 * 1024)
#define STORE_MAX_KEY_BYTES 256

typedef struct store store_t;
struct json_t;

/* What a backend hands back at open: every stored subscription, then every cursor. The
 * strings are NUL-terminated and valid during the call. Either callback may be NULL. */
typedef struct store_loader {
    void (*subscription)(const char *id, const char *json, void *ctx);
    void (*cursor)(const char *key, uint64_t seq, void *ctx);
    void *ctx;
} store_loader_t;

typedef struct store_cursor {
    const char *key;
    uint64_t seq;
} store_cursor_t;

typedef struct store_config {
    const char *data_dir;     /* embedded: the data directory */
    const char *conninfo;     /* PostgreSQL: a libpq URI (postgresql://...) */
    int64_t retention_ms;     /* 0: JOURNAL_DEFAULT_RETENTION_MS */
    uint64_t retention_bytes; /* 0: JOURNAL_DEFAULT_RETENTION_BYTES */
    uint64_t segment_bytes;   /* embedded only; 0: the journal's default */
} store_config_t;

/* A commit started on the ingest thread and finished on another (store_commit_splits). */
typedef struct store_commit {
    journal_sync_t sync; /* the embedded store's */
} store_commit_t;

/* The backend's functions; see the wrappers below for their contracts. */
struct store_ops {
    const char *name; /* "embedded", "postgresql" */
    void (*close)(store_t *store);
    int (*event_append)(store_t *store, const void *payload, size_t len, int64_t time_ms,
                        uint64_t *seq, struct herr *err);
    int (*event_commit)(store_t *store, struct herr *err);
    /* Optional: the commit in two halves (the embedded store); see store_commit_splits. */
    int (*event_commit_start)(store_t *store, store_commit_t *commit, struct herr *err);
    int (*event_commit_finish)(store_t *store, store_commit_t *commit, struct herr *err);
    int (*event_read)(store_t *store, uint64_t from_seq, size_t max_records, journal_read_fn fn,
                      void *ctx, struct herr *err);
    uint64_t (*event_first_seq)(store_t *store);
    uint64_t (*event_last_seq)(store_t *store);
    size_t (*event_trim)(store_t *store, int64_t now_ms);
    int (*subscription_put)(store_t *store, const char *id, const char *json, struct herr *err);
    int (*subscription_delete)(store_t *store, const char *id, struct herr *err);
    int (*cursors_put)(store_t *store, const store_cursor_t *cursors, size_t count, bool sync,
                       struct herr *err);
    /* Optional: batches of the three writes above (store_state_begin); NULL in a backend
     * whose writes cost nothing to make durable. */
    int (*state_begin)(store_t *store, struct herr *err);
    int (*state_commit)(store_t *store, struct herr *err);
    void (*state_abort)(store_t *store);
};

/* Every backend's struct starts with this. */
struct store {
    const struct store_ops *ops;
};

/* ---- shared by the backends (store.c) ---- */

/* A key (cursor key or subscription id) of len bytes: 1..STORE_MAX_KEY_BYTES of valid
 * UTF-8 without spaces or control characters. Returns 0 or HEROLD_E_BAD_REQUEST naming
 * what. */
int store_key_check(const char *what, const char *key, size_t len, struct herr *err);

/* store_cursors_put's precondition for all count cursors: valid keys, seqs that fit a
 * signed 64-bit column. Returns 0 or HEROLD_E_BAD_REQUEST (nothing may be stored then). */
int store_cursors_check(const store_cursor_t *cursors, size_t count, struct herr *err);

/* Sets cursors[key] (a JSON object of integers) to seq unless it holds a higher one: the
 * forward-only rule of the in-process backends. */
void store_cursor_raise(struct json_t *cursors, const char *key, uint64_t seq);

/* Opens the embedded store in config->data_dir (created if missing) and hands everything
 * stored to loader. Returns NULL with err set when the directory, the journal or the log
 * cannot be used, or they are damaged beyond a torn tail. */
store_t *store_file_open(const store_config_t *config, const store_loader_t *loader,
                         struct herr *err);

/* Opens the PostgreSQL store at config->conninfo: connects, takes the advisory lock that
 * makes this broker the database's only writer, creates or migrates the schema, and hands
 * everything stored to loader. Returns NULL with err set: HEROLD_E_UNAVAILABLE when the
 * server cannot be reached or another broker holds the lock, HEROLD_E_SYSTEM for a schema
 * that cannot be migrated. */
store_t *store_pg_open(const store_config_t *config, const store_loader_t *loader,
                       struct herr *err);

/* A store in memory only: events, subscriptions and cursors vanish with the process.
 * Returns NULL with err set (HEROLD_E_CONFIG) only for a bad config. */
store_t *store_mem_open(const store_config_t *config, const store_loader_t *loader,
                        struct herr *err);

/* Releases the store. Events appended and not committed may or may not be kept (the
 * journal may already have written them out); they were never acked. NULL is a no-op. */
static inline void store_close(store_t *store)
{
    if (store != NULL) {
        store->ops->close(store);
    }
}

static inline const char *store_name(const store_t *store)
{
    return store->ops->name;
}

/* Appends one event with the next seq (returned in *seq) stamped time_ms; payload is
 * copied. Not durable, not visible to readers and not to be acked until store_event_commit
 * returned 0. Returns 0, HEROLD_E_TOO_LARGE (over JOURNAL_MAX_RECORD_BYTES; no seq used),
 * HEROLD_E_UNAVAILABLE (PostgreSQL away: refuse the event) or HEROLD_E_SYSTEM (fatal). */
static inline int store_event_append(store_t *store, const void *payload, size_t len,
                                     int64_t time_ms, uint64_t *seq, struct herr *err)
{
    return store->ops->event_append(store, payload, len, time_ms, seq, err);
}

/* Makes every event appended since the last commit durable (group commit). Returns 0;
 * HEROLD_E_UNAVAILABLE when none of them was stored (the batch is dropped and its seqs will
 * be given again: answer every publisher of the batch with an error); HEROLD_E_SYSTEM when
 * the process must end without acking (a failed fsync). */
static inline int store_event_commit(store_t *store, struct herr *err)
{
    return store->ops->event_commit(store, err);
}

/* Whether the store commits in two halves: store_event_commit_start on the thread that
 * appends, which may append on at once (those events are not covered), then
 * store_event_commit_finish on any thread, which makes the events appended before the
 * start durable, so that the next batch is read and appended during the sync. At most
 * one commit is in flight; store_event_commit waits for it. */
static inline bool store_commit_splits(const store_t *store)
{
    return store->ops->event_commit_start != NULL;
}

/* The first half (store_commit_splits only). Returns 0 or HEROLD_E_SYSTEM (fatal). Every 0
 * must be followed by exactly one store_event_commit_finish. */
static inline int store_event_commit_start(store_t *store, store_commit_t *commit, struct herr *err)
{
    return store->ops->event_commit_start(store, commit, err);
}

/* The second half, on any thread. Returns 0 or HEROLD_E_SYSTEM: the process must end
 * without acking. */
static inline int store_event_commit_finish(store_t *store, store_commit_t *commit,
                                            struct herr *err)
{
    return store->ops->event_commit_finish(store, commit, err);
}

/* Calls fn for committed events with seq >= from_seq (0: from the first retained), in
 * order, at most max_records of them (0: no limit), up to the last event committed when
 * the read began; fn returning false stops the read. Returns 0; HEROLD_E_NOT_FOUND when
 * from_seq is before the first retained event (nothing read); HEROLD_E_UNAVAILABLE
 * (PostgreSQL away) or HEROLD_E_SYSTEM. */
static inline int store_event_read(store_t *store, uint64_t from_seq, size_t max_records,
                                   journal_read_fn fn, void *ctx, struct herr *err)
{
    return store->ops->event_read(store, from_seq, max_records, fn, ctx, err);
}

/* The first retained and the last committed seq (0 while there is none). */
static inline uint64_t store_event_first_seq(store_t *store)
{
    return store->ops->event_first_seq(store);
}

static inline uint64_t store_event_last_seq(store_t *store)
{
    return store->ops->event_last_seq(store);
}

/* Deletes events outside retention (age and total size) at now_ms; returns how many
 * (embedded: whole segments, so a count of segments). The newest events are kept. */
static inline size_t store_event_trim(store_t *store, int64_t now_ms)
{
    return store->ops->event_trim(store, now_ms);
}

/* Stores (creates or replaces) a subscription's document durably. Returns 0,
 * HEROLD_E_TOO_LARGE, HEROLD_E_UNAVAILABLE or HEROLD_E_SYSTEM (then the change must be
 * refused). */
static inline int store_subscription_put(store_t *store, const char *id, const char *json,
                                         struct herr *err)
{
    return store->ops->subscription_put(store, id, json, err);
}

/* Deletes a subscription and the cursor under its id durably (no-op for an unknown id).
 * Returns 0, HEROLD_E_UNAVAILABLE or HEROLD_E_SYSTEM. */
static inline int store_subscription_delete(store_t *store, const char *id, struct herr *err)
{
    return store->ops->subscription_delete(store, id, err);
}

/* Stores count cursors durably, all or none (keys ≤ STORE_MAX_KEY_BYTES, no whitespace or
 * control characters). A cursor only moves forward: a seq lower than the stored one is
 * ignored. Returns 0, HEROLD_E_BAD_REQUEST for a bad key, HEROLD_E_UNAVAILABLE or
 * HEROLD_E_SYSTEM. */
static inline int store_cursors_put(store_t *store, const store_cursor_t *cursors, size_t count,
                                    struct herr *err)
{
    return store->ops->cursors_put(store, cursors, count, true, err);
}

/* Like store_cursors_put, but returns without waiting for the disk: the embedded store
 * writes the lines and leaves them to the kernel, so a crash of the process keeps them and
 * only a crash of the machine may lose the last ones, which repeats deliveries (at least
 * once). For the once-a-second cursor flush: it used to run on the service thread, where
 * an fdatasync behind the journal's writes stalled every WebSocket delivery for up to a few
 * hundred ms; on the store writer's thread it still would hold the subscription changes
 * queued behind it, and every sync adds to what stalls this machine (bench/RESULTS.md,
 * "what the syncs do to the whole machine"). PostgreSQL and memory store them as
 * store_cursors_put does. */
static inline int store_cursors_note(store_t *store, const store_cursor_t *cursors, size_t count,
                                     struct herr *err)
{
    return store->ops->cursors_put(store, cursors, count, false, err);
}

/*
 * Batches. Between store_state_begin and store_state_commit, store_subscription_put,
 * store_subscription_delete and store_cursors_put return once their write is made, not
 * once it is durable; the commit makes the whole batch durable at once: one fdatasync of
 * subscriptions.log, one PostgreSQL transaction. The store writer batches the writes
 * that wait in its queue, so that concurrent changes share a sync instead of queueing for
 * one each.
 *
 * A write refused on its own (HEROLD_E_TOO_LARGE, HEROLD_E_BAD_REQUEST) is not written and
 * leaves the batch going. HEROLD_E_UNAVAILABLE, from a write or from the commit, means that
 * nothing of the batch is stored (PostgreSQL rolls it back; the embedded store never
 * returns it); after a write's, end the batch with store_state_abort. A batch is never left
 * open: the same thread begins and ends it, with nothing but these writes between.
 */

/* Whether the backend batches at all: when not, every write is durable on its return
 * (memory), and store_state_begin and store_state_commit only return 0. */
static inline bool store_state_batches(const store_t *store)
{
    return store->ops->state_begin != NULL;
}

/* Begins a batch. Returns 0, HEROLD_E_UNAVAILABLE or HEROLD_E_SYSTEM. */
static inline int store_state_begin(store_t *store, struct herr *err)
{
    return store->ops->state_begin != NULL ? store->ops->state_begin(store, err) : 0;
}

/* Makes the batch's writes durable and ends it. Returns 0, HEROLD_E_UNAVAILABLE (none of
 * the batch is stored) or HEROLD_E_SYSTEM. */
static inline int store_state_commit(store_t *store, struct herr *err)
{
    return store->ops->state_commit != NULL ? store->ops->state_commit(store, err) : 0;
}

/* Ends a batch in which a write failed with HEROLD_E_UNAVAILABLE. */
static inline void store_state_abort(store_t *store)
{
    if (store->ops->state_abort != NULL) {
        store->ops->state_abort(store);
    }
}

#endif
