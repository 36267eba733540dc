#ifndef HEROLD_STORE_H
#define HEROLD_STORE_H

/*
 * The store: where persistent subscriptions live between runs (DESIGN 4). Events live in
 * the journal (journal.h); cursors join the store with resume.
 *
 * To the store a subscription is an id and an opaque JSON document that subs.c writes and
 * reads (subs_to_json, subs_restore). That keeps the interface small enough for a second
 * backend (PostgreSQL: one row per subscription) without either knowing sub_t.
 *
 * The embedded backend (store_file_open) keeps DATA/subscriptions.log: one line per
 * change, `P <id> <json>` (put) or `D <id>` (delete), appended and fdatasync'ed before the
 * call returns, so a change the API confirmed survives a crash. At open the log is read
 * (a torn last line, from a crash in the middle of an append, is cut and logged) and then
 * rewritten compactly through subscriptions.log.new, fsync, rename and a directory fsync.
 * It is compacted again whenever it holds more than twice as many lines as live entries.
 *
 * Called from the service thread only.
 */

#include <stdbool.h>
#include <stddef.h>

#include "errors.h"

#define STORE_MAX_DOCUMENT_BYTES (64 * 1024)

typedef struct store store_t;

/* Called once per stored subscription at load: its id and document (NUL-terminated,
 * valid during the call). */
typedef void (*store_subscription_fn)(const char *id, const char *json, void *ctx);

/* Opens the embedded store in dir (created if missing) and hands every stored
 * subscription to fn. Returns NULL with err set when the directory or the log cannot be
 * used, or a line before the last is damaged. */
store_t *store_file_open(const char *dir, store_subscription_fn fn, void *ctx, struct herr *err);

/* Closes the store. NULL is a no-op. */
void store_close(store_t *store);

/* Stores (creates or replaces) a subscription's document durably. Returns 0, or
 * HEROLD_E_SYSTEM (the change must then be refused), or HEROLD_E_TOO_LARGE. */
int store_subscription_put(store_t *store, const char *id, const char *json, struct herr *err);

/* Deletes a subscription durably (no-op for an unknown id). Returns 0 or HEROLD_E_SYSTEM. */
int store_subscription_delete(store_t *store, const char *id, struct herr *err);

#endif
