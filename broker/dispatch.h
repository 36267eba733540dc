#ifndef HEROLD_DISPATCH_H
#define HEROLD_DISPATCH_H

/*
 * Dispatch: hands each accepted event to the channels of the subscriptions it concerns,
 * and each lifecycle moment to the subscriber.
 *
 * Events arrive from ingest on a channel. For each, subs finds the matching subscriptions
 * the owner may read; the notification payload is encoded once (notif.h) on the first
 * match and shared: a connection subscription's item goes to its session, a websocket:
 * subscription's to every live session of its owner, a webhook subscription's to the
 * webhook delivery thread. Neither channel blocks the other: sessions have bounded queues,
 * the webhook thread has its own per-target queues.
 *
 * Lifecycle: dispatch_sweep, called about once a second, sends reauthorizationRequired
 * the configured lead time before a persistent subscription expires, and removes expired
 * ones after sending subscriptionRemoved (to the lifecycle URL for webhooks, to the
 * owner's sessions for websocket: subscriptions).
 *
 * Cursors and replays (DESIGN 1, 3.4, 4). Every event handed out raises dispatched_seq.
 * Webhook subscriptions keep a cursor (sub->cursor, in the store): the webhook thread
 * reports delivered positions after each MARK that dispatch_sweep sends once a second, and
 * the sweep sends every cursor that moved, with the users' websocket cursors, in one
 * write to the store writer (store_writer.h). A webhook target that falls behind (its queue
 * overflowed, or it was restored after a restart with a cursor before the store's end) asks for a
 * replay: dispatch marks the subscription replaying (live items are no longer sent to it), reads
 * the store from the target's position in chunks of DISPATCH_REPLAY_RECORDS records, and sends the
 * matching items; the chunk that reaches what was committed when it began ends the replay,
 * and live items up to that seq are skipped since the chunk carried them. Sessions that
 * resume are served the same way, in chunks that fit their queues. A position before
 * the first retained event yields a `missed` lifecycle notification, then the replay goes
 * on from the first retained event. While the store is unavailable (PostgreSQL away),
 * replays pause and retry.
 *
 * Runs on the service thread.
 */

#include <stdbool.h>
#include <stdint.h>

#include "chan.h"
#include "notif.h"
#include "store.h"
#include "store_writer.h"
#include "subs.h"
#include "webhook.h"
#include "ws.h"

/* Events dispatched per loop turn. Each turn ends with a wake-up of the loop (an eventfd
 * written and read) and a round of the sessions it gave items: 64 a turn took 8-17% more
 * CPU and system calls per delivery than 256 in W1. */
#define DISPATCH_EVENTS_PER_TURN 256
#define DISPATCH_REPLAY_RECORDS 2000 /* records one replay chunk reads at most */
#define DISPATCH_REPLAY_ITEMS 1000   /* items one webhook replay chunk carries at most */
#define DISPATCH_REPLAY_CHUNKS_PER_TURN 8
#define DISPATCH_REPLAY_RETRY_MS 1000 /* after the store was unavailable */
/* Slots of a doubling of subs' tables moved on (subs_maintain) each time dispatch runs dry,
 * and at each sweep: about 0.03 and 0.25 ms at a million patterns, whose whole doubling
 * took 33 ms in one go. */
#define DISPATCH_DRY_MOVE_SLOTS 1024
#define DISPATCH_SWEEP_MOVE_SLOTS 8192

typedef struct dispatch dispatch_t;

/* A dispatcher over subs, ws, webhook and store (borrowed; it reads events there and writes
 * through writer), fed by events (borrowed; its items are event_t *, freed after
 * dispatch). */
dispatch_t *dispatch_new(subs_t *subs, ws_t *ws, webhook_t *webhook, store_t *store,
                         store_writer_t *writer, chan_t *events);

void dispatch_free(dispatch_t *dispatch);

/* Dispatches up to DISPATCH_EVENTS_PER_TURN events. Returns true when more may wait;
 * false when dispatch ran dry, after moving on the index's upkeep (subs_maintain). */
bool dispatch_pending(dispatch_t *dispatch);

/* Sends reauthorizationRequired and subscriptionRemoved as due at now (seconds since the
 * epoch) and removes expired subscriptions. */
void dispatch_sweep(dispatch_t *dispatch, int64_t now, int64_t reauthorization_lead);

/* Tells the webhook thread that every item up to the last dispatched seq was sent (MARK). */
void dispatch_mark(dispatch_t *dispatch);

/* Sends every cursor that moved to the store, to be stored durably (dispatch_sweep does the
 * same once a second without waiting for the disk). */
void dispatch_flush_cursors(dispatch_t *dispatch);

/* Sends a lifecycle notification about a persistent subscription to its subscriber. */
void dispatch_lifecycle(dispatch_t *dispatch, const sub_t *sub, const char *lifecycle_event);

/* Tells the webhook thread the current target of a webhook subscription (after creation
 * or a change of URL, expiration or secret). */
void dispatch_webhook_target_put(dispatch_t *dispatch, const sub_t *sub);

/* Removes a subscription and everything queued for it elsewhere, and sends its delete to
 * the store (a delete the store refuses, or that finds no room, is logged: the
 * subscription comes back after a restart, to expire or be removed again). */
void dispatch_remove_subscription(dispatch_t *dispatch, sub_t *sub);

/* dispatch_remove_subscription without the store: for a subscription whose delete the
 * store has already done. */
void dispatch_forget_subscription(dispatch_t *dispatch, sub_t *sub);

/* The outcome of a write dispatch sent (tag 0): a delete the store refused is logged,
 * cursors it refused are marked to be stored with the next ones. */
void dispatch_store_written(dispatch_t *dispatch, const store_write_t *write);

/* The seq of the last event handed out: where a new webhook subscription's cursor starts. */
uint64_t dispatch_dispatched_seq(const dispatch_t *dispatch);

/* At start, as the store loads (after the subscriptions, before dispatch exists): a cursor
 * it kept, "user:<id>" for ws or a subscription id for subs (dispatch writes both). */
void dispatch_restore_cursor(subs_t *subs, ws_t *ws, const char *key, uint64_t seq);

/* After a restart: hands every restored webhook subscription to the webhook thread, those
 * whose cursor is before the store's end marked to catch up. */
void dispatch_restore_targets(dispatch_t *dispatch);

/* The webhook thread wants the items of a subscription after seq (WEBHOOK_RESULT_WANT). */
void dispatch_webhook_want(dispatch_t *dispatch, const char *subscription_id, uint64_t after);

/* Delivered positions from the webhook thread (WEBHOOK_RESULT_POSITIONS). */
void dispatch_webhook_positions(dispatch_t *dispatch, const webhook_result_t *result);

/* One page of a subscription's retained notifications (the pull endpoint). */
typedef struct dispatch_page {
    notif_t **notifs; /* count references, in seq order */
    size_t count;
    uint64_t cursor; /* the store was read up to here: the next page's since */
    bool has_more;   /* records after cursor were committed before the read */
    bool is_missed;  /* since was before the first retained event */
} dispatch_page_t;

/* Reads the items of sub after since (0: from the first retained), at most top of them and
 * DISPATCH_REPLAY_RECORDS records. Returns 0 with page filled (release with
 * dispatch_page_clear), or HEROLD_E_UNAVAILABLE. */
int dispatch_page_read(dispatch_t *dispatch, sub_t *sub, uint64_t since, size_t top,
                       dispatch_page_t *page, struct herr *err);

void dispatch_page_clear(dispatch_page_t *page);

/* Serves up to DISPATCH_REPLAY_CHUNKS_PER_TURN replay chunks (webhook wants first, then
 * resuming sessions). Returns true when more are waiting now. */
bool dispatch_replay(dispatch_t *dispatch);

#endif
