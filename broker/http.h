#ifndef HEROLD_HTTP_H
#define HEROLD_HTTP_H

/*
 * The HTTP listener: the libwebsockets context, its service loop, and request routing.
 *
 *   GET /healthz          200 "ok"
 *   GET /v1.0/ws          WebSocket upgrade, handed to ws.c after the token check
 *   /v1.0/subscriptions…  the subscription API (rest.c)
 *   anything else         404
 *
 * The service thread also drives the dispatch of events and webhook results when woken,
 * and the lifecycle sweep once a second.
 *
 * http owns the context and runs on the thread that calls http_service (the main thread);
 * only http_wake may be called from other threads.
 */

#include <stdbool.h>

#include "dispatch.h"
#include "errors.h"
#include "rest.h"
#include "ws.h"

typedef struct http http_t;

/* The modules the listener serves (borrowed). */
typedef struct http_routes {
    ws_t *ws;
    rest_t *rest;
    dispatch_t *dispatch;
    int64_t reauthorization_lead; /* seconds, for dispatch_sweep */
    const char *tls_cert;         /* PEM files for https and wss, or NULL for plain */
    const char *tls_key;
    const char *web_root; /* the live-alert page's files (clients/web), or NULL */
} http_routes_t;

/* Listens on address:port and serves routes. Returns NULL with err set when the context
 * cannot be created or the port cannot be bound. */
http_t *http_new(const char *address, int port, const http_routes_t *routes, struct herr *err);

/* Destroys the context, closing every connection. NULL is a no-op. */
void http_free(http_t *http);

/* Runs one turn of the service loop: waits for network activity, a wake-up or a timer,
 * handles it, and returns. Returns 0, or -1 when the context has failed. */
int http_service(http_t *http);

/* Makes the service thread dispatch pending events. Safe from any thread. */
void http_wake(http_t *http);

/* Closes every WebSocket with 1001 and serves until they are gone or timeout_ms passed. */
void http_drain(http_t *http, int timeout_ms);

#endif
