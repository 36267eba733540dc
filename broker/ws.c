#include "ws.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "event.h"
#include "hash.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "notif.h"
#include "wsop.h"

/* Seconds a session that must close may take to flush its last frames. */
#define WS_CLOSE_FLUSH_SECONDS 10

/* Write coalescing. Every send() on a socket costs a system call, a socket buffer and a
 * wake-up of the reader, whatever its size (about 20 us here, most of it the kernel); with
 * events fanned out over many connections each one gets only a few items per turn of the
 * loop, and those small sends took half of the service thread under load (W1: 100
 * connections, 1-3 items per send). So notifications are held, and a session is written
 * when one of these comes first:
 *   - it holds WS_COALESCE_ITEMS notifications;
 *   - dispatch ran dry (ws_flush_held_when_quiet) while notifications arrive at less
 *     than WS_BUSY_ITEMS_PER_S since the last flush: everything that has arrived is
 *     queued, so a broker that is not saturated writes at once and adds no delay (a rate,
 *     not a count: after a slow fdatasync a burst of a few hundred is still no load);
 *   - WS_COALESCE_US passed since the first held notification, which bounds the delay
 *     under load. A busy broker runs dry after every batch that ingest commits (a few
 *     milliseconds apart at 100k events/s), and flushing then gave W1 frames of about a
 *     dozen items, the send() calls taking half of the service thread; waiting for the
 *     timer instead makes them several times larger.
 * Answers to ops and lifecycle frames are never held. */
#define WS_COALESCE_US 20000
#define WS_COALESCE_ITEMS 64
#define WS_BUSY_ITEMS_PER_S 150000
#define WS_BUSY_WINDOW_US 5000

/* The first size of a session's queue, which doubles from there. */
#define WS_QUEUE_FIRST_CAPACITY 8

/* One FIFO entry: a notification item for one subscription, or a whole text frame
 * (an answer to an op or a lifecycle frame). */
struct out_entry {
    notif_t *notif; /* NULL for a text frame */
    char *text;     /* owned; NULL for a notification */
    size_t text_len;
    char sub_id[SUBS_ID_BYTES + 1];
    char sub_expiration[SUBS_EXPIRATION_BYTES + 1];
    char *client_state_json; /* owned; NULL when the subscription has none */
    bool include_resource_data;
    uint64_t cursor; /* the notify frame's cursor when this item is its last */
};

/* What herold remembers of a user across connections: the cursor of the last notify frame
 * sent to any of the user's sessions (the store keeps it under "user:<id>"). */
struct ws_user {
    struct ws_user *next; /* hash chain */
    char *name;
    /* The principal the user's sessions share while their tokens say the same (the tabs of
     * one browser hold one token): one copy, not one per connection (bench/ws_idle.sh). */
    auth_principal_t *principal;
    int session_count;  /* open connections */
    int principal_refs; /* sessions holding principal */
    uint64_t cursor;
    bool is_dirty;
};

struct ws_session {
    ws_t *ws;
    struct lws *wsi;
    auth_principal_t *principal;
    sub_t **subs;
    size_t sub_count;
    size_t sub_capacity;
    struct out_entry *queue; /* ring */
    size_t queue_head;
    size_t queue_length;
    size_t queue_capacity;
    char *rx;
    size_t rx_len;
    uint64_t last_sent_seq;
    struct ws_user *user;
    /* Resume: while replaying, websocket: items come from the store (dispatch reads it for
     * the sessions on the replay list), not from live dispatch. */
    uint64_t replay_from;  /* the next seq to read; 0: from the first retained */
    uint64_t replay_upto;  /* live websocket: items up to this seq came from the replay */
    uint64_t cursor_floor; /* the replay has queued everything up to here */
    ws_session_t *replay_prev;
    ws_session_t *replay_next;
    int64_t opened_at;        /* seconds since the epoch */
    rate_bucket_t ops;        /* client messages, against limits.ops_per_second */
    const char *close_reason; /* static text sent with close_status */
    ws_session_t *coalesce_prev;
    ws_session_t *coalesce_next;
    ws_session_t *prev;
    ws_session_t *next;
    enum lws_close_status close_status;
    /* The flags together: one per idle connection adds up (bench/ws_idle.sh). */
    bool is_rx_oversize;
    bool is_replaying;
    bool is_replay_listed;
    bool is_overflowed;           /* only the missed frame is left to send */
    bool is_reauthorization_sent; /* for the current token */
    bool is_close_pending;        /* close with close_status at the next WRITEABLE */
    bool is_write_failed;         /* a write outside WRITEABLE failed: close at the next */
    bool is_coalescing;           /* on the ws's coalesce list, waiting for its timer */
    bool is_principal_shared;     /* principal is the user's shared one, not the session's */
};

#define WS_USER_BUCKETS 4096

struct ws {
    const auth_t *auth;
    subs_t *subs;
    ws_session_t *sessions;
    size_t session_count;
    ws_session_t *replaying;
    struct ws_user *users[WS_USER_BUCKETS];
    /* write coalescing (see the top of this file) */
    ws_session_t *coalescing;
    size_t items_since_flush; /* notifications queued since the last ws_flush_held */
    int64_t last_flush_us;    /* clock_monotonic_us of it */
    lws_sorted_usec_list_t coalesce_timer;
    struct lws_context *coalesce_context; /* set while the timer is scheduled */
    unsigned char *frame;                 /* the notify frame being written (service thread) */
    size_t frame_capacity;
    ws_limits_t limits;
};

ws_t *ws_new(const auth_t *auth, subs_t *subs)
{
    ws_t *ws = xcalloc(1, sizeof(*ws));
    ws->auth = auth;
    ws->subs = subs;
    return ws;
}

void ws_set_limits(ws_t *ws, const ws_limits_t *limits)
{
    ws->limits = *limits;
}

void ws_free(ws_t *ws)
{
    if (ws == NULL) {
        return;
    }
    assert(ws->sessions == NULL);
    free(ws->frame);
    for (size_t i = 0; i < WS_USER_BUCKETS; i++) {
        struct ws_user *user = ws->users[i];
        while (user != NULL) {
            struct ws_user *next = user->next;
            free(user->name);
            free(user);
            user = next;
        }
    }
    free(ws);
}

static struct ws_user *user_get(ws_t *ws, const char *name)
{
    size_t bucket = hash_cstr(name) % WS_USER_BUCKETS;
    for (struct ws_user *user = ws->users[bucket]; user != NULL; user = user->next) {
        if (strcmp(user->name, name) == 0) {
            return user;
        }
    }
    struct ws_user *user = xcalloc(1, sizeof(*user));
    user->name = xstrdup(name);
    user->next = ws->users[bucket];
    ws->users[bucket] = user;
    return user;
}

/* The principal a session of user holds for a verified principal, which it hands over:
 * the user's shared one when it says the same (principal is freed), principal itself as
 * the shared one when the user has none, or principal as the session's own. */
static auth_principal_t *principal_hold(struct ws_user *user, auth_principal_t *principal,
                                        bool *is_shared)
{
    if (user->principal == NULL) {
        user->principal = principal;
    } else if (auth_principal_equal(user->principal, principal)) {
        auth_principal_free(principal);
    } else {
        *is_shared = false;
        return principal;
    }
    user->principal_refs++;
    *is_shared = true;
    return user->principal;
}

static void principal_release(struct ws_user *user, auth_principal_t *principal, bool is_shared)
{
    if (!is_shared) {
        auth_principal_free(principal);
    } else if (--user->principal_refs == 0) {
        auth_principal_free(user->principal);
        user->principal = NULL;
    }
}

void ws_cursor_restore(ws_t *ws, const char *user, uint64_t seq)
{
    struct ws_user *record = user_get(ws, user);
    if (seq > record->cursor) {
        record->cursor = seq;
    }
}

void ws_cursors_take_dirty(ws_t *ws, ws_cursor_fn fn, void *ctx)
{
    for (size_t i = 0; i < WS_USER_BUCKETS; i++) {
        for (struct ws_user *user = ws->users[i]; user != NULL; user = user->next) {
            if (user->is_dirty) {
                user->is_dirty = false;
                fn(user->name, user->cursor, ctx);
            }
        }
    }
}

/* ---- the queue ---- */

static void entry_clear(struct out_entry *entry)
{
    notif_release_local(entry->notif);
    free(entry->text);
    free(entry->client_state_json);
    memset(entry, 0, sizeof(*entry));
}

static struct out_entry *queue_at(ws_session_t *s, size_t i)
{
    return &s->queue[(s->queue_head + i) % s->queue_capacity];
}

static void queue_clear(ws_session_t *s)
{
    for (size_t i = 0; i < s->queue_length; i++) {
        entry_clear(queue_at(s, i));
    }
    s->queue_head = 0;
    s->queue_length = 0;
}

/* Room for one more entry; the ring grows by doubling up to its bound. */
static struct out_entry *queue_append(ws_session_t *s)
{
    if (s->queue_length == s->queue_capacity) {
        size_t capacity = s->queue_capacity == 0 ? WS_QUEUE_FIRST_CAPACITY : s->queue_capacity * 2;
        struct out_entry *ring = xcalloc(capacity, sizeof(*ring));
        for (size_t i = 0; i < s->queue_length; i++) {
            ring[i] = *queue_at(s, i);
        }
        free(s->queue);
        s->queue = ring;
        s->queue_capacity = capacity;
        s->queue_head = 0;
    }
    struct out_entry *entry = queue_at(s, s->queue_length++);
    memset(entry, 0, sizeof(*entry));
    return entry;
}

/* An empty ring of the first size is given back: a connection that subscribed and then
 * waits, as most do, kept almost 1 KiB for it (bench/RESULTS.md). A larger ring belongs to a
 * busy connection and stays, so that its traffic does not allocate per frame. */
static void queue_release_if_idle(ws_session_t *s)
{
    if (s->queue_length == 0 && s->queue_capacity == WS_QUEUE_FIRST_CAPACITY) {
        free(s->queue);
        s->queue = NULL;
        s->queue_capacity = 0;
        s->queue_head = 0;
    }
}

static void queue_pop(ws_session_t *s)
{
    assert(s->queue_length > 0);
    entry_clear(queue_at(s, 0));
    s->queue_head = (s->queue_head + 1) % s->queue_capacity;
    s->queue_length--;
}

/* The client stopped reading: drop what it has not been sent, tell it where to resume
 * from, and close. */
static void session_overflow(ws_session_t *s)
{
    char frame[128];
    queue_clear(s);
    s->is_overflowed = true;
    int len =
        snprintf(frame, sizeof(frame),
                 "{\"op\":\"lifecycle\",\"lifecycleEvent\":\"missed\",\"cursor\":\"%" PRIu64 "\"}",
                 s->last_sent_seq);
    struct out_entry *entry = queue_append(s);
    entry->text = xstrndup(frame, (size_t)len);
    entry->text_len = (size_t)len;
    log_msg(LOG_LEVEL_INFO, "ws: session of %s overflowed its queue of %d entries; closing",
            s->principal->user, WS_QUEUE_MAX_ENTRIES);
    /* A client that never reads cannot hold the connection open forever. */
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_USER_OK, WS_CLOSE_FLUSH_SECONDS);
    lws_callback_on_writable(s->wsi);
}

/* Queues a text frame (takes ownership of text). */
static void queue_text(ws_session_t *s, char *text, size_t len)
{
    if (s->is_overflowed || s->is_close_pending) {
        free(text);
        return;
    }
    if (s->queue_length >= WS_QUEUE_MAX_ENTRIES) {
        free(text);
        session_overflow(s);
        return;
    }
    struct out_entry *entry = queue_append(s);
    entry->text = text;
    entry->text_len = len;
    if (s->queue_length == 1) {
        lws_callback_on_writable(s->wsi);
    }
}

static void queue_json(ws_session_t *s, json_t *message)
{
    char *text = json_dumps(message, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(message);
    if (text == NULL) {
        log_msg(LOG_LEVEL_ERROR, "ws: json_dumps failed (out of memory)");
        abort();
    }
    queue_text(s, text, strlen(text));
}

static void coalesce_remove(ws_session_t *s)
{
    if (!s->is_coalescing) {
        return;
    }
    if (s->coalesce_prev != NULL) {
        s->coalesce_prev->coalesce_next = s->coalesce_next;
    } else {
        s->ws->coalescing = s->coalesce_next;
    }
    if (s->coalesce_next != NULL) {
        s->coalesce_next->coalesce_prev = s->coalesce_prev;
    }
    s->coalesce_prev = NULL;
    s->coalesce_next = NULL;
    s->is_coalescing = false;
}

/* Writes the session's next frame at once, outside its WRITEABLE callback, when lws holds
 * nothing of an earlier write. Waiting for WRITEABLE costs a turn of the loop and two
 * epoll_ctl calls, as libev arms POLLOUT for the request and disarms it when it fires with
 * nothing more wanted: about 60 system calls per 1,000 deliveries in W1, each dear on a
 * virtual CPU. The socket may not take a frame whole: lws then keeps the rest and asks for
 * WRITEABLE itself, and while it holds any (lws_partial_buffered) later frames wait for
 * WRITEABLE too, so that they leave in order. */
static void write_now(ws_session_t *s)
{
    if (s->is_write_failed || s->is_close_pending || lws_partial_buffered(s->wsi)) {
        lws_callback_on_writable(s->wsi);
        return;
    }
    if (ws_session_writeable(s) != 0) {
        /* Only a callback's return closes a connection: the next WRITEABLE does. */
        s->is_write_failed = true;
        lws_callback_on_writable(s->wsi);
    }
}

void ws_flush_held_when_quiet(ws_t *ws)
{
    /* Over at least WS_BUSY_WINDOW_US: a short burst is no rate. */
    int64_t elapsed_us = clock_monotonic_us() - ws->last_flush_us;
    if (elapsed_us < WS_BUSY_WINDOW_US) {
        elapsed_us = WS_BUSY_WINDOW_US;
    }
    if ((int64_t)ws->items_since_flush * 1000000 < (int64_t)WS_BUSY_ITEMS_PER_S * elapsed_us) {
        ws_flush_held(ws);
    }
}

void ws_flush_held(ws_t *ws)
{
    ws->items_since_flush = 0;
    ws->last_flush_us = clock_monotonic_us();
    while (ws->coalescing != NULL) {
        ws_session_t *s = ws->coalescing;
        coalesce_remove(s);
        write_now(s);
    }
    if (ws->coalesce_context != NULL) {
        lws_sul_cancel(&ws->coalesce_timer);
        ws->coalesce_context = NULL;
    }
}

static void coalesce_timer_fired(lws_sorted_usec_list_t *sul)
{
    ws_t *ws = lws_container_of(sul, ws_t, coalesce_timer);
    ws->coalesce_context = NULL;
    ws_flush_held(ws);
}

/* A notification joined the queue: write now when enough are waiting, else hold it. */
static void request_notify_write(ws_session_t *s)
{
    ws_t *ws = s->ws;
    ws->items_since_flush++;
    if (s->queue_length >= WS_COALESCE_ITEMS) {
        coalesce_remove(s);
        write_now(s);
        return;
    }
    if (s->is_coalescing || s->queue_length > 1) {
        return; /* already held, or a write is already due: it takes this one too */
    }
    s->is_coalescing = true;
    s->coalesce_prev = NULL;
    s->coalesce_next = ws->coalescing;
    if (ws->coalescing != NULL) {
        ws->coalescing->coalesce_prev = s;
    }
    ws->coalescing = s;
    if (ws->coalesce_context == NULL) {
        ws->coalesce_context = lws_get_context(s->wsi);
        lws_sul_schedule(ws->coalesce_context, 0, &ws->coalesce_timer, coalesce_timer_fired,
                         WS_COALESCE_US);
    }
}

static void queue_notification(ws_session_t *s, notif_t *notif, const sub_t *sub, uint64_t cursor)
{
    if (s->is_overflowed || s->is_close_pending) {
        return;
    }
    if (s->queue_length >= WS_QUEUE_MAX_ENTRIES) {
        session_overflow(s);
        return;
    }
    struct out_entry *entry = queue_append(s);
    entry->notif = notif_ref_local(notif);
    subs_id_format(sub, entry->sub_id);
    subs_format_expiration(sub, entry->sub_expiration);
    if (sub->kind != SUB_CONNECTION && sub->rest->client_state_json != NULL) {
        entry->client_state_json = xstrdup(sub->rest->client_state_json);
    }
    entry->include_resource_data = sub->kind != SUB_CONNECTION && sub->rest->include_resource_data;
    entry->cursor = cursor;
    request_notify_write(s);
}

/* ---- answers ---- */

static json_t *ref_value(const char *ref)
{
    return ref != NULL ? json_string(ref) : json_null();
}

static void answer_error(ws_session_t *s, const char *ref, int code, const char *message)
{
    json_t *answer = json_pack("{s:s, s:o, s:{s:s, s:s}}", "op", "error", "ref", ref_value(ref),
                               "error", "code", herold_error_code(code), "message", message);
    queue_json(s, answer);
}

/* ---- resume ---- */

static void replay_list_add(ws_session_t *s)
{
    if (s->is_replay_listed) {
        return;
    }
    s->is_replay_listed = true;
    s->replay_prev = NULL;
    s->replay_next = s->ws->replaying;
    if (s->ws->replaying != NULL) {
        s->ws->replaying->replay_prev = s;
    }
    s->ws->replaying = s;
}

static void replay_list_remove(ws_session_t *s)
{
    if (!s->is_replay_listed) {
        return;
    }
    s->is_replay_listed = false;
    if (s->replay_prev != NULL) {
        s->replay_prev->replay_next = s->replay_next;
    } else {
        s->ws->replaying = s->replay_next;
    }
    if (s->replay_next != NULL) {
        s->replay_next->replay_prev = s->replay_prev;
    }
    s->replay_prev = NULL;
    s->replay_next = NULL;
}

/* Starts replaying the user's websocket: subscriptions after cursor (0: everything
 * retained). */
static void replay_begin(ws_session_t *s, uint64_t cursor)
{
    s->is_replaying = true;
    s->replay_from = cursor == 0 ? 0 : cursor + 1;
    /* Assigned: a resume from an earlier cursor than the session reached must not let the
     * frames of its replay claim more than they carry. */
    s->cursor_floor = cursor;
}

ws_session_t *ws_replay_first(ws_t *ws)
{
    return ws->replaying;
}

ws_session_t *ws_replay_next(const ws_session_t *s)
{
    return s->replay_next;
}

uint64_t ws_session_replay_from(const ws_session_t *s)
{
    return s->replay_from;
}

const auth_principal_t *ws_session_principal(const ws_session_t *s)
{
    return s->principal;
}

size_t ws_session_room(const ws_session_t *s)
{
    if (s->is_overflowed || s->is_close_pending || s->queue_length >= WS_QUEUE_MAX_ENTRIES) {
        return 0;
    }
    return WS_QUEUE_MAX_ENTRIES - s->queue_length;
}

void ws_session_replay_deliver(ws_session_t *s, notif_t *notif, const sub_t *sub)
{
    queue_notification(s, notif, sub, notif->seq > s->cursor_floor ? notif->seq : s->cursor_floor);
}

void ws_session_replay_missed(ws_session_t *s, uint64_t cursor)
{
    char frame[128];
    int len = snprintf(
        frame, sizeof(frame),
        "{\"op\":\"lifecycle\",\"lifecycleEvent\":\"missed\",\"cursor\":\"%" PRIu64 "\"}", cursor);
    queue_text(s, xstrndup(frame, (size_t)len), (size_t)len);
    if (cursor > s->cursor_floor) {
        s->cursor_floor = cursor;
    }
}

void ws_session_replay_advance(ws_session_t *s, uint64_t scanned_seq, bool is_at_end)
{
    /* Assigned, not raised: a cursor given from beyond the store's end comes back down. */
    s->cursor_floor = scanned_seq;
    if (scanned_seq + 1 > s->replay_from) {
        s->replay_from = scanned_seq + 1;
    }
    if (is_at_end) {
        s->is_replaying = false;
        s->replay_upto = scanned_seq;
        replay_list_remove(s);
        log_msg(LOG_LEVEL_DEBUG, "ws: session of %s resumed up to %" PRIu64, s->principal->user,
                scanned_seq);
    }
}

static void op_resume(ws_session_t *s, const wsop_t *op)
{
    const char *ref = op->ref;
    uint64_t cursor = op->cursor;
    if (!op->has_cursor) {
        if (s->user->cursor == 0) {
            answer_error(s, ref, HEROLD_E_NOT_FOUND,
                         "cursor: none given and none stored for this user");
            return;
        }
        cursor = s->user->cursor;
    }
    if (s->is_replaying) {
        answer_error(s, ref, HEROLD_E_CONFLICT, "cursor: a resume is already running");
        return;
    }
    char text[32];
    snprintf(text, sizeof(text), "%" PRIu64, cursor);
    queue_json(
        s, json_pack("{s:s, s:o, s:s}", "op", "resumed", "ref", ref_value(ref), "cursor", text));
    replay_begin(s, cursor);
    replay_list_add(s);
    lws_cancel_service(lws_get_context(s->wsi));
}

/* ---- ops ---- */

static void op_subscribe(ws_session_t *s, const wsop_t *op)
{
    struct herr err;
    const char *ref = op->ref;
    unsigned mask = op->change_mask;
    if (s->sub_count >= WS_MAX_SUBSCRIPTIONS_PER_CONNECTION) {
        char text[128];
        snprintf(text, sizeof(text), "subscriptions: at most %d per connection",
                 WS_MAX_SUBSCRIPTIONS_PER_CONNECTION);
        answer_error(s, ref, HEROLD_E_LIMIT, text);
        return;
    }

    int64_t retry_after_ms = 0;
    if (s->ws->limits.creations != NULL &&
        !ratelimit_take(s->ws->limits.creations, s->principal->user, clock_monotonic_ms(),
                        &retry_after_ms)) {
        char text[128];
        snprintf(text, sizeof(text),
                 "subscriptions: at most %d created per minute; retry in %lld s",
                 s->ws->limits.creations_per_minute, (long long)(retry_after_ms + 999) / 1000);
        answer_error(s, ref, HEROLD_E_LIMIT, text);
        return;
    }
    char *pattern = subs_expand_resource(op->resource, s->principal->user, false);
    sub_t *sub;
    int rc = subs_add(s->ws->subs, pattern, strlen(pattern), mask, s->principal, s, &sub, &err);
    free(pattern);
    if (rc != 0) {
        char text[HERR_MESSAGE_MAX + 16];
        snprintf(text, sizeof(text), "resource: %s", err.message);
        answer_error(s, ref, rc, text);
        return;
    }
    if (s->sub_count == s->sub_capacity) {
        s->sub_capacity = s->sub_capacity == 0 ? 4 : s->sub_capacity * 2;
        s->subs = xrealloc(s->subs, s->sub_capacity * sizeof(*s->subs));
    }
    s->subs[s->sub_count++] = sub;

    char types[32];
    char expiration[SUBS_EXPIRATION_BYTES + 1];
    event_change_mask_format(mask, types, sizeof(types));
    subs_format_expiration(sub, expiration);
    json_t *answer =
        json_pack("{s:s, s:o, s:s, s:s, s:s, s:s}", "op", "subscribed", "ref", ref_value(ref),
                  "subscriptionId", SUBS_ID_TEXT(sub), "resource", subs_resource(sub), "changeType",
                  types, "expirationDateTime", expiration);
    queue_json(s, answer);
}

/* A renewed token for the same user: the connection lives on under it, its subscriptions
 * checked against its groups from now on. */
static void op_auth(ws_session_t *s, const wsop_t *op)
{
    const char *ref = op->ref;
    struct herr err;
    auth_principal_t *principal = NULL;
    if (auth_token_verify(s->ws->auth, op->token, op->token_len, (int64_t)time(NULL), &principal,
                          &err) != 0) {
        log_msg(LOG_LEVEL_INFO, "ws: auth refused for %s: %s", s->principal->user, err.message);
        answer_error(s, ref, err.code, err.message);
        return;
    }
    if (strcmp(principal->user, s->principal->user) != 0) {
        auth_principal_free(principal);
        answer_error(s, ref, HEROLD_E_FORBIDDEN,
                     "token: for another user than the connection's; open a new connection");
        return;
    }
    bool is_shared;
    principal = principal_hold(s->user, principal, &is_shared);
    for (size_t i = 0; i < s->sub_count; i++) {
        subs_rebind_owner(s->ws->subs, s->subs[i], principal);
    }
    principal_release(s->user, s->principal, s->is_principal_shared);
    s->principal = principal;
    s->is_principal_shared = is_shared;
    s->is_reauthorization_sent = false;
    char expiration[SUBS_EXPIRATION_BYTES + 1];
    notif_format_graph_time(principal->expires_at, expiration, sizeof(expiration));
    queue_json(s, json_pack("{s:s, s:o, s:s}", "op", "authenticated", "ref", ref_value(ref),
                            "expirationDateTime", expiration));
}

static void op_unsubscribe(ws_session_t *s, const wsop_t *op)
{
    const char *ref = op->ref;
    for (size_t i = 0; i < s->sub_count; i++) {
        if (subs_id_is(s->subs[i], op->subscription_id)) {
            subs_remove(s->ws->subs, s->subs[i]);
            s->subs[i] = s->subs[--s->sub_count];
            json_t *answer = json_pack("{s:s, s:o, s:s}", "op", "unsubscribed", "ref",
                                       ref_value(ref), "subscriptionId", op->subscription_id);
            queue_json(s, answer);
            return;
        }
    }
    answer_error(s, ref, HEROLD_E_NOT_FOUND,
                 "subscriptionId: no subscription with this id on this connection");
}

static void handle_message(ws_session_t *s, const char *data, size_t len)
{
    double rate = s->ws->limits.ops_per_second;
    /* Bursts of twice the rate, and at least enough to subscribe a connection's worth at
     * once, as a client does when it (re)connects. */
    double burst = 2 * rate > WS_OPS_BURST_MIN ? 2 * rate : WS_OPS_BURST_MIN;
    if (rate > 0 && !rate_bucket_take(&s->ops, rate, burst, clock_monotonic_ms(), NULL)) {
        /* Refused before parsing: an op over the rate costs as little as possible. */
        char text[96];
        snprintf(text, sizeof(text), "ops: at most %g per second on a connection", rate);
        answer_error(s, NULL, HEROLD_E_LIMIT, text);
        return;
    }
    wsop_t op;
    struct herr err;
    if (wsop_parse(data, len, &op, &err) != 0) {
        answer_error(s, op.ref, err.code, err.message);
        wsop_clear(&op);
        return;
    }
    switch (op.kind) {
    case WSOP_SUBSCRIBE:
        op_subscribe(s, &op);
        break;
    case WSOP_UNSUBSCRIBE:
        op_unsubscribe(s, &op);
        break;
    case WSOP_PING:
        queue_json(s, json_pack("{s:s, s:o}", "op", "pong", "ref", ref_value(op.ref)));
        break;
    case WSOP_RESUME:
        op_resume(s, &op);
        break;
    case WSOP_AUTH:
        op_auth(s, &op);
        break;
    }
    wsop_clear(&op);
}

/* ---- session lifecycle ---- */

/* The value of the query argument name (which ends in '='), or NULL. The argument is
 * copied into buf, which the answer points into. Unlike lws_get_urlarg_by_name, which
 * gives up at the first argument longer than its buffer, this looks past arguments that
 * do not fit: a long access_token must not hide the since after it. */
static const char *query_arg(struct lws *wsi, const char *name, char *buf, int cap)
{
    size_t name_len = strlen(name);
    for (int i = 0;; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (len <= 0) {
            return NULL;
        }
        if (len < cap && lws_hdr_copy_fragment(wsi, buf, cap, WSI_TOKEN_HTTP_URI_ARGS, i) >= 0 &&
            strncmp(buf, name, name_len) == 0) {
            return buf + name_len;
        }
    }
}

/* The bearer token of an upgrade request: the Authorization header, else the
 * access_token query parameter. Returns its length, 0 when absent, -1 when unusable. */
static int request_token(struct lws *wsi, char *buf, int cap)
{
    int header_len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (header_len > 0) {
        if (header_len >= cap || lws_hdr_copy(wsi, buf, cap, WSI_TOKEN_HTTP_AUTHORIZATION) < 0) {
            return -1;
        }
        if (strncasecmp(buf, "Bearer ", 7) != 0) {
            return -1;
        }
        char *token = buf + 7;
        while (*token == ' ') {
            token++;
        }
        size_t len = strlen(token);
        while (len > 0 && token[len - 1] == ' ') {
            len--;
        }
        memmove(buf, token, len);
        buf[len] = '\0';
        return (int)len;
    }
    const char *value = query_arg(wsi, "access_token=", buf, cap);
    if (value == NULL) {
        return 0;
    }
    size_t len = strlen(value);
    memmove(buf, value, len + 1);
    return (int)len;
}

/* A browser names the page that opens a WebSocket in Origin; with allowed origins
 * configured, a page elsewhere may not use a user's token through it. Clients that are not
 * browsers send no Origin and are not concerned. */
static bool origin_is_allowed(const ws_t *ws, struct lws *wsi)
{
    if (ws->limits.allowed_origins == NULL) {
        return true;
    }
    char origin[256];
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (len <= 0) {
        return true;
    }
    if (len >= (int)sizeof(origin) ||
        lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0) {
        return false;
    }
    for (size_t i = 0; i < ws->limits.allowed_origin_count; i++) {
        if (strcasecmp(origin, ws->limits.allowed_origins[i]) == 0) {
            return true;
        }
    }
    return false;
}

ws_session_t *ws_handshake(ws_t *ws, struct lws *wsi, int *http_status)
{
    char token[AUTH_MAX_TOKEN_BYTES + 64];
    struct herr err;
    auth_principal_t *principal = NULL;

    if (!origin_is_allowed(ws, wsi)) {
        log_msg(LOG_LEVEL_INFO, "ws: handshake refused: Origin is not an allowed origin");
        *http_status = 403;
        return NULL;
    }

    int len = request_token(wsi, token, (int)sizeof(token));
    if (len <= 0) {
        log_msg(LOG_LEVEL_INFO, "ws: handshake refused: %s",
                len == 0 ? "no token" : "unusable Authorization header");
        *http_status = 401;
        return NULL;
    }
    if (auth_token_verify(ws->auth, token, (size_t)len, (int64_t)time(NULL), &principal, &err) !=
        0) {
        log_msg(LOG_LEVEL_INFO, "ws: handshake refused: %s", err.message);
        *http_status = herold_error_status(err.code);
        return NULL;
    }
    char since_arg[40];
    uint64_t since = 0;
    /* The buffer holds "since=<value>"; the answer points at the value. */
    const char *since_text = query_arg(wsi, "since=", since_arg, sizeof(since_arg));
    bool has_since = since_text != NULL;
    if (has_since && !notif_cursor_parse(since_text, strlen(since_text), &since)) {
        log_msg(LOG_LEVEL_INFO, "ws: handshake refused: since is not a cursor");
        auth_principal_free(principal);
        *http_status = 400;
        return NULL;
    }
    struct ws_user *user = user_get(ws, principal->user);
    if (ws->limits.max_connections_per_user > 0 &&
        user->session_count >= ws->limits.max_connections_per_user) {
        log_msg(LOG_LEVEL_INFO, "ws: handshake refused: %s has %d connections open",
                principal->user, user->session_count);
        auth_principal_free(principal);
        *http_status = 429;
        return NULL;
    }
    ws_session_t *s = xcalloc(1, sizeof(*s));
    s->ws = ws;
    s->wsi = wsi;
    s->principal = principal_hold(user, principal, &s->is_principal_shared);
    s->opened_at = (int64_t)time(NULL);
    s->user = user;
    user->session_count++;
    if (has_since) {
        /* Live websocket: items wait for the replay from now on; it starts at open. */
        replay_begin(s, since);
    }
    s->next = ws->sessions;
    if (ws->sessions != NULL) {
        ws->sessions->prev = s;
    }
    ws->sessions = s;
    ws->session_count++;
    return s;
}

void ws_session_open(ws_session_t *s)
{
    log_msg(LOG_LEVEL_DEBUG, "ws: session of %s open", s->principal->user);
    if (s->is_replaying) {
        replay_list_add(s);
        lws_cancel_service(lws_get_context(s->wsi));
    }
}

/* A message that arrives whole in one chunk is handled where libwebsockets holds it; a
 * longer one is gathered in a buffer of its own size, freed once handled. (A buffer of
 * WS_MAX_MESSAGE_BYTES kept from the first message on cost every connection that ever
 * sent an op 16 KiB.) */
int ws_session_receive(ws_session_t *s, const void *data, size_t len, bool is_final, bool is_binary)
{
    bool is_whole = is_final && s->rx_len == 0 && !s->is_rx_oversize;
    if (!s->is_rx_oversize && !is_whole) {
        if (s->rx_len + len > WS_MAX_MESSAGE_BYTES) {
            s->is_rx_oversize = true;
            free(s->rx);
            s->rx = NULL;
            s->rx_len = 0;
        } else {
            s->rx = xrealloc(s->rx, s->rx_len + len);
            memcpy(s->rx + s->rx_len, data, len);
            s->rx_len += len;
        }
    }
    if (!is_final) {
        return 0;
    }
    if (s->is_rx_oversize || (is_whole && len > WS_MAX_MESSAGE_BYTES)) {
        char text[96];
        snprintf(text, sizeof(text), "message: larger than the %d-byte limit",
                 WS_MAX_MESSAGE_BYTES);
        answer_error(s, NULL, HEROLD_E_TOO_LARGE, text);
    } else if (is_binary) {
        answer_error(s, NULL, HEROLD_E_BAD_REQUEST, "message: binary frames are not accepted");
    } else if (is_whole) {
        handle_message(s, data, len);
    } else {
        handle_message(s, s->rx, s->rx_len);
    }
    free(s->rx);
    s->rx = NULL;
    s->rx_len = 0;
    s->is_rx_oversize = false;
    return 0;
}

/* Writes one notify frame from the consecutive notification entries at the head. */
static int write_notify_batch(ws_session_t *s)
{
    size_t count = 0;
    size_t items_len = 0;
    while (count < s->queue_length && count < WS_BATCH_MAX_ITEMS) {
        struct out_entry *entry = queue_at(s, count);
        if (entry->notif == NULL) {
            break;
        }
        notif_item_head_t item_head = {entry->sub_id, entry->sub_expiration,
                                       entry->client_state_json, entry->include_resource_data};
        size_t item_len = notif_item_length(entry->notif, &item_head);
        if (count > 0 && items_len + item_len > WS_BATCH_MAX_BYTES) {
            break;
        }
        items_len += item_len;
        count++;
    }
    assert(count > 0);
    uint64_t cursor = queue_at(s, count - 1)->cursor;
    char head[64];
    int head_len = snprintf(head, sizeof(head),
                            "{\"op\":\"notify\",\"cursor\":\"%" PRIu64 "\",\"value\":[", cursor);
    size_t frame_len = (size_t)head_len + items_len + (count - 1) + 2;
    ws_t *ws = s->ws;
    if (ws->frame_capacity < LWS_PRE + frame_len) {
        /* Kept between frames: a fresh 256 KiB buffer each time came from mmap and was
         * faulted in page by page. */
        free(ws->frame);
        ws->frame_capacity = LWS_PRE + frame_len;
        ws->frame = xmalloc(ws->frame_capacity);
    }
    unsigned char *buf = ws->frame;
    char *p = (char *)buf + LWS_PRE;
    memcpy(p, head, (size_t)head_len);
    p += head_len;
    for (size_t i = 0; i < count; i++) {
        struct out_entry *entry = queue_at(s, i);
        if (i > 0) {
            *p++ = ',';
        }
        notif_item_head_t item_head = {entry->sub_id, entry->sub_expiration,
                                       entry->client_state_json, entry->include_resource_data};
        p += notif_item_write(entry->notif, &item_head, p);
    }
    *p++ = ']';
    *p++ = '}';
    assert((size_t)(p - (char *)buf - LWS_PRE) == frame_len);
    int written = lws_write(s->wsi, buf + LWS_PRE, frame_len, LWS_WRITE_TEXT);
    if (written < (int)frame_len) {
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        queue_pop(s);
    }
    s->last_sent_seq = cursor;
    if (cursor > s->user->cursor) {
        s->user->cursor = cursor;
        s->user->is_dirty = true;
    }
    return 0;
}

int ws_session_writeable(ws_session_t *s)
{
    if (s->is_write_failed) {
        return -1;
    }
    if (s->is_close_pending) {
        lws_close_reason(s->wsi, s->close_status, (unsigned char *)s->close_reason,
                         strlen(s->close_reason));
        return -1;
    }
    if (s->queue_length == 0) {
        return 0;
    }
    struct out_entry *head = queue_at(s, 0);
    if (head->notif != NULL) {
        if (write_notify_batch(s) != 0) {
            return -1;
        }
    } else {
        unsigned char *buf = xmalloc(LWS_PRE + head->text_len);
        memcpy(buf + LWS_PRE, head->text, head->text_len);
        int written = lws_write(s->wsi, buf + LWS_PRE, head->text_len, LWS_WRITE_TEXT);
        free(buf);
        if (written < (int)head->text_len) {
            return -1;
        }
        queue_pop(s);
        if (s->is_overflowed && s->queue_length == 0) {
            /* The missed frame is out (or buffered by lws, which flushes before the next
             * WRITEABLE): close at the next one. */
            s->is_close_pending = true;
            s->close_status = LWS_CLOSE_STATUS_POLICY_VIOLATION;
            s->close_reason = "queue overflow";
        }
    }
    if (s->queue_length > 0 || s->is_close_pending) {
        lws_callback_on_writable(s->wsi);
    }
    queue_release_if_idle(s);
    if (s->is_replay_listed && s->queue_length < WS_QUEUE_MAX_ENTRIES / 2) {
        /* Room for the next chunk: bring the loop round to dispatch_replay. */
        lws_cancel_service(lws_get_context(s->wsi));
    }
    return 0;
}

void ws_session_closed(ws_session_t *s)
{
    ws_t *ws = s->ws;
    for (size_t i = 0; i < s->sub_count; i++) {
        subs_remove(ws->subs, s->subs[i]);
    }
    queue_clear(s);
    replay_list_remove(s);
    coalesce_remove(s);
    if (ws->coalescing == NULL && ws->coalesce_context != NULL) {
        lws_sul_cancel(&ws->coalesce_timer);
        ws->coalesce_context = NULL;
    }
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        ws->sessions = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    ws->session_count--;
    s->user->session_count--;
    log_msg(LOG_LEVEL_DEBUG, "ws: session of %s closed", s->principal->user);
    principal_release(s->user, s->principal, s->is_principal_shared);
    free(s->subs);
    free(s->queue);
    free(s->rx);
    free(s);
}

/* ---- delivery ---- */

void ws_session_deliver(ws_session_t *session, notif_t *notif, const sub_t *sub)
{
    /* While replaying, the cursor stays where the replay stands: a client resuming from it
     * must not skip what the replay has not sent yet. */
    uint64_t cursor = session->cursor_floor;
    if (!session->is_replaying && notif->seq > cursor) {
        cursor = notif->seq;
    }
    queue_notification(session, notif, sub, cursor);
}

void ws_deliver_to_user(ws_t *ws, const char *user, notif_t *notif, const sub_t *sub)
{
    for (ws_session_t *s = ws->sessions; s != NULL; s = s->next) {
        /* A replaying session gets these from the store, up to replay_upto. */
        if (!s->is_replaying && notif->seq > s->replay_upto &&
            strcmp(s->principal->user, user) == 0) {
            queue_notification(s, notif, sub,
                               notif->seq > s->cursor_floor ? notif->seq : s->cursor_floor);
        }
    }
}

void ws_lifecycle_to_user(ws_t *ws, const char *user, const char *lifecycle_event,
                          const char *subscription_id)
{
    for (ws_session_t *s = ws->sessions; s != NULL; s = s->next) {
        if (strcmp(s->principal->user, user) == 0) {
            queue_json(s, json_pack("{s:s, s:s, s:s}", "op", "lifecycle", "lifecycleEvent",
                                    lifecycle_event, "subscriptionId", subscription_id));
        }
    }
}

void ws_sweep(ws_t *ws, int64_t now, int64_t reauthorization_lead)
{
    if (ws->limits.creations != NULL) {
        ratelimit_sweep(ws->limits.creations, clock_monotonic_ms());
    }
    for (ws_session_t *s = ws->sessions; s != NULL; s = s->next) {
        int64_t expires_at = s->principal->expires_at;
        if (s->is_close_pending) {
            continue;
        }
        if (now >= expires_at) {
            log_msg(LOG_LEVEL_INFO, "ws: the token of %s expired: connection closed",
                    s->principal->user);
            s->is_close_pending = true;
            s->close_status = LWS_CLOSE_STATUS_POLICY_VIOLATION;
            s->close_reason = "token expired";
            lws_callback_on_writable(s->wsi);
            continue;
        }
        /* A token shorter-lived than twice the lead is asked for half-way through. */
        int64_t lead = reauthorization_lead;
        if ((expires_at - s->opened_at) / 2 < lead) {
            lead = (expires_at - s->opened_at) / 2;
        }
        if (!s->is_reauthorization_sent && now >= expires_at - lead) {
            s->is_reauthorization_sent = true;
            char expiration[SUBS_EXPIRATION_BYTES + 1];
            notif_format_graph_time(expires_at, expiration, sizeof(expiration));
            queue_json(s, json_pack("{s:s, s:s, s:s}", "op", "lifecycle", "lifecycleEvent",
                                    "reauthorizationRequired", "expirationDateTime", expiration));
        }
    }
}

void ws_close_all(ws_t *ws)
{
    for (ws_session_t *s = ws->sessions; s != NULL; s = s->next) {
        if (!s->is_close_pending) {
            s->is_close_pending = true;
            s->close_status = LWS_CLOSE_STATUS_GOINGAWAY;
            s->close_reason = "shutting down";
        }
        lws_callback_on_writable(s->wsi);
    }
}

size_t ws_session_count(const ws_t *ws)
{
    return ws->session_count;
}
