#ifndef HEROLD_REST_H
#define HEROLD_REST_H

/*
 * The Graph-compatible subscription API (DESIGN 3.2, schemas/subscriptions.md):
 *
 *   POST   /v1.0/subscriptions                      create (201)
 *   GET    /v1.0/subscriptions[?$top=&$skiptoken=]  list the caller's own, oldest first
 *   GET    /v1.0/subscriptions/{id}                 one (404 unless the caller owns it)
 *   PATCH  /v1.0/subscriptions/{id}                 renew expirationDateTime, change
 *                                                   notificationUrl
 *   DELETE /v1.0/subscriptions/{id}                 204
 *   POST   /v1.0/subscriptions/{id}/reauthorize     204, refreshes the owner's groups
 *
 * Every request carries a bearer token, checked before anything else. Bodies are JSON
 * objects of at most REST_MAX_BODY_BYTES; unknown members are ignored, as Graph clients
 * send some of their own. A webhook URL (notificationUrl, lifecycleNotificationUrl) is
 * validated by the webhook thread before anything is stored: the request stays open
 * while the handshake runs, so the service loop never waits for it, and the answer
 * resumes the request (or is dropped if the client has gone). Errors use Graph's body
 * with a request-id.
 *
 * A change (create, PATCH, reauthorize, DELETE) is written to the store by the store
 * writer's thread (store_writer.h) and applied to the index only once the store has it;
 * then the answer goes out. Matching and every WebSocket meanwhile go on: they used to
 * wait for each change's fdatasync or COMMIT. Until then the change is invisible: a
 * GET shows the subscription as it was, and a create is counted against the user's limit
 * and checked for duplicates among the creations under way. A change of a subscription
 * whose last change is still being written waits for it, so that each document written
 * holds the one before. A change whose client went away is applied all the same: the
 * store has it.
 *
 * Runs on the service thread; http.c calls the rest_request_* functions from its
 * callbacks.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "chan.h"
#include "dispatch.h"
#include "ratelimit.h"
#include "store_writer.h"
#include "subs.h"
#include "webhook.h"

struct lws;

#define REST_MAX_BODY_BYTES 16384
#define REST_MAX_PAGE 100
#define REST_DEFAULT_NOTIFICATIONS_PAGE 100
#define REST_MAX_NOTIFICATIONS_PAGE 1000
#define REST_MAX_CLIENT_STATE_CHARS 128
#define REST_MAX_CERTIFICATE_BYTES 8192

typedef struct rest rest_t;
typedef struct rest_request rest_request_t;

typedef struct rest_config {
    bool allow_private;             /* webhook targets in private ranges */
    int64_t min_expiration_seconds; /* closer expirations are raised to this */
    int64_t max_expiration_minutes; /* further ones are refused */
    int max_subscriptions_per_user;
    bool is_tls;              /* links we emit say https */
    ratelimit_t *creations;   /* subscriptions created per user, shared with ws; or NULL */
    int creations_per_minute; /* the rate behind creations, for messages */
    /* Pages of retained notifications read per user (GET .../notifications), or NULL: each
     * page reads and matches up to DISPATCH_REPLAY_RECORDS stored events on the service
     * thread, which every live delivery waits for meanwhile. */
    ratelimit_t *pages;
    int pages_per_second; /* the rate behind pages, for messages */
} rest_config_t;

/* The API over subs, dispatch, webhook and writer (borrowed); validation answers arrive on
 * webhook_results (borrowed), and they and the store writer's done writes are handled by
 * rest_drain_results. */
rest_t *rest_new(const rest_config_t *config, const auth_t *auth, subs_t *subs,
                 dispatch_t *dispatch, webhook_t *webhook, chan_t *webhook_results,
                 store_writer_t *writer);

/* Checks a creation body (POST /v1.0/subscriptions) as the API does before it looks at
 * the caller's existing subscriptions or validates URLs: for tests and fuzzing. Returns 0
 * or the error a request would be answered with. */
int rest_check_create_body(const rest_config_t *config, const char *text, size_t len,
                           const auth_principal_t *principal, int64_t now, struct herr *err);

/* Frees the API; requests still open must have been closed. NULL is a no-op. */
void rest_free(rest_t *rest);

/* A request for uri began on wsi (its headers are parsed); a uri that is none of the
 * API's paths is answered 404 with Graph's error body. Returns a request state that
 * the caller keeps with the connection, and that ends with rest_request_closed. Answers
 * at once when no body is expected. Returns -1 in *status_out to close the connection. */
rest_request_t *rest_request_begin(rest_t *rest, struct lws *wsi, const char *uri);

/* A piece of the body. Returns 0, or -1 to close the connection. */
int rest_request_body(rest_request_t *request, const void *data, size_t len);

/* The body is complete: handles the request. Returns 0, or -1 to close. */
int rest_request_body_complete(rest_request_t *request);

enum rest_write_result {
    REST_WRITE_MORE = 0,   /* more to send, or the answer is not decided yet */
    REST_WRITE_DONE = 1,   /* the response is out: free the request, end the transaction */
    REST_WRITE_CLOSE = -1, /* free the request and close the connection */
};

/* The connection is writeable: sends the response, one write per call. */
enum rest_write_result rest_request_writeable(rest_request_t *request);

/* The connection is gone: frees the request; a validation still running is ignored, a
 * change with the store writer is applied without an answer. */
void rest_request_closed(rest_request_t *request);

/* Handles the store writer's done writes (a change's write applies it and answers its
 * request; dispatch's go to dispatch_store_written) and webhook results: validation
 * answers resume their requests; 410 Gone removes a subscription. */
void rest_drain_results(rest_t *rest);

/* Drops the per-user page buckets that are full again (the once-a-second sweep). */
void rest_sweep(rest_t *rest);

#endif
