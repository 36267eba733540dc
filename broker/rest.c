#include "rest.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "errors.h"
#include "event.h"
#include "clock.h"
#include "log.h"
#include "mem.h"
#include "notif.h"
#include "path.h"

#define REST_PREFIX "/v1.0/subscriptions"
#define REST_WEBSOCKET_URL "websocket:"
#define REST_MAX_PENDING 1024
#define REST_MAX_WRITES 1024 /* changes whose store write is under way */
#define REST_MAX_PARKED 1024 /* changes waiting for another change of their subscription */

enum method {
    METHOD_OTHER,
    METHOD_GET,
    METHOD_POST,
    METHOD_PATCH,
    METHOD_DELETE,
};

enum change_op {
    CHANGE_CREATE,
    CHANGE_PATCH,
    CHANGE_REAUTHORIZE,
    CHANGE_DELETE,
};

/* What a change needs once its URLs are validated, and until its store write is done. */
struct change {
    enum change_op op;
    sub_kind_t kind;
    char *resource; /* expanded pattern (create) */
    unsigned change_mask;
    int64_t expires_at;
    bool has_expiration;
    sub_rest_t rest;           /* create: the new record's REST fields */
    char *new_url;             /* PATCH: the new notificationUrl, or NULL */
    char *urls_to_validate[2]; /* in order; NULL entries are skipped */
    int next_validation;
    /* Set when the change is sent to the store. */
    char id[SUBS_ID_BYTES + 1]; /* the subscription's */
    auth_principal_t *owner;    /* create, PATCH, reauthorize: the requester's, owned */
    char secret_text[80];       /* create of a webhook subscription: the answer's */
};

struct rest_request {
    rest_t *rest;
    struct lws *wsi;
    enum method method;
    char id[SUBS_ID_BYTES + 1]; /* from the path, or empty */
    bool is_reauthorize;
    bool is_notifications; /* /subscriptions/{id}/notifications */
    char host[128];
    const char *scheme; /* of the links we emit: https behind TLS or a TLS proxy */
    char request_id[SUBS_ID_BYTES + 1];
    auth_principal_t *principal;
    char *body;
    size_t body_len;
    bool is_body_too_large;
    bool is_handled; /* handle() ran: a POST without a body is handled at its headers */
    bool is_answered;
    bool are_headers_sent;
    int status;
    char *response;
    size_t response_len;
    bool is_close_after;
    int64_t retry_after_s; /* > 0: a Retry-After header goes with the answer */
    uint64_t pending_id;   /* non-zero while a validation runs */
    bool is_parked;        /* waiting for another change of its subscription */
    bool is_writing;       /* its change is with the store writer (rest->writes) */
    struct change *change; /* owned by the request until it is sent to the store */
};

struct pending {
    uint64_t id;
    rest_request_t *request;
};

/* A change whose store write is under way. It is applied when the write is done, whether
 * or not its client is still there to hear of it. */
struct writing {
    uint64_t tag;            /* the store write's */
    rest_request_t *request; /* NULL once the client went away */
    struct change *change;
};

struct rest {
    rest_config_t config;
    const auth_t *auth;
    subs_t *subs;
    dispatch_t *dispatch;
    webhook_t *webhook;
    chan_t *results;
    store_writer_t *writer;
    struct pending pending[REST_MAX_PENDING];
    size_t pending_count;
    uint64_t next_pending_id; /* also the tags of store writes */
    struct writing writes[REST_MAX_WRITES];
    size_t write_count;
    rest_request_t *parked[REST_MAX_PARKED];
    size_t parked_count;
};

static void change_free(struct change *change);

rest_t *rest_new(const rest_config_t *config, const auth_t *auth, subs_t *subs,
                 dispatch_t *dispatch, webhook_t *webhook, chan_t *webhook_results,
                 store_writer_t *writer)
{
    rest_t *rest = xcalloc(1, sizeof(*rest));
    rest->config = *config;
    rest->auth = auth;
    rest->subs = subs;
    rest->dispatch = dispatch;
    rest->webhook = webhook;
    rest->results = webhook_results;
    rest->writer = writer;
    rest->next_pending_id = 1;
    return rest;
}

void rest_free(rest_t *rest)
{
    if (rest == NULL) {
        return;
    }
    for (size_t i = 0; i < rest->write_count; i++) {
        change_free(rest->writes[i].change);
    }
    free(rest);
}

static bool is_route(const char *uri)
{
    size_t len = strlen(REST_PREFIX);
    return strncmp(uri, REST_PREFIX, len) == 0 && (uri[len] == '\0' || uri[len] == '/');
}

/* ---- small helpers ---- */

static void change_free(struct change *change)
{
    if (change == NULL) {
        return;
    }
    free(change->resource);
    free(change->new_url);
    free(change->urls_to_validate[0]);
    free(change->urls_to_validate[1]);
    subs_rest_clear(&change->rest);
    auth_principal_free(change->owner);
    free(change);
}

static json_t *string_or_null(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

static size_t utf8_chars(const char *s)
{
    size_t count = 0;
    for (; *s != '\0'; s++) {
        count += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return count;
}

/* Parses ISO 8601 as Graph clients write it: YYYY-MM-DDTHH:MM:SS, optional fraction of
 * any length, then Z or ±HH:MM. Returns 0 with *seconds (fraction dropped) or -1. */
static int parse_datetime(const char *text, int64_t *seconds)
{
    struct tm tm;
    int used = 0;
    memset(&tm, 0, sizeof(tm));
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &used) != 6 ||
        used != 19) {
        return -1;
    }
    const char *p = text + used;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) {
            return -1;
        }
        while (isdigit((unsigned char)*p)) {
            p++;
        }
    }
    int offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hours;
        int minutes;
        if (sscanf(p + 1, "%2d:%2d", &hours, &minutes) != 2 || strlen(p) != 6 || hours > 23 ||
            minutes > 59) {
            return -1;
        }
        offset = (hours * 60 + minutes) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0' || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
        tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    struct tm given = tm;
    time_t t = timegm(&tm);
    struct tm back;
    gmtime_r(&t, &back);
    /* timegm normalises 2027-02-30 to March 2nd: refuse dates that do not exist. */
    if (back.tm_mday != given.tm_mday || back.tm_mon != given.tm_mon) {
        return -1;
    }
    *seconds = (int64_t)t - offset;
    return 0;
}

/* ---- responses ---- */

static int write_headers(rest_request_t *req, int status, size_t body_len)
{
    unsigned char buf[LWS_PRE + 1024];
    unsigned char *start = buf + LWS_PRE;
    unsigned char *p = start;
    unsigned char *end = buf + sizeof(buf);
    struct lws *wsi = req->wsi;

    if (lws_add_http_common_headers(wsi, (unsigned int)status,
                                    body_len > 0 ? "application/json" : NULL,
                                    (lws_filepos_t)body_len, &p, end) != 0 ||
        lws_add_http_header_by_name(
            wsi, (const unsigned char *)"request-id:", (const unsigned char *)req->request_id,
            (int)strlen(req->request_id), &p, end) != 0) {
        return -1;
    }
    if (status == 401 &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"www-authenticate:",
                                    (const unsigned char *)"Bearer", 6, &p, end) != 0) {
        return -1;
    }
    if (req->is_close_after &&
        lws_add_http_header_by_token(wsi, WSI_TOKEN_CONNECTION, (const unsigned char *)"close", 5,
                                     &p, end) != 0) {
        return -1;
    }
    if (req->retry_after_s > 0) {
        char seconds[24];
        int len = snprintf(seconds, sizeof(seconds), "%lld", (long long)req->retry_after_s);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:",
                                        (const unsigned char *)seconds, len, &p, end) != 0) {
            return -1;
        }
    }
    return lws_finalize_write_http_header(wsi, start, &p, end) != 0 ? -1 : 0;
}

/* Answers with status and body (taken; NULL for none). Headers and body go out in the
 * connection's WRITEABLE callbacks, one write each, so an answer may be decided in any
 * callback (a validation result arrives in another connection's). */
static int respond(rest_request_t *req, int status, json_t *body)
{
    req->is_answered = true;
    req->status = status;
    if (body != NULL) {
        req->response = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(body);
        req->response_len = strlen(req->response);
    }
    lws_callback_on_writable(req->wsi);
    return 0;
}

static int respond_error(rest_request_t *req, int code, const char *message)
{
    char date[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    json_t *body =
        json_pack("{s:{s:s, s:s, s:{s:s, s:s}}}", "error", "code", herold_error_code(code),
                  "message", message, "innerError", "date", date, "request-id", req->request_id);
    log_msg(LOG_LEVEL_DEBUG, "rest: %d %s: %s", herold_error_status(code), herold_error_code(code),
            message);
    return respond(req, herold_error_status(code), body);
}

static void context_url(const rest_request_t *req, const char *suffix, char *out, size_t cap)
{
    snprintf(out, cap, "%s://%s/v1.0/%s", req->scheme, req->host, suffix);
}

/* A subscription as the API shows it. A list item (is_listed) has no @odata.context of
 * its own and never shows clientState. */
static json_t *subscription_json(const rest_request_t *req, const sub_t *sub, bool is_listed,
                                 const char *signing_secret)
{
    char types[32];
    char context[256];
    bool with_client_state = !is_listed;
    event_change_mask_format(sub->change_mask, types, sizeof(types));
    json_t *o = json_object();
    if (!is_listed) {
        context_url(req, "$metadata#subscriptions/$entity", context, sizeof(context));
        json_object_set_new(o, "@odata.context", json_string(context));
    }
    json_object_set_new(o, "id", json_string(SUBS_ID_TEXT(sub)));
    json_object_set_new(o, "resource", json_string(sub->rest->resource_given));
    json_object_set_new(o, "applicationId", string_or_null(sub->rest->application_id));
    json_object_set_new(o, "changeType", json_string(types));
    json_object_set_new(o, "clientState",
                        string_or_null(with_client_state ? sub->rest->client_state : NULL));
    json_object_set_new(o, "notificationUrl", json_string(sub->rest->notification_url));
    json_object_set_new(o, "notificationQueryOptions", json_null());
    json_object_set_new(o, "lifecycleNotificationUrl", string_or_null(sub->rest->lifecycle_url));
    char expiration[SUBS_EXPIRATION_BYTES + 1];
    subs_format_expiration(sub, expiration);
    json_object_set_new(o, "expirationDateTime", json_string(expiration));
    json_object_set_new(o, "creatorId", json_string(sub->owner->user));
    json_object_set_new(o, "includeResourceData", json_boolean(sub->rest->include_resource_data));
    json_object_set_new(o, "latestSupportedTlsVersion", json_string("v1_2"));
    json_object_set_new(o, "encryptionCertificate",
                        string_or_null(sub->rest->encryption_certificate));
    json_object_set_new(o, "encryptionCertificateId",
                        string_or_null(sub->rest->encryption_certificate_id));
    json_object_set_new(o, "notificationUrlAppId", json_null());
    if (signing_secret != NULL) {
        json_object_set_new(o, "signingSecret", json_string(signing_secret));
    }
    return o;
}

/* ---- request parsing ---- */

static enum method request_method(struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0) {
        return METHOD_GET;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0) {
        return METHOD_POST;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI) > 0) {
        return METHOD_PATCH;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI) > 0) {
        return METHOD_DELETE;
    }
    return METHOD_OTHER;
}

static void request_host(struct lws *wsi, char *out, size_t cap)
{
    char host[128];
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_HOST);
    if (len <= 0 || len >= (int)sizeof(host) ||
        lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) < 0) {
        snprintf(out, cap, "localhost");
        return;
    }
    /* The host ends up in URLs we emit: accept only what a host:port may contain. */
    for (char *p = host; *p != '\0'; p++) {
        if (!isalnum((unsigned char)*p) && strchr(".-:[]", *p) == NULL) {
            snprintf(out, cap, "localhost");
            return;
        }
    }
    snprintf(out, cap, "%s", host);
}

/* A TLS-terminating proxy in front says so with X-Forwarded-Proto: https. The value only
 * shapes links sent back to this same client. */
static bool forwarded_https(struct lws *wsi)
{
    char value[16];
    return lws_hdr_custom_copy(wsi, value, sizeof(value), "x-forwarded-proto:", 18) > 0 &&
           strcasecmp(value, "https") == 0;
}

static int authenticate(rest_request_t *req)
{
    char header[AUTH_MAX_TOKEN_BYTES + 64];
    struct herr err;
    struct lws *wsi = req->wsi;
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (len <= 0) {
        return herr_set(&err, HEROLD_E_UNAUTHORIZED, "Authorization: a bearer token is required");
    }
    if (len >= (int)sizeof(header) ||
        lws_hdr_copy(wsi, header, sizeof(header), WSI_TOKEN_HTTP_AUTHORIZATION) < 0 ||
        strncasecmp(header, "Bearer ", 7) != 0) {
        return HEROLD_E_UNAUTHORIZED;
    }
    const char *token = header + 7;
    while (*token == ' ') {
        token++;
    }
    if (auth_token_verify(req->rest->auth, token, strlen(token), (int64_t)time(NULL),
                          &req->principal, &err) != 0) {
        log_msg(LOG_LEVEL_INFO, "rest: token refused: %s", err.message);
        return HEROLD_E_UNAUTHORIZED;
    }
    return 0;
}

static bool content_type_is_json(struct lws *wsi)
{
    char value[128];
    int len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    if (len <= 0 || len >= (int)sizeof(value) ||
        lws_hdr_copy(wsi, value, sizeof(value), WSI_TOKEN_HTTP_CONTENT_TYPE) < 0) {
        return false;
    }
    size_t base = strcspn(value, ";");
    while (base > 0 && value[base - 1] == ' ') {
        base--;
    }
    return base == strlen("application/json") && strncasecmp(value, "application/json", base) == 0;
}

/* ---- handlers ---- */

static int finish_change(rest_request_t *req);

/* Starts the next pending URL validation, or applies the change when none is left. */
static int continue_change(rest_request_t *req)
{
    rest_t *rest = req->rest;
    struct change *change = req->change;
    while (change->next_validation < 2 &&
           change->urls_to_validate[change->next_validation] == NULL) {
        change->next_validation++;
    }
    if (change->next_validation >= 2) {
        return finish_change(req);
    }
    if (rest->pending_count == REST_MAX_PENDING) {
        return respond_error(req, HEROLD_E_UNAVAILABLE, "too many validations under way");
    }
    webhook_command_t *command = webhook_command_new(WEBHOOK_CMD_VALIDATE);
    command->request_id = rest->next_pending_id++;
    command->url = xstrdup(change->urls_to_validate[change->next_validation]);
    command->url_name =
        change->next_validation == 0 ? "notificationUrl" : "lifecycleNotificationUrl";
    req->pending_id = command->request_id;
    rest->pending[rest->pending_count++] = (struct pending){command->request_id, req};
    webhook_send(rest->webhook, &command);
    return 0;
}

/* Whether a creation asks for a subscription with these fields (Graph's 409 rule). */
static bool is_identical(const struct change *create, const char *resource, unsigned mask,
                         const char *url)
{
    return strcmp(create->resource, resource) == 0 && create->change_mask == mask &&
           strcmp(create->rest.notification_url, url) == 0;
}

/* Checks the limits that can change while a validation runs, counting the creations whose
 * store write is under way; 0 or an answered error. */
static int check_create_limits(rest_request_t *req, struct change *change)
{
    rest_t *rest = req->rest;
    const char *user = req->principal->user;
    size_t count = subs_count_owned(rest->subs, user);
    bool is_duplicate = false;
    for (size_t i = 0; i < rest->write_count; i++) {
        const struct change *other = rest->writes[i].change;
        if (other->op == CHANGE_CREATE && strcmp(other->owner->user, user) == 0) {
            count++;
            is_duplicate |= is_identical(change, other->resource, other->change_mask,
                                         other->rest.notification_url);
        }
    }
    if (count >= (size_t)rest->config.max_subscriptions_per_user) {
        char text[128];
        snprintf(text, sizeof(text), "subscriptions: at most %d per user",
                 rest->config.max_subscriptions_per_user);
        respond_error(req, HEROLD_E_LIMIT, text);
        return -1;
    }
    for (const sub_t *s = subs_first_owned(rest->subs, user); s != NULL && !is_duplicate;
         s = subs_next_owned(s)) {
        is_duplicate =
            is_identical(change, subs_resource(s), s->change_mask, s->rest->notification_url);
    }
    if (is_duplicate) {
        respond_error(req, HEROLD_E_CONFLICT,
                      "an identical subscription (resource, changeType, notificationUrl) exists");
        return -1;
    }
    return 0;
}

/* Whether a change of subscription id is with the store writer. */
static bool is_being_written(const rest_t *rest, const char *id)
{
    for (size_t i = 0; i < rest->write_count; i++) {
        const struct change *change = rest->writes[i].change;
        if (change->op != CHANGE_CREATE && strcmp(change->id, id) == 0) {
            return true;
        }
    }
    return false;
}

/* The store write of a change to sub (NULL for a create), with what the change needs kept
 * in it. Each write holds the whole document as it will be: the change's own fields over
 * the subscription's current ones. */
static store_write_t *change_write(rest_request_t *req, struct change *change, sub_t *sub)
{
    rest_t *rest = req->rest;
    change->owner = auth_principal_dup(req->principal);
    if (change->op == CHANGE_DELETE) {
        store_write_t *write = store_write_new(STORE_WRITE_DELETE);
        write->id = xstrdup(change->id);
        sub->rest->is_deleting = true; /* its cursor is not stored after the delete */
        return write;
    }
    store_write_t *write = store_write_new(STORE_WRITE_PUT);
    if (change->op == CHANGE_CREATE) {
        subs_new_id(change->id);
        if (change->kind == SUB_WEBHOOK) {
            webhook_secret_new(change->rest.secret, change->secret_text,
                               sizeof(change->secret_text));
            /* It hears what is dispatched from now on; the cursor is stored before anyone
             * learns of the subscription, so a crash cannot skip its first events. */
            write->has_first_cursor = true;
            write->first_cursor = dispatch_dispatched_seq(rest->dispatch);
        }
        change->rest.expires_at = change->expires_at;
        change->rest.created_order = subs_take_created_order(rest->subs);
        write->document = subs_document(change->kind, change->resource, change->change_mask,
                                        change->owner, &change->rest);
    } else {
        sub_rest_t changed = *sub->rest;
        if (change->new_url != NULL) {
            changed.notification_url = change->new_url;
        }
        if (change->has_expiration) {
            changed.expires_at = change->expires_at;
        }
        write->document =
            subs_document(sub->kind, subs_resource(sub), sub->change_mask, change->owner, &changed);
    }
    write->id = xstrdup(change->id);
    return write;
}

/* Sends the change to the store; it is applied when the write is done (store_answered). A
 * change of a subscription that another change is still writing waits for it, so that
 * each write holds the one before. */
static int finish_change(rest_request_t *req)
{
    rest_t *rest = req->rest;
    struct change *change = req->change;
    sub_t *sub = NULL;
    if (change->op == CHANGE_CREATE) {
        if (check_create_limits(req, change) != 0) {
            return 0;
        }
    } else {
        sub = subs_find(rest->subs, req->id);
        if (sub == NULL || strcmp(sub->owner->user, req->principal->user) != 0) {
            return respond_error(req, HEROLD_E_NOT_FOUND, "no such subscription");
        }
        if (is_being_written(rest, req->id)) {
            if (rest->parked_count == REST_MAX_PARKED) {
                req->retry_after_s = 1;
                return respond_error(req, HEROLD_E_UNAVAILABLE,
                                     "too many subscription changes under way");
            }
            req->is_parked = true;
            rest->parked[rest->parked_count++] = req;
            return 0;
        }
        memcpy(change->id, req->id, sizeof(change->id));
    }
    if (rest->write_count == REST_MAX_WRITES || !store_writer_has_room(rest->writer)) {
        req->retry_after_s = 1;
        return respond_error(req, HEROLD_E_UNAVAILABLE, "too many subscription changes under way");
    }
    store_write_t *write = change_write(req, change, sub);
    write->tag = rest->next_pending_id++;
    rest->writes[rest->write_count++] = (struct writing){write->tag, req, change};
    req->change = NULL;
    req->is_writing = true;
    store_writer_send(rest->writer, &write);
    return 0;
}

/* A PATCH or reauthorize whose subscription went (expired, or its endpoint answered 410)
 * while its document was being written: the write brought it back into the store. */
static void delete_again(rest_t *rest, const char *id)
{
    if (store_writer_has_room(rest->writer)) {
        store_write_t *write = store_write_new(STORE_WRITE_DELETE);
        write->id = xstrdup(id);
        store_writer_send(rest->writer, &write);
    } else {
        log_msg(LOG_LEVEL_WARN, "rest: subscription %s stays in the store until it expires", id);
    }
}

/* Applies a change the store has: the index follows the store. Answers req unless NULL. */
static void apply_change(rest_t *rest, rest_request_t *req, struct change *change,
                         const store_write_t *write)
{
    struct herr err;
    if (change->op == CHANGE_CREATE) {
        sub_t *sub;
        if (subs_restore(rest->subs, change->id, write->document, &sub, &err) != 0) {
            /* What parse_create accepted is restored; a failure here is herold's own. */
            log_msg(LOG_LEVEL_ERROR, "rest: subscription %s stored but not indexed: %s", change->id,
                    err.message);
            delete_again(rest, change->id);
            if (req != NULL) {
                respond_error(req, HEROLD_E_SYSTEM, "the subscription could not be created");
            }
            return;
        }
        if (sub->kind == SUB_WEBHOOK) {
            /* Live from here on; the cursor stored with it, a little earlier, only repeats
             * the events between the two after a crash. */
            sub->rest->cursor = dispatch_dispatched_seq(rest->dispatch);
            subs_cursor_moved(rest->subs, sub);
            dispatch_webhook_target_put(rest->dispatch, sub);
        }
        log_msg(LOG_LEVEL_INFO, "rest: %s created subscription %s", sub->owner->user, change->id);
        if (req != NULL) {
            respond(req, 201,
                    subscription_json(req, sub, false,
                                      sub->kind == SUB_WEBHOOK ? change->secret_text : NULL));
        }
        return;
    }
    sub_t *sub = subs_find(rest->subs, change->id);
    if (change->op == CHANGE_DELETE) {
        if (sub != NULL) {
            dispatch_forget_subscription(rest->dispatch, sub);
        }
        log_msg(LOG_LEVEL_INFO, "rest: %s deleted subscription %s", change->owner->user,
                change->id);
        if (req != NULL) {
            respond(req, 204, NULL);
        }
        return;
    }
    if (sub == NULL) {
        delete_again(rest, change->id);
        if (req != NULL) {
            respond_error(req, HEROLD_E_NOT_FOUND, "no such subscription");
        }
        return;
    }
    if (change->new_url != NULL) {
        free(sub->rest->notification_url);
        sub->rest->notification_url = change->new_url;
        change->new_url = NULL;
    }
    if (change->has_expiration) {
        subs_set_expiration(rest->subs, sub, change->expires_at);
    }
    if (change->op == CHANGE_REAUTHORIZE) {
        sub->rest->is_reauthorization_sent = false;
    }
    subs_set_owner(rest->subs, sub, &change->owner);
    if (sub->kind == SUB_WEBHOOK && change->op == CHANGE_PATCH) {
        dispatch_webhook_target_put(rest->dispatch, sub);
    }
    if (req != NULL) {
        if (change->op == CHANGE_REAUTHORIZE) {
            respond(req, 204, NULL);
        } else {
            respond(req, 200, subscription_json(req, sub, false, NULL));
        }
    }
}

/* The changes that waited for a write of subscription id go on, in the order they came:
 * the first sends its own write, and the others wait for that one. */
static void resume_parked(rest_t *rest, const char *id)
{
    rest_request_t *resumed[REST_MAX_PARKED];
    size_t count = 0;
    size_t kept = 0;
    for (size_t i = 0; i < rest->parked_count; i++) {
        rest_request_t *req = rest->parked[i];
        if (strcmp(req->id, id) == 0) {
            resumed[count++] = req;
        } else {
            rest->parked[kept++] = req;
        }
    }
    rest->parked_count = kept;
    for (size_t i = 0; i < count; i++) {
        resumed[i]->is_parked = false;
        finish_change(resumed[i]);
    }
}

/* A store write of a change is done: applies or refuses the change, then lets the changes
 * of the same subscription that waited for it go on. */
static void store_answered(rest_t *rest, const store_write_t *write)
{
    struct writing done = {0};
    for (size_t i = 0; i < rest->write_count; i++) {
        if (rest->writes[i].tag == write->tag) {
            done = rest->writes[i];
            rest->writes[i] = rest->writes[--rest->write_count];
            break;
        }
    }
    if (done.change == NULL) {
        return;
    }
    rest_request_t *req = done.request;
    if (req != NULL) {
        req->is_writing = false;
    }
    if (write->rc == 0) {
        apply_change(rest, req, done.change, write);
    } else {
        log_msg(LOG_LEVEL_WARN, "rest: a subscription change was not stored: %s",
                write->err.message);
        sub_t *sub =
            done.change->op == CHANGE_DELETE ? subs_find(rest->subs, done.change->id) : NULL;
        if (sub != NULL) {
            sub->rest->is_deleting = false;
            subs_cursor_moved(rest->subs, sub); /* the flushes skipped it meanwhile */
        }
        if (req != NULL) {
            respond_error(req, write->rc, write->err.message);
        }
    }
    if (done.change->op != CHANGE_CREATE) {
        resume_parked(rest, done.change->id);
    }
    change_free(done.change);
}

/* expirationDateTime against the configured bounds at now. */
static int parse_expiration(const rest_config_t *config, json_t *value, int64_t now,
                            int64_t *expires_at, struct herr *err)
{
    int64_t requested;
    if (!json_is_string(value) || parse_datetime(json_string_value(value), &requested) != 0) {
        return herr_set(err, HEROLD_E_BAD_REQUEST,
                        "expirationDateTime: an ISO 8601 date and time such as "
                        "2026-11-28T10:00:00.0000000Z is required");
    }
    if (requested <= now) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "expirationDateTime: lies in the past");
    }
    if (requested > now + config->max_expiration_minutes * 60) {
        return herr_set(err, HEROLD_E_BAD_REQUEST,
                        "expirationDateTime: more than %" PRId64 " minutes ahead",
                        config->max_expiration_minutes);
    }
    if (requested < now + config->min_expiration_seconds) {
        requested = now + config->min_expiration_seconds;
    }
    *expires_at = requested;
    return 0;
}

/* Reads and checks expirationDateTime; 0 with *expires_at, or an answered error. */
static int read_expiration(rest_request_t *req, json_t *value, int64_t *expires_at)
{
    struct herr err;
    int rc = parse_expiration(&req->rest->config, value, (int64_t)time(NULL), expires_at, &err);
    if (rc != 0) {
        respond_error(req, rc, err.message);
        return -1;
    }
    return 0;
}

static int check_url(rest_request_t *req, const char *member, const char *url)
{
    struct herr err;
    int rc = webhook_url_check_named(member, url, req->rest->config.allow_private, &err);
    if (rc != 0) {
        respond_error(req, rc, err.message);
        return -1;
    }
    return 0;
}

/* An optional string member of at most max_bytes: *out is NULL when absent or null. */
static int string_member(json_t *body, const char *member, size_t max_bytes, const char **out,
                         struct herr *err)
{
    json_t *value = json_object_get(body, member);
    *out = NULL;
    if (value == NULL || json_is_null(value)) {
        return 0;
    }
    if (!json_is_string(value) || json_string_length(value) > max_bytes) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "%s: must be a string of at most %zu bytes",
                        member, max_bytes);
    }
    *out = json_string_value(value);
    return 0;
}

/* A creation body, checked whole into change (which the caller frees either way): every
 * rule that needs no state beyond the configuration. Returns 0 or the error to answer. */
static int parse_create(const rest_config_t *config, json_t *body,
                        const auth_principal_t *principal, int64_t now, struct change *change,
                        struct herr *err)
{
    json_t *change_type = json_object_get(body, "changeType");
    json_t *url = json_object_get(body, "notificationUrl");
    json_t *resource = json_object_get(body, "resource");
    json_t *expiration = json_object_get(body, "expirationDateTime");
    const char *missing = !json_is_string(change_type) ? "changeType"
                          : !json_is_string(url)       ? "notificationUrl"
                          : !json_is_string(resource)  ? "resource"
                          : expiration == NULL         ? "expirationDateTime"
                                                       : NULL;
    if (missing != NULL) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "%s: a string is required", missing);
    }
    int rc = event_change_mask_parse(json_string_value(change_type),
                                     json_string_length(change_type), &change->change_mask, err);
    if (rc != 0) {
        return rc;
    }
    change->resource = subs_expand_resource(json_string_value(resource), principal->user, true);
    path_t pattern;
    struct herr path_err;
    if (path_parse_pattern(change->resource, strlen(change->resource), &pattern, &path_err) != 0) {
        return herr_set(err, HEROLD_E_BAD_PATH, "resource: %s", path_err.message);
    }
    if ((rc = parse_expiration(config, expiration, now, &change->expires_at, err)) != 0) {
        return rc;
    }
    const char *url_text = json_string_value(url);
    if (strcmp(url_text, REST_WEBSOCKET_URL) == 0) {
        change->kind = SUB_WEBSOCKET;
    } else {
        if ((rc = webhook_url_check_named("notificationUrl", url_text, config->allow_private,
                                          err)) != 0) {
            return rc;
        }
        change->kind = SUB_WEBHOOK;
        change->urls_to_validate[0] = xstrdup(url_text);
    }
    const char *lifecycle;
    if ((rc = string_member(body, "lifecycleNotificationUrl", WEBHOOK_MAX_URL_BYTES + 1, &lifecycle,
                            err)) != 0) {
        return rc;
    }
    if (lifecycle != NULL && change->kind == SUB_WEBSOCKET) {
        /* Lifecycle notifications of websocket: subscriptions travel over the owner's
         * sessions, and such subscriptions have no secret to sign a webhook with. */
        return herr_set(err, HEROLD_E_BAD_REQUEST,
                        "lifecycleNotificationUrl: not for websocket: subscriptions, whose "
                        "lifecycle notifications go to the owner's sessions");
    }
    if (lifecycle != NULL) {
        if ((rc = webhook_url_check_named("lifecycleNotificationUrl", lifecycle,
                                          config->allow_private, err)) != 0) {
            return rc;
        }
        change->urls_to_validate[1] = xstrdup(lifecycle);
    }
    const char *client_state;
    if ((rc = string_member(body, "clientState", 4 * 128, &client_state, err)) != 0) {
        return rc;
    }
    if (client_state != NULL && utf8_chars(client_state) > REST_MAX_CLIENT_STATE_CHARS) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "clientState: longer than 128 characters");
    }
    const char *certificate;
    const char *certificate_id;
    if ((rc = string_member(body, "encryptionCertificate", REST_MAX_CERTIFICATE_BYTES, &certificate,
                            err)) != 0 ||
        (rc = string_member(body, "encryptionCertificateId", 256, &certificate_id, err)) != 0) {
        return rc;
    }
    json_t *include = json_object_get(body, "includeResourceData");
    if (include != NULL && !json_is_boolean(include) && !json_is_null(include)) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "includeResourceData: must be a boolean");
    }

    change->rest.resource_given = xstrdup(json_string_value(resource));
    change->rest.notification_url = xstrdup(url_text);
    change->rest.lifecycle_url = lifecycle != NULL ? xstrdup(lifecycle) : NULL;
    if (client_state != NULL) {
        change->rest.client_state = xstrdup(client_state);
        json_t *state = json_string(client_state);
        change->rest.client_state_json = json_dumps(state, JSON_ENCODE_ANY);
        json_decref(state);
    }
    change->rest.application_id =
        principal->application != NULL ? xstrdup(principal->application) : NULL;
    change->rest.encryption_certificate = certificate != NULL ? xstrdup(certificate) : NULL;
    change->rest.encryption_certificate_id =
        certificate_id != NULL ? xstrdup(certificate_id) : NULL;
    change->rest.include_resource_data = json_is_true(include);
    return 0;
}

int rest_check_create_body(const rest_config_t *config, const char *text, size_t len,
                           const auth_principal_t *principal, int64_t now, struct herr *err)
{
    json_error_t jerr;
    json_t *body = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return herr_set(err, HEROLD_E_BAD_JSON, "the body is not a JSON object");
    }
    struct change *change = xcalloc(1, sizeof(*change));
    change->op = CHANGE_CREATE;
    int rc = parse_create(config, body, principal, now, change, err);
    change_free(change);
    json_decref(body);
    return rc;
}

/* Takes one of the caller's tokens from limit (NULL: no limit). Without one, sets the
 * request's Retry-After to the wait for the next and returns false. */
static bool is_within_rate(rest_request_t *req, ratelimit_t *limit)
{
    int64_t retry_after_ms = 0;
    if (limit == NULL ||
        ratelimit_take(limit, req->principal->user, clock_monotonic_ms(), &retry_after_ms)) {
        return true;
    }
    req->retry_after_s = (retry_after_ms + 999) / 1000;
    return false;
}

static int handle_create(rest_request_t *req, json_t *body)
{
    struct herr err;
    struct change *change = xcalloc(1, sizeof(*change));
    change->op = CHANGE_CREATE;
    req->change = change;

    if (!is_within_rate(req, req->rest->config.creations)) {
        char text[96];
        snprintf(text, sizeof(text), "subscriptions: at most %d created per minute",
                 req->rest->config.creations_per_minute);
        return respond_error(req, HEROLD_E_LIMIT, text);
    }

    int rc =
        parse_create(&req->rest->config, body, req->principal, (int64_t)time(NULL), change, &err);
    if (rc != 0) {
        return respond_error(req, rc, err.message);
    }
    if (check_create_limits(req, change) != 0) {
        return 0;
    }
    return continue_change(req);
}

/* A member of a PATCH body that herold does not change: refused unless it repeats the
 * stored value. */
static bool differs(json_t *body, const char *member, const char *stored)
{
    json_t *value = json_object_get(body, member);
    if (value == NULL) {
        return false;
    }
    if (json_is_null(value)) {
        return stored != NULL;
    }
    return !json_is_string(value) || stored == NULL ||
           strcmp(json_string_value(value), stored) != 0;
}

static int handle_patch(rest_request_t *req, sub_t *sub, json_t *body)
{
    char types[32];
    struct change *change = xcalloc(1, sizeof(*change));
    change->op = CHANGE_PATCH;
    req->change = change;
    event_change_mask_format(sub->change_mask, types, sizeof(types));

    static const char *const fixed[] = {"resource", "clientState", "lifecycleNotificationUrl",
                                        "encryptionCertificate", "encryptionCertificateId"};
    const char *stored[] = {sub->rest->resource_given, sub->rest->client_state,
                            sub->rest->lifecycle_url, sub->rest->encryption_certificate,
                            sub->rest->encryption_certificate_id};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (differs(body, fixed[i], stored[i])) {
            char text[96];
            snprintf(text, sizeof(text), "%s: cannot be changed", fixed[i]);
            return respond_error(req, HEROLD_E_BAD_REQUEST, text);
        }
    }
    json_t *include = json_object_get(body, "includeResourceData");
    if (include != NULL && !json_is_null(include) &&
        (!json_is_boolean(include) || json_is_true(include) != sub->rest->include_resource_data)) {
        return respond_error(req, HEROLD_E_BAD_REQUEST, "includeResourceData: cannot be changed");
    }
    json_t *change_type = json_object_get(body, "changeType");
    if (change_type != NULL) {
        unsigned mask;
        if (!json_is_string(change_type) ||
            event_change_mask_parse(json_string_value(change_type), json_string_length(change_type),
                                    &mask, NULL) != 0 ||
            mask != sub->change_mask) {
            return respond_error(req, HEROLD_E_BAD_REQUEST, "changeType: cannot be changed");
        }
    }
    json_t *expiration = json_object_get(body, "expirationDateTime");
    if (expiration != NULL) {
        if (read_expiration(req, expiration, &change->expires_at) != 0) {
            return 0;
        }
        change->has_expiration = true;
    }
    json_t *url = json_object_get(body, "notificationUrl");
    if (url != NULL && strcmp(json_string_value(url) != NULL ? json_string_value(url) : "",
                              sub->rest->notification_url) != 0) {
        const char *text = json_string_value(url);
        if (text == NULL || sub->kind == SUB_WEBSOCKET || strcmp(text, REST_WEBSOCKET_URL) == 0) {
            return respond_error(req, HEROLD_E_BAD_REQUEST,
                                 "notificationUrl: can change only from one http(s) URL to "
                                 "another");
        }
        if (check_url(req, "notificationUrl", text) != 0) {
            return 0;
        }
        change->new_url = xstrdup(text);
        change->urls_to_validate[0] = xstrdup(text);
    }
    return continue_change(req);
}

/* The list: only the caller's, oldest first, a page at a time. */
static int handle_list(rest_request_t *req)
{
    rest_t *rest = req->rest;
    char arg[64];
    long top = REST_MAX_PAGE;
    uint64_t after = 0;
    if (lws_get_urlarg_by_name(req->wsi, "$top=", arg, sizeof(arg)) != NULL) {
        char *end;
        top = strtol(arg + 5, &end, 10);
        if (*end != '\0' || end == arg + 5 || top < 1 || top > REST_MAX_PAGE) {
            return respond_error(req, HEROLD_E_BAD_REQUEST, "$top: must be 1..100");
        }
    }
    if (lws_get_urlarg_by_name(req->wsi, "$skiptoken=", arg, sizeof(arg)) != NULL) {
        char *end;
        after = strtoull(arg + 11, &end, 16);
        if (*end != '\0' || end == arg + 11) {
            return respond_error(req, HEROLD_E_BAD_REQUEST, "$skiptoken: not a token of ours");
        }
    }
    char context[256];
    context_url(req, "$metadata#subscriptions", context, sizeof(context));
    json_t *list = json_pack("{s:s}", "@odata.context", context);
    json_t *value = json_array();
    const sub_t *last = NULL;
    bool has_more = false;
    for (const sub_t *s = subs_first_owned(rest->subs, req->principal->user); s != NULL;
         s = subs_next_owned(s)) {
        if (s->rest->created_order <= after) {
            continue;
        }
        if ((long)json_array_size(value) == top) {
            has_more = true;
            break;
        }
        json_array_append_new(value, subscription_json(req, s, true, NULL));
        last = s;
    }
    json_object_set_new(list, "value", value);
    if (has_more) {
        char next[320];
        char suffix[96];
        snprintf(suffix, sizeof(suffix), "subscriptions?$top=%ld&$skiptoken=%" PRIx64, top,
                 last->rest->created_order);
        context_url(req, suffix, next, sizeof(next));
        json_object_set_new(list, "@odata.nextLink", json_string(next));
    }
    return respond(req, 200, list);
}

/* The `missed` item that opens a page whose since fell out of retention. */
static json_t *missed_item(const sub_t *sub, uint64_t cursor)
{
    char text[32];
    char expiration[SUBS_EXPIRATION_BYTES + 1];
    snprintf(text, sizeof(text), "%" PRIu64, cursor);
    subs_format_expiration(sub, expiration);
    json_t *item = json_pack("{s:s, s:s}", "subscriptionId", SUBS_ID_TEXT(sub),
                             "subscriptionExpirationDateTime", expiration);
    if (sub->rest->client_state != NULL) {
        json_object_set_new(item, "clientState", json_string(sub->rest->client_state));
    }
    json_object_set_new(item, "lifecycleEvent", json_string("missed"));
    json_object_set_new(item, "cursor", json_string(text));
    return item;
}

/* GET /subscriptions/{id}/notifications?since=<cursor>&$top=N: the retained notifications
 * of one subscription, a page at a time; @odata.nextLink while more are retained, then
 * @odata.deltaLink to poll later. */
static int handle_notifications(rest_request_t *req, sub_t *sub)
{
    if (req->method != METHOD_GET) {
        return respond_error(req, HEROLD_E_METHOD_NOT_ALLOWED, "notifications takes GET");
    }
    char arg[64];
    long top = REST_DEFAULT_NOTIFICATIONS_PAGE;
    uint64_t since = 0;
    if (lws_get_urlarg_by_name(req->wsi, "$top=", arg, sizeof(arg)) != NULL) {
        char *end;
        top = strtol(arg + 5, &end, 10);
        if (*end != '\0' || end == arg + 5 || top < 1 || top > REST_MAX_NOTIFICATIONS_PAGE) {
            return respond_error(req, HEROLD_E_BAD_REQUEST, "$top: must be 1..1000");
        }
    }
    if (lws_get_urlarg_by_name(req->wsi, "since=", arg, sizeof(arg)) != NULL) {
        const char *text = arg + 6;
        if (!notif_cursor_parse(text, strlen(text), &since)) {
            return respond_error(req, HEROLD_E_BAD_REQUEST,
                                 "since: must be a cursor from an earlier page or notification");
        }
    }
    if (!is_within_rate(req, req->rest->config.pages)) {
        char text[96];
        snprintf(text, sizeof(text), "notifications: at most %d pages per second",
                 req->rest->config.pages_per_second);
        return respond_error(req, HEROLD_E_LIMIT, text);
    }
    struct herr err;
    dispatch_page_t page;
    if (dispatch_page_read(req->rest->dispatch, sub, since, (size_t)top, &page, &err) != 0) {
        return respond_error(req, err.code, err.message);
    }
    json_t *value = json_array();
    if (page.is_missed) {
        json_array_append_new(value, missed_item(sub, since));
    }
    char expiration[SUBS_EXPIRATION_BYTES + 1];
    subs_format_expiration(sub, expiration);
    notif_item_head_t head = {SUBS_ID_TEXT(sub), expiration, sub->rest->client_state_json,
                              sub->rest->include_resource_data};
    for (size_t i = 0; i < page.count; i++) {
        size_t len = notif_item_length(page.notifs[i], &head);
        char *text = xmalloc(len);
        notif_item_write(page.notifs[i], &head, text);
        json_t *item = json_loadb(text, len, 0, NULL);
        free(text);
        if (item != NULL) {
            json_array_append_new(value, item);
        }
    }
    char context[256];
    char link[512];
    char suffix[160];
    context_url(req, "$metadata#Collection(changeNotification)", context, sizeof(context));
    snprintf(suffix, sizeof(suffix), "subscriptions/%s/notifications?since=%" PRIu64 "&$top=%ld",
             SUBS_ID_TEXT(sub), page.cursor, top);
    context_url(req, suffix, link, sizeof(link));
    char cursor[32];
    snprintf(cursor, sizeof(cursor), "%" PRIu64, page.cursor);
    json_t *body =
        json_pack("{s:s, s:o, s:s, s:s}", "@odata.context", context, "value", value, "cursor",
                  cursor, page.has_more ? "@odata.nextLink" : "@odata.deltaLink", link);
    dispatch_page_clear(&page);
    return respond(req, 200, body);
}

static int handle(rest_request_t *req)
{
    rest_t *rest = req->rest;
    req->is_handled = true;
    int rc = authenticate(req);
    if (rc != 0) {
        return respond_error(req, rc, "a valid bearer token is required");
    }
    if (req->method == METHOD_OTHER) {
        return respond_error(req, HEROLD_E_METHOD_NOT_ALLOWED,
                             "the method is not allowed on this resource");
    }

    if (req->is_notifications && req->method != METHOD_GET) {
        return respond_error(req, HEROLD_E_METHOD_NOT_ALLOWED, "notifications takes GET");
    }
    json_t *body = NULL;
    bool has_body = req->method == METHOD_POST || req->method == METHOD_PATCH;
    if (has_body && !req->is_reauthorize) {
        if (!content_type_is_json(req->wsi)) {
            return respond_error(req, HEROLD_E_UNSUPPORTED_MEDIA_TYPE,
                                 "Content-Type: must be application/json");
        }
        json_error_t jerr;
        body = json_loadb(req->body != NULL ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES,
                          &jerr);
        if (body == NULL || !json_is_object(body)) {
            json_decref(body);
            char text[200];
            snprintf(text, sizeof(text), "the body must be a JSON object%s%s",
                     body == NULL ? ": " : "", body == NULL ? jerr.text : "");
            return respond_error(req, HEROLD_E_BAD_JSON, text);
        }
    }

    if (req->id[0] == '\0') {
        if (req->is_reauthorize || req->is_notifications) {
            rc = respond_error(req, HEROLD_E_NOT_FOUND, "no such resource");
        } else if (req->method == METHOD_POST) {
            rc = handle_create(req, body);
        } else if (req->method == METHOD_GET) {
            rc = handle_list(req);
        } else {
            rc = respond_error(req, HEROLD_E_METHOD_NOT_ALLOWED,
                               "the method is not allowed on the collection");
        }
        json_decref(body);
        return rc;
    }

    sub_t *sub = subs_find(rest->subs, req->id);
    if (sub == NULL || strcmp(sub->owner->user, req->principal->user) != 0) {
        json_decref(body);
        return respond_error(req, HEROLD_E_NOT_FOUND, "no such subscription");
    }
    if (req->is_notifications) {
        json_decref(body);
        return handle_notifications(req, sub);
    }
    if (req->is_reauthorize) {
        if (req->method != METHOD_POST) {
            return respond_error(req, HEROLD_E_METHOD_NOT_ALLOWED, "reauthorize takes POST");
        }
        req->change = xcalloc(1, sizeof(*req->change));
        req->change->op = CHANGE_REAUTHORIZE;
        return finish_change(req);
    }
    switch (req->method) {
    case METHOD_GET:
        rc = respond(req, 200, subscription_json(req, sub, false, NULL));
        break;
    case METHOD_DELETE:
        req->change = xcalloc(1, sizeof(*req->change));
        req->change->op = CHANGE_DELETE;
        rc = finish_change(req);
        break;
    case METHOD_PATCH:
        rc = handle_patch(req, sub, body);
        break;
    default:
        rc = respond_error(req, HEROLD_E_METHOD_NOT_ALLOWED,
                           "the method is not allowed on a subscription");
        break;
    }
    json_decref(body);
    return rc;
}

/* ---- the request life cycle ---- */

static bool parse_route(rest_request_t *req, const char *uri)
{
    if (!is_route(uri)) {
        return false;
    }
    const char *rest = uri + strlen(REST_PREFIX);
    if (*rest == '\0') {
        return true;
    }
    rest++; /* '/' */
    size_t id_len = strcspn(rest, "/");
    if (id_len == 0 || id_len > SUBS_ID_BYTES) {
        return false;
    }
    memcpy(req->id, rest, id_len);
    req->id[id_len] = '\0';
    rest += id_len;
    if (*rest == '\0') {
        return true;
    }
    if (strcmp(rest, "/reauthorize") == 0) {
        req->is_reauthorize = true;
        return true;
    }
    if (strcmp(rest, "/notifications") == 0) {
        req->is_notifications = true;
        return true;
    }
    return false;
}

rest_request_t *rest_request_begin(rest_t *rest, struct lws *wsi, const char *uri)
{
    rest_request_t *req = xcalloc(1, sizeof(*req));
    req->rest = rest;
    req->wsi = wsi;
    req->method = request_method(wsi);
    subs_new_id(req->request_id);
    request_host(wsi, req->host, sizeof(req->host));
    req->scheme = rest->config.is_tls || forwarded_https(wsi) ? "https" : "http";

    if (!parse_route(req, uri)) {
        respond_error(req, HEROLD_E_NOT_FOUND, "no such resource");
        return req;
    }
    if (req->method == METHOD_POST || req->method == METHOD_PATCH) {
        char value[32];
        int len = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH);
        long long content_length = 0;
        if (len > 0 && len < (int)sizeof(value) &&
            lws_hdr_copy(wsi, value, sizeof(value), WSI_TOKEN_HTTP_CONTENT_LENGTH) >= 0) {
            content_length = strtoll(value, NULL, 10);
        }
        if (content_length > REST_MAX_BODY_BYTES) {
            req->is_close_after = true;
            char text[96];
            snprintf(text, sizeof(text), "the body is larger than %d bytes", REST_MAX_BODY_BYTES);
            respond_error(req, HEROLD_E_TOO_LARGE, text);
            return req;
        }
        if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
            /* libwebsockets 4.1 does not decode chunked request bodies: ask for a length. */
            req->is_close_after = true;
            respond_error(req, HEROLD_E_LENGTH_REQUIRED,
                          "Content-Length is required; chunked bodies are not accepted");
            return req;
        }
        if (content_length > 0) {
            return req; /* the body follows */
        }
    }
    handle(req);
    return req;
}

int rest_request_body(rest_request_t *req, const void *data, size_t len)
{
    if (req->is_answered || req->is_body_too_large || len == 0) {
        return 0;
    }
    if (req->body_len + len > REST_MAX_BODY_BYTES) {
        req->is_body_too_large = true;
        req->is_close_after = true;
        char text[96];
        snprintf(text, sizeof(text), "the body is larger than %d bytes", REST_MAX_BODY_BYTES);
        return respond_error(req, HEROLD_E_TOO_LARGE, text);
    }
    req->body = xrealloc(req->body, req->body_len + len + 1);
    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    return 0;
}

int rest_request_body_complete(rest_request_t *req)
{
    if (req->is_answered || req->is_handled) {
        return 0;
    }
    return handle(req);
}

enum rest_write_result rest_request_writeable(rest_request_t *req)
{
    if (!req->is_answered || req->pending_id != 0) {
        return REST_WRITE_MORE;
    }
    if (!req->are_headers_sent) {
        if (write_headers(req, req->status, req->response_len) != 0) {
            return REST_WRITE_CLOSE;
        }
        req->are_headers_sent = true;
        if (req->response_len > 0) {
            lws_callback_on_writable(req->wsi);
            return REST_WRITE_MORE;
        }
    } else if (req->response_len > 0) {
        unsigned char *buf = xmalloc(LWS_PRE + req->response_len);
        memcpy(buf + LWS_PRE, req->response, req->response_len);
        int written = lws_write(req->wsi, buf + LWS_PRE, req->response_len, LWS_WRITE_HTTP_FINAL);
        free(buf);
        if (written < (int)req->response_len) {
            return REST_WRITE_CLOSE;
        }
    }
    return req->is_close_after ? REST_WRITE_CLOSE : REST_WRITE_DONE;
}

void rest_request_closed(rest_request_t *req)
{
    if (req == NULL) {
        return;
    }
    rest_t *rest = req->rest;
    for (size_t i = 0; i < rest->pending_count; i++) {
        if (rest->pending[i].request == req) {
            rest->pending[i] = rest->pending[--rest->pending_count];
            break;
        }
    }
    for (size_t i = 0; req->is_writing && i < rest->write_count; i++) {
        if (rest->writes[i].request == req) {
            rest->writes[i].request = NULL; /* the change is applied all the same */
        }
    }
    for (size_t i = 0; req->is_parked && i < rest->parked_count; i++) {
        if (rest->parked[i] == req) {
            memmove(&rest->parked[i], &rest->parked[i + 1],
                    (--rest->parked_count - i) * sizeof(*rest->parked));
            break;
        }
    }
    auth_principal_free(req->principal);
    change_free(req->change);
    free(req->body);
    free(req->response);
    free(req);
}

static void validation_answered(rest_t *rest, const webhook_result_t *result)
{
    rest_request_t *req = NULL;
    for (size_t i = 0; i < rest->pending_count; i++) {
        if (rest->pending[i].id == result->request_id) {
            req = rest->pending[i].request;
            rest->pending[i] = rest->pending[--rest->pending_count];
            break;
        }
    }
    if (req == NULL) {
        return; /* the client went away */
    }
    req->pending_id = 0;
    if (result->code != 0) {
        log_msg(LOG_LEVEL_INFO, "rest: validation failed: %s", result->message);
        respond_error(req, result->code, result->message);
        return;
    }
    req->change->next_validation++;
    continue_change(req);
}

void rest_sweep(rest_t *rest)
{
    if (rest->config.pages != NULL) {
        ratelimit_sweep(rest->config.pages, clock_monotonic_ms());
    }
}

void rest_drain_results(rest_t *rest)
{
    store_write_t *writes[64];
    size_t write_count;
    while ((write_count = store_writer_take_done(rest->writer, writes, 64)) > 0) {
        for (size_t i = 0; i < write_count; i++) {
            if (writes[i]->tag != 0) {
                store_answered(rest, writes[i]);
            } else {
                dispatch_store_written(rest->dispatch, writes[i]);
            }
            store_write_free(writes[i]);
        }
    }
    void *items[64];
    size_t count;
    while ((count = chan_drain(rest->results, items, 64)) > 0) {
        for (size_t i = 0; i < count; i++) {
            webhook_result_t *result = items[i];
            if (result->kind == WEBHOOK_RESULT_VALIDATED) {
                validation_answered(rest, result);
            } else if (result->kind == WEBHOOK_RESULT_WANT) {
                dispatch_webhook_want(rest->dispatch, result->subscription_id, result->seq);
            } else if (result->kind == WEBHOOK_RESULT_POSITIONS) {
                dispatch_webhook_positions(rest->dispatch, result);
            } else if (result->kind == WEBHOOK_RESULT_GONE) {
                sub_t *sub = subs_find(rest->subs, result->subscription_id);
                if (sub != NULL) {
                    log_msg(LOG_LEVEL_INFO, "rest: subscription %s removed: endpoint answered 410",
                            SUBS_ID_TEXT(sub));
                    dispatch_remove_subscription(rest->dispatch, sub);
                }
            }
            webhook_result_free(result);
        }
    }
}
