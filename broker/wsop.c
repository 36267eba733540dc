#include "wsop.h"

#include <string.h>

#include "event.h"
#include "notif.h"

static const char *string_or_null(const json_t *value)
{
    return json_is_string(value) ? json_string_value(value) : NULL;
}

int wsop_parse(const char *data, size_t len, wsop_t *op, struct herr *err)
{
    memset(op, 0, sizeof(*op));
    json_error_t jerr;
    op->doc = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (op->doc == NULL) {
        return herr_set(err, HEROLD_E_BAD_JSON, "not valid JSON: %s", jerr.text);
    }
    if (!json_is_object(op->doc)) {
        return herr_set(err, HEROLD_E_BAD_JSON, "a message must be a JSON object");
    }
    const json_t *ref = json_object_get(op->doc, "ref");
    if (ref != NULL && !json_is_null(ref)) {
        if (!json_is_string(ref) || json_string_length(ref) > WSOP_MAX_REF_BYTES) {
            return herr_set(err, HEROLD_E_BAD_REQUEST, "ref: must be a string of at most %d bytes",
                            WSOP_MAX_REF_BYTES);
        }
        op->ref = json_string_value(ref);
    }
    const char *name = string_or_null(json_object_get(op->doc, "op"));
    if (name == NULL) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "op: a string is required");
    }
    if (strcmp(name, "subscribe") == 0) {
        op->kind = WSOP_SUBSCRIBE;
        const json_t *change_type = json_object_get(op->doc, "changeType");
        op->resource = string_or_null(json_object_get(op->doc, "resource"));
        op->change_mask = EVENT_CHANGE_ALL;
        if (op->resource == NULL) {
            return herr_set(err, HEROLD_E_BAD_REQUEST, "resource: a string is required");
        }
        if (change_type != NULL && !json_is_string(change_type)) {
            return herr_set(err, HEROLD_E_BAD_REQUEST, "changeType: must be a string");
        }
        if (change_type != NULL) {
            return event_change_mask_parse(json_string_value(change_type),
                                           json_string_length(change_type), &op->change_mask, err);
        }
        return 0;
    }
    if (strcmp(name, "unsubscribe") == 0) {
        op->kind = WSOP_UNSUBSCRIBE;
        op->subscription_id = string_or_null(json_object_get(op->doc, "subscriptionId"));
        return op->subscription_id != NULL
                   ? 0
                   : herr_set(err, HEROLD_E_BAD_REQUEST, "subscriptionId: a string is required");
    }
    if (strcmp(name, "ping") == 0) {
        op->kind = WSOP_PING;
        return 0;
    }
    if (strcmp(name, "resume") == 0) {
        op->kind = WSOP_RESUME;
        const json_t *cursor = json_object_get(op->doc, "cursor");
        if (cursor == NULL || json_is_null(cursor)) {
            return 0;
        }
        op->has_cursor = true;
        if (!json_is_string(cursor) ||
            !notif_cursor_parse(json_string_value(cursor), json_string_length(cursor),
                                &op->cursor)) {
            return herr_set(err, HEROLD_E_BAD_REQUEST,
                            "cursor: must be a cursor string from a notify or lifecycle frame");
        }
        return 0;
    }
    if (strcmp(name, "auth") == 0) {
        op->kind = WSOP_AUTH;
        const json_t *token = json_object_get(op->doc, "token");
        if (!json_is_string(token)) {
            return herr_set(err, HEROLD_E_BAD_REQUEST, "token: a string is required");
        }
        op->token = json_string_value(token);
        op->token_len = json_string_length(token);
        return 0;
    }
    return herr_set(err, HEROLD_E_UNKNOWN_OP,
                    "op: not one of subscribe, unsubscribe, ping, resume, auth");
}

void wsop_clear(wsop_t *op)
{
    json_decref(op->doc);
    memset(op, 0, sizeof(*op));
}
