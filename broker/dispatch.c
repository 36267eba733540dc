#include "dispatch.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "event.h"
#include "log.h"
#include "mem.h"
#include "notif.h"

struct dispatch {
    subs_t *subs;
    ws_t *ws;
    webhook_t *webhook;
    store_t *store;
    chan_t *events;
};

struct match_ctx {
    dispatch_t *dispatch;
    const event_t *event;
    notif_t *notif; /* encoded on the first match */
};

dispatch_t *dispatch_new(subs_t *subs, ws_t *ws, webhook_t *webhook, store_t *store, chan_t *events)
{
    dispatch_t *dispatch = xcalloc(1, sizeof(*dispatch));
    dispatch->store = store;
    dispatch->subs = subs;
    dispatch->ws = ws;
    dispatch->webhook = webhook;
    dispatch->events = events;
    return dispatch;
}

void dispatch_free(dispatch_t *dispatch)
{
    free(dispatch);
}

static bool deliver(sub_t *sub, void *opaque)
{
    struct match_ctx *ctx = opaque;
    if (ctx->notif == NULL) {
        ctx->notif = notif_new(ctx->event);
    }
    switch (sub->kind) {
    case SUB_CONNECTION:
        ws_session_deliver(sub->channel, ctx->notif, sub);
        break;
    case SUB_WEBSOCKET:
        ws_deliver_to_user(ctx->dispatch->ws, sub->owner->user, ctx->notif, sub);
        break;
    case SUB_WEBHOOK: {
        webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_NOTIFY);
        memcpy(command->spec.subscription_id, sub->id, sizeof(command->spec.subscription_id));
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
    for (size_t i = 0; i < count; i++) {
        event_t *event = items[i];
        struct match_ctx ctx = {.dispatch = dispatch, .event = event};
        subs_match_event(dispatch->subs, event, deliver, &ctx);
        notif_release(ctx.notif);
        event_free(event);
    }
    return count == DISPATCH_EVENTS_PER_TURN;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

/* The parts of a webhook command that describe the subscription. */
static void fill_spec(webhook_target_spec_t *spec, const sub_t *sub)
{
    memcpy(spec->subscription_id, sub->id, sizeof(spec->subscription_id));
    memcpy(spec->expiration, sub->expiration, sizeof(spec->expiration));
    memcpy(spec->secret, sub->rest.secret, sizeof(spec->secret));
    spec->notification_url =
        sub->kind == SUB_WEBHOOK ? dup_or_null(sub->rest.notification_url) : NULL;
    spec->lifecycle_url = dup_or_null(sub->rest.lifecycle_url);
    spec->client_state_json = dup_or_null(sub->rest.client_state_json);
    spec->include_resource_data = sub->rest.include_resource_data;
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
        ws_lifecycle_to_user(dispatch->ws, sub->owner->user, lifecycle_event, sub->id);
    }
    if (sub->rest.lifecycle_url != NULL) {
        webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_LIFECYCLE);
        fill_spec(&command->spec, sub);
        command->lifecycle_event = lifecycle_event;
        webhook_send(dispatch->webhook, &command);
    }
}

static void store_failed(const struct herr *err)
{
    log_msg(LOG_LEVEL_ERROR, "dispatch: %s; stopping", err->message);
    _exit(EXIT_FAILURE);
}

void dispatch_persist(dispatch_t *dispatch, const sub_t *sub)
{
    struct herr err;
    char *doc = subs_to_json(sub);
    if (store_subscription_put(dispatch->store, sub->id, doc, &err) != 0) {
        store_failed(&err);
    }
    free(doc);
}

void dispatch_restore_targets(dispatch_t *dispatch)
{
    for (sub_t *sub = subs_first_persistent(dispatch->subs); sub != NULL;
         sub = subs_next_persistent(sub)) {
        if (sub->kind == SUB_WEBHOOK) {
            dispatch_webhook_target_put(dispatch, sub);
        }
    }
}

void dispatch_remove_subscription(dispatch_t *dispatch, sub_t *sub)
{
    struct herr err;
    if (sub->kind != SUB_CONNECTION &&
        store_subscription_delete(dispatch->store, sub->id, &err) != 0) {
        store_failed(&err);
    }
    if (sub->kind == SUB_WEBHOOK) {
        webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_TARGET_REMOVE);
        memcpy(command->spec.subscription_id, sub->id, sizeof(command->spec.subscription_id));
        webhook_send(dispatch->webhook, &command);
    }
    subs_remove(dispatch->subs, sub);
}

void dispatch_sweep(dispatch_t *dispatch, int64_t now, int64_t reauthorization_lead)
{
    sub_t *next;
    for (sub_t *sub = subs_first_persistent(dispatch->subs); sub != NULL; sub = next) {
        next = subs_next_persistent(sub);
        if (now >= sub->expires_at) {
            log_msg(LOG_LEVEL_INFO, "dispatch: subscription %s of %s expired", sub->id,
                    sub->owner->user);
            dispatch_lifecycle(dispatch, sub, "subscriptionRemoved");
            dispatch_remove_subscription(dispatch, sub);
        } else if (!sub->rest.is_reauthorization_sent &&
                   now >= sub->expires_at - reauthorization_lead) {
            sub->rest.is_reauthorization_sent = true;
            dispatch_lifecycle(dispatch, sub, "reauthorizationRequired");
        }
    }
}
