#ifndef HEROLD_WSOP_H
#define HEROLD_WSOP_H

/*
 * A WebSocket client message (schemas/ws-protocol.md section 3), parsed and checked
 * without side effects: what ws.c then acts on. Kept apart so that every rule about a
 * message's shape lives in one place that can be tested and fuzzed without a connection.
 *
 * The message is one JSON object with `op` (subscribe, unsubscribe, ping, resume, auth)
 * and an optional `ref` (a string of at most WSOP_MAX_REF_BYTES bytes, or null). Any thread
 * may call these.
 */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"

#define WSOP_MAX_REF_BYTES 128

typedef enum wsop_kind {
    WSOP_SUBSCRIBE,
    WSOP_UNSUBSCRIBE,
    WSOP_PING,
    WSOP_RESUME,
    WSOP_AUTH,
} wsop_kind_t;

/* Strings point into the parsed document and live until wsop_clear. */
typedef struct wsop {
    wsop_kind_t kind;
    const char *ref;             /* NULL: none (or null) */
    const char *resource;        /* subscribe: as the client wrote it */
    unsigned change_mask;        /* subscribe: EVENT_* bits; all when changeType is absent */
    const char *subscription_id; /* unsubscribe */
    bool has_cursor;             /* resume: a cursor was given (else the stored one) */
    uint64_t cursor;
    const char *token; /* auth */
    size_t token_len;
    json_t *doc;
} wsop_t;

/* Parses data[0..len). Returns 0, or the error to answer with err set (HEROLD_E_BAD_JSON,
 * HEROLD_E_BAD_REQUEST, HEROLD_E_UNKNOWN_OP, HEROLD_E_BAD_CHANGE_TYPE); op->ref is set
 * whenever it could be read, so that the error answer can echo it. Call wsop_clear
 * afterwards either way. */
int wsop_parse(const char *data, size_t len, wsop_t *op, struct herr *err);

void wsop_clear(wsop_t *op);

#endif
