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
 * Runs on the service thread.
 */

#include <stdbool.h>
#include <stdint.h>

#include "chan.h"
#include "store.h"
#include "subs.h"
#include "webhook.h"
#include "ws.h"

#define DISPATCH_EVENTS_PER_TURN 64 /* events dispatched per loop turn */

typedef struct dispatch dispatch_t;

/* A dispatcher over subs, ws, webhook and store (borrowed), fed by events (borrowed; its
 * items are event_t *, freed after dispatch). */
dispatch_t *dispatch_new(subs_t *subs, ws_t *ws, webhook_t *webhook, store_t *store,
                         chan_t *events);

void dispatch_free(dispatch_t *dispatch);

/* Dispatches up to DISPATCH_EVENTS_PER_TURN events. Returns true when more may wait. */
bool dispatch_pending(dispatch_t *dispatch);

/* Sends reauthorizationRequired and subscriptionRemoved as due at now (seconds since the
 * epoch) and removes expired subscriptions. */
void dispatch_sweep(dispatch_t *dispatch, int64_t now, int64_t reauthorization_lead);

/* Sends a lifecycle notification about a persistent subscription to its subscriber. */
void dispatch_lifecycle(dispatch_t *dispatch, const sub_t *sub, const char *lifecycle_event);

/* Tells the webhook thread the current target of a webhook subscription (after creation
 * or a change of URL, expiration or secret). */
void dispatch_webhook_target_put(dispatch_t *dispatch, const sub_t *sub);

/* Removes a subscription and everything queued for it elsewhere, and from the store. */
void dispatch_remove_subscription(dispatch_t *dispatch, sub_t *sub);

/* Writes a persistent subscription to the store. A store that cannot write ends the
 * process (the change was not confirmed to anyone yet). */
void dispatch_persist(dispatch_t *dispatch, const sub_t *sub);

/* After a restart: hands every restored webhook subscription to the webhook thread. */
void dispatch_restore_targets(dispatch_t *dispatch);

#endif
