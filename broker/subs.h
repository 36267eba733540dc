#ifndef HEROLD_SUBS_H
#define HEROLD_SUBS_H

/*
 * Subscriptions: their records and the index that finds them.
 *
 * subs owns every subscription record and the matching index, and is the only code that
 * updates the index. A subscription belongs to an owner (a principal, borrowed: the
 * channel that created it keeps the principal alive longer than the subscription) and is
 * delivered through an opaque channel pointer (for now a WebSocket session; webhooks
 * follow).
 *
 * subs_match_event finds every subscription an event concerns: those matching the
 * resource and, for a move, the previous path, each reported once, filtered by change
 * type in the index and then by the reader check (auth_may_read) against the owner's
 * principal. The reader check runs per event and is never cached.
 *
 * Owned by one thread: the libwebsockets service thread.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "errors.h"
#include "event.h"
#include "index.h"
#include "path.h"

#define SUBS_ID_BYTES 36            /* a UUID in its text form */
#define SUBS_EXPIRATION_BYTES 28    /* "2026-11-27T10:00:00.0000000Z" */

typedef struct subs subs_t;

typedef struct sub {
    char id[SUBS_ID_BYTES + 1];
    char *resource;                    /* the pattern text, owned */
    path_t pattern;                    /* views into resource */
    unsigned change_mask;              /* EVENT_* bits */
    const auth_principal_t *owner;     /* borrowed */
    void *channel;                     /* where notifications go; borrowed */
    int64_t expires_at;                /* seconds since the epoch */
    char expiration[SUBS_EXPIRATION_BYTES + 1]; /* expires_at in Graph's format */
    uint64_t last_matched_seq;         /* dedup of resource and previous matches */
} sub_t;

/* Called once per subscription an event concerns; returning false stops the match. */
typedef bool (*subs_match_fn)(sub_t *sub, void *ctx);

subs_t *subs_new(void);

/* Frees every remaining subscription and the index. NULL is a no-op. */
void subs_free(subs_t *subs);

/* Creates a subscription to the pattern resource[0..len) for the changes in mask. The
 * pattern must already be in its final form (`me/` expanded). On success returns 0 and
 * sets *out to the record, which subs owns (until subs_remove). Returns HEROLD_E_BAD_PATH
 * or HEROLD_E_BAD_CHANGE_TYPE (mask 0) with err set, changing nothing. */
int subs_add(subs_t *subs, const char *resource, size_t len, unsigned change_mask,
             const auth_principal_t *owner, void *channel, int64_t expires_at, sub_t **out,
             struct herr *err);

/* Removes and frees a subscription returned by subs_add. */
void subs_remove(subs_t *subs, sub_t *sub);

/* Calls fn for each subscription that event concerns and whose owner may read it.
 * event->seq must be non-zero and increase from one call to the next. Returns the number
 * of calls. Allocates nothing. */
size_t subs_match_event(subs_t *subs, const event_t *event, subs_match_fn fn, void *ctx);

/* The number of live subscriptions. */
size_t subs_count(const subs_t *subs);

/* Writes a new random UUIDv4 in text form into out (SUBS_ID_BYTES + 1 bytes). */
void subs_new_id(char *out);

#endif
