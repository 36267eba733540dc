#ifndef HEROLD_WS_H
#define HEROLD_WS_H

/*
 * WebSocket sessions at /v1.0/ws (schemas/ws-protocol.md): the handshake's token check,
 * the client ops (subscribe, unsubscribe, ping), and delivery of notifications that
 * dispatch.c hands over. Each session has one bounded FIFO holding, in order, its answers to
 * ops and its notification items; the writer sends one frame per WRITEABLE callback,
 * batching consecutive items into one notify frame. Notification items that are due go out
 * at once, without waiting for WRITEABLE, while lws holds nothing of an earlier frame (ws.c,
 * write_now). A session whose FIFO would exceed WS_QUEUE_MAX_ENTRIES is not given more: its
 * queue is dropped, it is sent a `missed` lifecycle frame carrying the cursor of the last
 * item it was sent, and it is closed with 1008, so a client that stops reading costs bounded
 * memory.
 *
 * Resume (DESIGN 3.4): `?since=<cursor>` on the upgrade request or the `resume` op puts a
 * session on the replay list. dispatch_replay reads the store for it in chunks that fit
 * its queue and hands the items of the user's websocket: subscriptions over
 * (ws_session_replay_deliver); the chunk that reaches the end of the store ends the replay
 * (ws_session_replay_advance), and live websocket: items up to that seq, which the replay
 * already sent, are skipped. While replaying, live items for that session's websocket:
 * subscriptions are not queued, and every frame's cursor stays at the position the replay
 * has reached, so a cursor a client holds never skips anything the replay still owes it.
 *
 * Per-user cursors: the cursor of the last notify frame sent to any session of a user is
 * remembered (and stored by dispatch as "user:<id>"); `resume` without a cursor resumes
 * from it.
 *
 * Everything here runs on the libwebsockets service thread, which http.c drives; ws.c
 * never owns the context. Sessions are freed only from the CLOSED callback.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "ratelimit.h"
#include "notif.h"
#include "subs.h"
#include "wsop.h"

struct lws;

#define WS_MAX_MESSAGE_BYTES 16384 /* one client message after reassembly */
#define WS_MAX_SUBSCRIPTIONS_PER_CONNECTION 256
/* The smallest burst of ops a connection is allowed (ws_limits_t.ops_per_second). */
#define WS_OPS_BURST_MIN (2 * WS_MAX_SUBSCRIPTIONS_PER_CONNECTION)
#define WS_QUEUE_MAX_ENTRIES 8192
/* A session gains DISPATCH_EVENTS_PER_TURN items per loop turn for each of its matching
 * subscriptions and may send one frame per turn, so a frame holds several times that: a
 * client that keeps reading keeps up while up to four of its subscriptions match every
 * event of a full-speed stream (the queue takes bursts beyond that). A frame ends at
 * whichever bound comes first (it always holds at least one item). */
#define WS_BATCH_MAX_ITEMS 1024
#define WS_BATCH_MAX_BYTES (256 * 1024)

typedef struct ws ws_t;

/* What one user or connection may do (config.h has the flags and defaults). */
typedef struct ws_limits {
    int max_connections_per_user; /* at once; 0: no limit */
    double ops_per_second;        /* per connection; bursts of twice that, at least
                                     WS_OPS_BURST_MIN; 0: no limit */
    ratelimit_t *creations;       /* subscriptions created per user, shared with REST; or NULL */
    int creations_per_minute;     /* the rate behind creations, for messages */
    char **allowed_origins;       /* Origin headers accepted; NULL: any (borrowed) */
    size_t allowed_origin_count;
} ws_limits_t;
typedef struct ws_session ws_session_t;

/* A WebSocket layer checking tokens with auth and creating subscriptions in subs (both
 * borrowed). */
ws_t *ws_new(const auth_t *auth, subs_t *subs);

/* Writes every session that holds notifications back for coalescing (ws.c explains the
 * rule). Called when dispatch has queued everything that has arrived. */
void ws_flush_held(ws_t *ws);

/* ws_flush_held, unless notifications arrived faster than a busy broker's rate since the
 * last flush: then the coalescing timer writes them, in larger frames (see ws.c). */
void ws_flush_held_when_quiet(ws_t *ws);

/* Frees the layer. Every session must have been closed. NULL is a no-op. */
void ws_free(ws_t *ws);

/* The handshake check for an upgrade request on wsi. Returns a new session (owned by
 * ws until ws_session_closed) or NULL with *http_status set (401 for a bad token). */
ws_session_t *ws_handshake(ws_t *ws, struct lws *wsi, int *http_status);

/* The connection is established. */
void ws_session_open(ws_session_t *session);

/* A received fragment. Returns 0, or -1 to close the connection. */
int ws_session_receive(ws_session_t *session, const void *data, size_t len, bool is_final,
                       bool is_binary);

/* The connection is writeable. Returns 0, or -1 to close it. */
int ws_session_writeable(ws_session_t *session);

/* The connection is gone: removes its subscriptions and frees the session. */
void ws_session_closed(ws_session_t *session);

/* Queues the item of notif for sub on session (the channel of a connection subscription).
 * Takes its own reference to notif. */
void ws_session_deliver(ws_session_t *session, notif_t *notif, const sub_t *sub);

/* Queues the item of notif for sub on every live session of user (websocket: delivery). */
void ws_deliver_to_user(ws_t *ws, const char *user, notif_t *notif, const sub_t *sub);

/* Sends {"op":"lifecycle","lifecycleEvent":…,"subscriptionId":…} to every session of user. */
void ws_lifecycle_to_user(ws_t *ws, const char *user, const char *lifecycle_event,
                          const char *subscription_id);

/* ---- resume (dispatch.c drives the replays) ---- */

/* The sessions replaying, in no particular order. */
ws_session_t *ws_replay_first(ws_t *ws);
ws_session_t *ws_replay_next(const ws_session_t *session);

/* The next seq to read for session (0: from the first retained). */
uint64_t ws_session_replay_from(const ws_session_t *session);

/* Sets the limits (copied; the pointers in it are borrowed). Without it: none. */
void ws_set_limits(ws_t *ws, const ws_limits_t *limits);

/* Once a second: a session whose token expires within the lead (or within half the
 * token's remaining life at connect, if shorter) is sent reauthorizationRequired, once per
 * token; a session whose token has expired is closed with 1008. A session renews its
 * token with the `auth` op. */
void ws_sweep(ws_t *ws, int64_t now, int64_t reauthorization_lead);

/* The token's principal of session. */
const auth_principal_t *ws_session_principal(const ws_session_t *session);

/* How many more entries session's queue takes before it overflows. */
size_t ws_session_room(const ws_session_t *session);

/* Queues an item read from the store for sub (one of the user's websocket:
 * subscriptions). */
void ws_session_replay_deliver(ws_session_t *session, notif_t *notif, const sub_t *sub);

/* Queues a `missed` lifecycle frame: the events up to cursor are no longer retained. */
void ws_session_replay_missed(ws_session_t *session, uint64_t cursor);

/* The store was read up to scanned_seq for session; is_at_end ends the replay. */
void ws_session_replay_advance(ws_session_t *session, uint64_t scanned_seq, bool is_at_end);

typedef void (*ws_cursor_fn)(const char *user, uint64_t seq, void *ctx);

/* Calls fn for every user whose cursor moved since the last call. */
void ws_cursors_take_dirty(ws_t *ws, ws_cursor_fn fn, void *ctx);

/* A user's cursor as the store kept it. */
void ws_cursor_restore(ws_t *ws, const char *user, uint64_t seq);

/* Starts closing every session with 1001 (going away). */
void ws_close_all(ws_t *ws);

/* The number of open sessions. */
size_t ws_session_count(const ws_t *ws);

#endif
