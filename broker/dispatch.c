#include "dispatch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "event.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "notif.h"

/* A webhook subscription waiting for its next chunk from the store. */
struct want {
    struct want *next;
    char subscription_id[SUBS_ID_BYTES + 1];
    uint64_t after; /* the target has taken every item up to this seq */
};

struct dispatch {
    subs_t *subs;
    ws_t *ws;
    webhook_t *webhook;
    store_t *store;
    store_writer_t *writer;
    chan_t *events;
    uint64_t dispatched_seq; /* the last event handed out */
    struct want *wants;      /* FIFO */
    struct want *wants_tail;
    int64_t replay_paused_until_ms; /* after the store said it is unavailable */
    sub_t **user_subs;              /* scratch: the websocket: subscriptions of a resuming user */
    size_t user_subs_capacity;
    bool is_unavailable_logged;
};

struct match_ctx {
    dispatch_t *dispatch;
    const event_t *event;
    notif_t *notif; /* encoded on the first match */
};

dispatch_t *dispatch_new(subs_t *subs, ws_t *ws, webhook_t *webhook, store_t *store,
                         store_writer_t *writer, chan_t *events)
{
    dispatch_t *dispatch = xcalloc(1, sizeof(*dispatch));
    dispatch->store = store;
    dispatch->writer = writer;
    dispatch->subs = subs;
    dispatch->ws = ws;
    dispatch->webhook = webhook;
    dispatch->events = events;
    dispatch->dispatched_seq = store_event_last_seq(store);
    return dispatch;
}

void dispatch_free(dispatch_t *dispatch)
{
    if (dispatch == NULL) {
        return;
    }
    while (dispatch->wants != NULL) {
        struct want *next = dispatch->wants->next;
        free(dispatch->wants);
        dispatch->wants = next;
    }
    free(dispatch->user_subs);
    free(dispatch);
}

static bool deliver(sub_t *sub, void *opaque)
{
    struct match_ctx *ctx = opaque;
    if (ctx->notif == NULL) {
        ctx->notif = notif_new_local(ctx->event);
    }
    switch (sub->kind) {
    case SUB_CONNECTION:
        ws_session_deliver(sub->channel, ctx->notif, sub);
        break;
    case SUB_WEBSOCKET:
        ws_deliver_to_user(ctx->dispatch->ws, sub->owner->user, ctx->notif, sub);
        break;
    case SUB_WEBHOOK: {
        if (sub->rest->is_replaying || ctx->event->seq <= sub->rest->replay_upto) {
            break; /* the replay from the store carries it */
        }
        webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_NOTIFY);
        subs_id_format(sub, command->spec.subscription_id);
        command->notif = notif_ref(ctx->notif);
        webhook_send(ctx->dispatch->webhook, &command);
        break;
    }
    }
    return true;
}

bool dispatch_pending(dispatch_t *dispatch)
{
    void *items[DISPATCH_EVENTS_PER_TURN];
    size_t count = chan_drain(dispatch->events, items, DISPATCH_EVENTS_PER_TURN);
    /* The turn's events in one match: the index's memory for the next few is fetched while
     * one is matched (subs_match_events). */
    const event_t *events[DISPATCH_EVENTS_PER_TURN];
    struct match_ctx ctxs[DISPATCH_EVENTS_PER_TURN];
    void *ctx_of[DISPATCH_EVENTS_PER_TURN];
    for (size_t i = 0; i < count; i++) {
        events[i] = items[i];
        ctxs[i] = (struct match_ctx){.dispatch = dispatch, .event = events[i]};
        ctx_of[i] = &ctxs[i];
    }
    subs_match_events(dispatch->subs, events, count, deliver, ctx_of);
    for (size_t i = 0; i < count; i++) {
        const event_t *event = events[i];
        if (event->seq > dispatch->dispatched_seq) {
            dispatch->dispatched_seq = event->seq;
        }
        notif_release_local(ctxs[i].notif);
    }
    /* Back to ingest, which allocated them, to be freed there (chan.h). */
    for (size_t i = chan_give_back(dispatch->events, items, count); i < count; i++) {
        event_free(items[i]);
    }
    if (count == DISPATCH_EVENTS_PER_TURN) {
        return true;
    }
    subs_maintain(dispatch->subs, DISPATCH_DRY_MOVE_SLOTS);
    return false;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

/* The parts of a webhook command that describe the subscription. */
static void fill_spec(webhook_target_spec_t *spec, const sub_t *sub)
{
    subs_id_format(sub, spec->subscription_id);
    subs_format_expiration(sub, spec->expiration);
    memcpy(spec->secret, sub->rest->secret, sizeof(spec->secret));
    spec->notification_url =
        sub->kind == SUB_WEBHOOK ? dup_or_null(sub->rest->notification_url) : NULL;
    spec->lifecycle_url = dup_or_null(sub->rest->lifecycle_url);
    spec->client_state_json = dup_or_null(sub->rest->client_state_json);
    spec->include_resource_data = sub->rest->include_resource_data;
    spec->position = sub->rest->cursor;
    spec->is_behind = sub->rest->is_replaying;
}

void dispatch_webhook_target_put(dispatch_t *dispatch, const sub_t *sub)
{
    webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_TARGET_PUT);
    fill_spec(&command->spec, sub);
    webhook_send(dispatch->webhook, &command);
}

void dispatch_lifecycle(dispatch_t *dispatch, const sub_t *sub, const char *lifecycle_event)
{
    if (sub->kind == SUB_WEBSOCKET) {
        ws_lifecycle_to_user(dispatch->ws, sub->owner->user, lifecycle_event, SUBS_ID_TEXT(sub));
    }
    if (sub->rest->lifecycle_url != NULL) {
        webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_LIFECYCLE);
        fill_spec(&command->spec, sub);
        command->lifecycle_event = lifecycle_event;
        webhook_send(dispatch->webhook, &command);
    }
}

uint64_t dispatch_dispatched_seq(const dispatch_t *dispatch)
{
    return dispatch->dispatched_seq;
}

void dispatch_restore_targets(dispatch_t *dispatch)
{
    uint64_t last = store_event_last_seq(dispatch->store);
    size_t behind = 0;
    for (sub_t *sub = subs_first_persistent(dispatch->subs); sub != NULL;
         sub = subs_next_persistent(sub)) {
        if (sub->kind == SUB_WEBHOOK) {
            sub->rest->is_replaying = sub->rest->cursor < last;
            behind += sub->rest->is_replaying;
            dispatch_webhook_target_put(dispatch, sub);
        }
    }
    if (behind > 0) {
        log_msg(LOG_LEVEL_INFO, "dispatch: %zu webhook subscriptions catch up from their cursors",
                behind);
    }
}

void dispatch_restore_cursor(subs_t *subs, ws_t *ws, const char *key, uint64_t seq)
{
    if (strncmp(key, "user:", 5) == 0) {
        ws_cursor_restore(ws, key + 5, seq);
        return;
    }
    sub_t *sub = subs_find(subs, key);
    if (sub != NULL && seq > sub->rest->cursor) {
        sub->rest->cursor = seq;
    }
}

void dispatch_forget_subscription(dispatch_t *dispatch, sub_t *sub)
{
    for (struct want *w = dispatch->wants; w != NULL; w = w->next) {
        if (subs_id_is(sub, w->subscription_id)) {
            w->subscription_id[0] = '\0'; /* skipped when its turn comes */
        }
    }
    if (sub->kind == SUB_WEBHOOK) {
        webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_TARGET_REMOVE);
        subs_id_format(sub, command->spec.subscription_id);
        webhook_send(dispatch->webhook, &command);
    }
    subs_remove(dispatch->subs, sub);
}

void dispatch_remove_subscription(dispatch_t *dispatch, sub_t *sub)
{
    if (sub->kind != SUB_CONNECTION) {
        if (store_writer_has_room(dispatch->writer)) {
            store_write_t *write = store_write_new(STORE_WRITE_DELETE);
            write->id = xstrdup(SUBS_ID_TEXT(sub));
            store_writer_send(dispatch->writer, &write);
        } else {
            log_msg(LOG_LEVEL_WARN,
                    "dispatch: subscription %s stays in the store: too many writes under way",
                    SUBS_ID_TEXT(sub));
        }
    }
    dispatch_forget_subscription(dispatch, sub);
}

void dispatch_store_written(dispatch_t *dispatch, const store_write_t *write)
{
    if (write->rc == 0) {
        return;
    }
    switch (write->kind) {
    case STORE_WRITE_DELETE:
        /* Back after a restart, where it expires or is removed again. */
        log_msg(LOG_LEVEL_WARN, "dispatch: subscription %s stays in the store: %s", write->id,
                write->err.message);
        break;
    case STORE_WRITE_CURSORS:
        log_msg(LOG_LEVEL_WARN, "dispatch: cursors not stored: %s", write->err.message);
        for (size_t i = 0; i < write->cursor_count; i++) {
            /* Stored with the next ones; a user's key finds no subscription. */
            sub_t *sub = subs_find(dispatch->subs, write->cursors[i].key);
            if (sub != NULL && !sub->rest->is_deleting) {
                subs_cursor_moved(dispatch->subs, sub);
            }
        }
        break;
    case STORE_WRITE_PUT:
        break; /* dispatch sends none: documents are rest's */
    }
}

/* ---- cursors ---- */

void dispatch_webhook_positions(dispatch_t *dispatch, const webhook_result_t *result)
{
    for (size_t i = 0; i < result->position_count; i++) {
        const webhook_position_t *position = &result->positions[i];
        sub_t *sub = subs_find(dispatch->subs, position->subscription_id);
        if (sub != NULL && sub->kind == SUB_WEBHOOK && position->seq > sub->rest->cursor) {
            sub->rest->cursor = position->seq;
            subs_cursor_moved(dispatch->subs, sub);
        }
    }
}

static void add_user_cursor(const char *user, uint64_t seq, void *ctx)
{
    char key[STORE_MAX_KEY_BYTES + 1];
    /* Keys are at most STORE_MAX_KEY_BYTES; a longer user id is not stored. */
    if ((size_t)snprintf(key, sizeof(key), "user:%s", user) < sizeof(key)) {
        store_write_add_cursor(ctx, key, seq);
    }
}

/* Sends every cursor that moved to the store in one write; with sync false the write does
 * not wait for the disk (store_cursors_note). A cursor stored a little late only means a
 * few deliveries repeat after a crash (at least once). Without room for the write, the
 * cursors wait for the next flush. */
static void cursors_flush(dispatch_t *dispatch, bool sync)
{
    if (!store_writer_has_room(dispatch->writer)) {
        return;
    }
    store_write_t *write = store_write_new(STORE_WRITE_CURSORS);
    write->is_sync = sync;
    size_t moved_count;
    sub_t **moved = subs_take_moved_cursors(dispatch->subs, &moved_count);
    for (size_t i = 0; i < moved_count; i++) {
        /* A subscription whose delete is under way keeps no cursor: the delete removed it
         * from the store, or comes back with the cursor marked again. */
        if (!moved[i]->rest->is_deleting) {
            store_write_add_cursor(write, SUBS_ID_TEXT(moved[i]), moved[i]->rest->cursor);
        }
    }
    free(moved);
    ws_cursors_take_dirty(dispatch->ws, add_user_cursor, write);
    if (write->cursor_count == 0) {
        store_write_free(write);
        return;
    }
    store_writer_send(dispatch->writer, &write);
}

/* ---- replays ---- */

void dispatch_webhook_want(dispatch_t *dispatch, const char *subscription_id, uint64_t after)
{
    sub_t *sub = subs_find(dispatch->subs, subscription_id);
    if (sub == NULL || sub->kind != SUB_WEBHOOK) {
        return;
    }
    sub->rest->is_replaying = true;
    struct want *w = xcalloc(1, sizeof(*w));
    subs_id_format(sub, w->subscription_id);
    w->after = after;
    if (dispatch->wants_tail != NULL) {
        dispatch->wants_tail->next = w;
    } else {
        dispatch->wants = w;
    }
    dispatch->wants_tail = w;
}

/* One chunk of a replay: the records read, the items made for the subscriptions. */
struct chunk {
    sub_t **subs;           /* the subscriptions replayed */
    const path_t *patterns; /* their patterns, parsed once per chunk */
    size_t sub_count;
    notif_t **notifs; /* webhook: collected; sessions: delivered at once */
    const sub_t **notif_subs;
    size_t count;
    size_t max_items;
    ws_session_t *session; /* NULL for a webhook chunk */
    uint64_t scanned;
    event_decoder_t *decoder; /* one unpacking zone for the chunk's records (chunk_read) */
};

static bool chunk_record(const journal_record_t *record, void *opaque)
{
    struct chunk *chunk = opaque;
    /* One record always goes, even when its items alone could pass the bound (a user with
     * more websocket: subscriptions than a session's queue holds then overflows it and is
     * told `missed`, rather than a replay that never moves). */
    if (chunk->count > 0 && chunk->count + chunk->sub_count > chunk->max_items) {
        return false; /* this record is read again by the next chunk */
    }
    event_t *event = NULL;
    /* Every stored event was validated on its way in; one that no longer decodes (a newer
     * format) concerns nobody here. */
    if (event_decode_with(chunk->decoder, record->payload, record->len, &event, NULL) == 0) {
        event->seq = record->seq;
        notif_t *notif = NULL;
        for (size_t i = 0; i < chunk->sub_count; i++) {
            if (!subs_sub_concerns_parsed(chunk->subs[i], &chunk->patterns[i], event)) {
                continue;
            }
            if (notif == NULL) {
                notif = notif_new_local(event);
            }
            if (chunk->session != NULL) {
                ws_session_replay_deliver(chunk->session, notif, chunk->subs[i]);
            } else {
                chunk->notifs[chunk->count] = notif_ref(notif);
            }
            chunk->count++;
        }
        notif_release_local(notif);
        event_recycle(chunk->decoder, event);
    }
    chunk->scanned = record->seq;
    return true;
}

/* Reads one chunk from from_seq (0: the first retained). Returns 0 with chunk->scanned and
 * *is_at_end set, HEROLD_E_NOT_FOUND when from_seq is no longer retained, or
 * HEROLD_E_UNAVAILABLE. */
static int chunk_read(dispatch_t *dispatch, uint64_t from_seq, struct chunk *chunk, bool *is_at_end)
{
    struct herr err;
    uint64_t last = store_event_last_seq(dispatch->store);
    chunk->scanned = from_seq > 0 ? from_seq - 1 : 0;
    chunk->decoder = event_decoder_new();
    int rc = store_event_read(dispatch->store, from_seq, DISPATCH_REPLAY_RECORDS, chunk_record,
                              chunk, &err);
    event_decoder_free(chunk->decoder);
    chunk->decoder = NULL;
    if (rc == HEROLD_E_NOT_FOUND) {
        return rc;
    }
    if (rc != 0) {
        if (!dispatch->is_unavailable_logged) {
            dispatch->is_unavailable_logged = true;
            log_msg(LOG_LEVEL_WARN, "dispatch: replays wait: %s", err.message);
        }
        return HEROLD_E_UNAVAILABLE;
    }
    dispatch->is_unavailable_logged = false;
    if ((from_seq == 0 && chunk->scanned == 0) || chunk->scanned > last) {
        chunk->scanned = last; /* nothing retained, or a cursor from beyond the end */
    }
    /* Everything committed before the read began was read: events dispatched so far are
     * covered, later ones are live. */
    *is_at_end = chunk->scanned >= last;
    return 0;
}

/* Serves the oldest want. Returns false when the store is unavailable. */
static bool serve_want(dispatch_t *dispatch)
{
    struct want *w = dispatch->wants;
    sub_t *sub =
        w->subscription_id[0] != '\0' ? subs_find(dispatch->subs, w->subscription_id) : NULL;
    if (sub != NULL && sub->kind == SUB_WEBHOOK) {
        notif_t *notifs[DISPATCH_REPLAY_ITEMS];
        path_t pattern;
        subs_sub_pattern(sub, &pattern);
        struct chunk chunk = {.subs = &sub,
                              .patterns = &pattern,
                              .sub_count = 1,
                              .notifs = notifs,
                              .max_items = DISPATCH_REPLAY_ITEMS};
        bool is_at_end = false;
        int rc = chunk_read(dispatch, w->after + 1, &chunk, &is_at_end);
        if (rc == HEROLD_E_NOT_FOUND) {
            log_msg(LOG_LEVEL_WARN,
                    "dispatch: subscription %s: events after %" PRIu64 " are past retention",
                    SUBS_ID_TEXT(sub), w->after);
            dispatch_lifecycle(dispatch, sub, "missed");
            rc = chunk_read(dispatch, 0, &chunk, &is_at_end);
        }
        if (rc != 0) {
            for (size_t i = 0; i < chunk.count; i++) {
                notif_release(notifs[i]);
            }
            return false;
        }
        webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_REPLAY);
        subs_id_format(sub, command->spec.subscription_id);
        if (chunk.count > 0) {
            command->notifs = xmalloc(chunk.count * sizeof(*command->notifs));
            memcpy(command->notifs, notifs, chunk.count * sizeof(*command->notifs));
        }
        command->notif_count = chunk.count;
        command->scanned_seq = chunk.scanned;
        command->is_at_end = is_at_end;
        if (is_at_end) {
            sub->rest->is_replaying = false;
            sub->rest->replay_upto = chunk.scanned;
        }
        webhook_send(dispatch->webhook, &command);
    }
    dispatch->wants = w->next;
    if (dispatch->wants == NULL) {
        dispatch->wants_tail = NULL;
    }
    free(w);
    return true;
}

/* One chunk for a replaying session, if its queue has room. Returns false when the store
 * is unavailable. */
static bool serve_session(dispatch_t *dispatch, ws_session_t *session)
{
    size_t room = ws_session_room(session);
    if (room < WS_QUEUE_MAX_ENTRIES / 2) {
        return true; /* it comes back when the client has read */
    }
    const char *user = ws_session_principal(session)->user;
    size_t count = 0;
    for (sub_t *sub = subs_first_owned(dispatch->subs, user); sub != NULL;
         sub = subs_next_owned(sub)) {
        if (sub->kind == SUB_WEBSOCKET) {
            if (count == dispatch->user_subs_capacity) {
                dispatch->user_subs_capacity = count == 0 ? 16 : count * 2;
                dispatch->user_subs =
                    xrealloc(dispatch->user_subs,
                             dispatch->user_subs_capacity * sizeof(*dispatch->user_subs));
            }
            dispatch->user_subs[count++] = sub;
        }
    }
    sub_t **subs = dispatch->user_subs;
    path_t *patterns = xmalloc((count > 0 ? count : 1) * sizeof(*patterns));
    for (size_t i = 0; i < count; i++) {
        subs_sub_pattern(subs[i], &patterns[i]);
    }
    struct chunk chunk = {.subs = subs,
                          .patterns = patterns,
                          .sub_count = count,
                          .session = session,
                          .max_items = room - 64};
    bool is_at_end = false;
    uint64_t from = ws_session_replay_from(session);
    int rc = chunk_read(dispatch, from, &chunk, &is_at_end);
    if (rc == HEROLD_E_NOT_FOUND) {
        uint64_t first = store_event_first_seq(dispatch->store);
        ws_session_replay_missed(session, first > 0 ? first - 1 : 0);
        rc = chunk_read(dispatch, 0, &chunk, &is_at_end);
    }
    free(patterns);
    if (rc != 0) {
        return false;
    }
    ws_session_replay_advance(session, chunk.scanned, is_at_end);
    return true;
}

int dispatch_page_read(dispatch_t *dispatch, sub_t *sub, uint64_t since, size_t top,
                       dispatch_page_t *page, struct herr *err)
{
    memset(page, 0, sizeof(*page));
    page->notifs = xmalloc(top * sizeof(*page->notifs));
    path_t pattern;
    subs_sub_pattern(sub, &pattern);
    struct chunk chunk = {.subs = &sub,
                          .patterns = &pattern,
                          .sub_count = 1,
                          .notifs = page->notifs,
                          .max_items = top};
    bool is_at_end = false;
    /* since=0 asks for everything retained, as on the WebSocket: nothing was missed. */
    int rc = chunk_read(dispatch, since == 0 ? 0 : since + 1, &chunk, &is_at_end);
    if (rc == HEROLD_E_NOT_FOUND) {
        page->is_missed = true;
        rc = chunk_read(dispatch, 0, &chunk, &is_at_end);
    }
    page->count = chunk.count;
    if (rc != 0) {
        dispatch_page_clear(page);
        return herr_set(err, HEROLD_E_UNAVAILABLE, "the store is unavailable; try again later");
    }
    page->cursor = chunk.scanned;
    page->has_more = !is_at_end;
    return 0;
}

void dispatch_page_clear(dispatch_page_t *page)
{
    for (size_t i = 0; i < page->count; i++) {
        notif_release(page->notifs[i]);
    }
    free(page->notifs);
    memset(page, 0, sizeof(*page));
}

bool dispatch_replay(dispatch_t *dispatch)
{
    int64_t now_ms = clock_monotonic_ms();
    if (now_ms < dispatch->replay_paused_until_ms) {
        return false;
    }
    int budget = DISPATCH_REPLAY_CHUNKS_PER_TURN;
    while (dispatch->wants != NULL && budget > 0) {
        if (!serve_want(dispatch)) {
            dispatch->replay_paused_until_ms = now_ms + DISPATCH_REPLAY_RETRY_MS;
            return false;
        }
        budget--;
    }
    ws_session_t *next;
    for (ws_session_t *session = ws_replay_first(dispatch->ws); session != NULL && budget > 0;
         session = next) {
        next = ws_replay_next(session); /* the session may leave the list */
        if (!serve_session(dispatch, session)) {
            dispatch->replay_paused_until_ms = now_ms + DISPATCH_REPLAY_RETRY_MS;
            return false;
        }
        budget--;
    }
    return dispatch->wants != NULL || budget == 0;
}

void dispatch_mark(dispatch_t *dispatch)
{
    webhook_command_t *mark = webhook_command_new(WEBHOOK_CMD_MARK);
    mark->mark_seq = dispatch->dispatched_seq;
    webhook_send(dispatch->webhook, &mark);
}

void dispatch_flush_cursors(dispatch_t *dispatch)
{
    cursors_flush(dispatch, true);
}

void dispatch_sweep(dispatch_t *dispatch, int64_t now, int64_t reauthorization_lead)
{
    dispatch_mark(dispatch);
    cursors_flush(dispatch, false);
    subs_maintain(dispatch->subs, DISPATCH_SWEEP_MOVE_SLOTS);

    /* Only those whose expiration or notice is due: subs keeps them by expiration. */
    size_t due_count;
    sub_t **due = subs_expiring_by(dispatch->subs, now + reauthorization_lead, &due_count);
    for (size_t i = 0; i < due_count; i++) {
        sub_t *sub = due[i];
        if (now >= subs_expires_at(sub)) {
            if (!store_writer_has_room(dispatch->writer)) {
                continue; /* due again at the next sweep */
            }
            log_msg(LOG_LEVEL_INFO, "dispatch: subscription %s of %s expired", SUBS_ID_TEXT(sub),
                    sub->owner->user);
            dispatch_lifecycle(dispatch, sub, "subscriptionRemoved");
            dispatch_remove_subscription(dispatch, sub);
        } else if (!sub->rest->is_reauthorization_sent &&
                   now >= subs_expires_at(sub) - reauthorization_lead) {
            sub->rest->is_reauthorization_sent = true;
            dispatch_lifecycle(dispatch, sub, "reauthorizationRequired");
        }
    }
    free(due);
}
