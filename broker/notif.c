#include "notif.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mem.h"
#include "path.h"

static const char item_open[] = "{\"id\":\"";
static const char item_subscription[] = "\",\"subscriptionId\":\"";
static const char item_expiration[] = "\",\"subscriptionExpirationDateTime\":\"";
static const char item_client_state[] = "\",\"clientState\":";
static const char item_head_end[] = "\",";

#define LIT_LEN(s) (sizeof(s) - 1)

void notif_format_time_ms(int64_t ms, char *out, size_t cap)
{
    time_t seconds = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

void notif_format_graph_time(int64_t seconds, char *out, size_t cap)
{
    time_t t = (time_t)seconds;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.0000000Z", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static json_t *json_from_view(hstr_t view)
{
    /* Every view reaching here passed event_decode's UTF-8 check. */
    json_t *value = json_stringn(view.p, view.len);
    assert(value != NULL);
    return value;
}

/* The members of item as text without the outer braces. Caller frees. */
static char *encode_members(const json_t *item, size_t *len)
{
    char *text = json_dumps(item, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        fprintf(stderr, "herold: out of memory encoding a notification\n");
        abort();
    }
    size_t text_len = strlen(text);
    assert(text_len >= 2 && text[0] == '{' && text[text_len - 1] == '}');
    memmove(text, text + 1, text_len - 2);
    text[text_len - 2] = '\0';
    *len = text_len - 2;
    return text;
}

notif_t *notif_new(const event_t *event)
{
    char type_name[160];
    char event_time[32];
    json_t *item = json_object();
    json_t *resource_data = json_object();

    if (event->kind.len > 0) {
        snprintf(type_name, sizeof(type_name), "#herold.%.*s", (int)event->kind.len, event->kind.p);
    } else {
        snprintf(type_name, sizeof(type_name), "#herold.resource");
    }
    json_object_set_new(resource_data, "@odata.type", json_string(type_name));
    json_object_set_new(resource_data, "@odata.id", json_from_view(event->resource));
    json_object_set_new(resource_data, "id",
                        json_from_view(path_last_segment(&event->resource_path)));

    json_object_set_new(item, "changeType", json_string(event_change_name(event->type)));
    json_object_set_new(item, "resource", json_from_view(event->resource));
    json_object_set_new(item, "resourceData", resource_data);
    if (event->tenant.len > 0) {
        json_object_set_new(item, "tenantId", json_from_view(event->tenant));
    }
    if (event->has_previous) {
        json_object_set_new(item, "previousResource", json_from_view(event->previous));
    }
    if (event->actor.len > 0) {
        json_object_set_new(item, "actor", json_from_view(event->actor));
    }
    notif_format_time_ms(event->time_ms, event_time, sizeof(event_time));
    json_object_set_new(item, "eventTime", json_string(event_time));

    size_t members_len;
    char *members = encode_members(item, &members_len);
    notif_t *notif = xmalloc(sizeof(*notif) + members_len + 1);
    atomic_init(&notif->refcount, 1);
    notif->seq = event->seq;
    notif->members_len = members_len;
    memcpy(notif->members, members, members_len + 1);
    free(members);
    notif->rich_members = NULL;
    notif->rich_members_len = 0;

    json_t *data = event_data_json(event);
    if (data != NULL) {
        const char *key;
        json_t *value;
        json_object_foreach(data, key, value)
        {
            if (json_object_get(resource_data, key) == NULL) {
                json_object_set(resource_data, key, value);
            }
        }
        json_decref(data);
        notif->rich_members = encode_members(item, &notif->rich_members_len);
    }
    json_decref(item);
    return notif;
}

notif_t *notif_ref(notif_t *notif)
{
    atomic_fetch_add_explicit(&notif->refcount, 1, memory_order_relaxed);
    return notif;
}

void notif_release(notif_t *notif)
{
    if (notif != NULL &&
        atomic_fetch_sub_explicit(&notif->refcount, 1, memory_order_acq_rel) == 1) {
        free(notif->rich_members);
        free(notif);
    }
}

static bool is_rich(const notif_t *notif, const notif_item_head_t *head)
{
    return head->include_resource_data && notif->rich_members != NULL;
}

/* The seq part of the item id, in decimal. */
static size_t format_seq(const notif_t *notif, char *out)
{
    return (size_t)snprintf(out, 24, "%" PRIu64, notif->seq);
}

size_t notif_item_length(const notif_t *notif, const notif_item_head_t *head)
{
    char seq[24];
    size_t len = LIT_LEN(item_open) + strlen(head->subscription_id) + 1 + format_seq(notif, seq) +
                 LIT_LEN(item_subscription) + strlen(head->subscription_id) +
                 LIT_LEN(item_expiration) + strlen(head->expiration);
    if (head->client_state_json != NULL) {
        len += LIT_LEN(item_client_state) + strlen(head->client_state_json) + 1;
    } else {
        len += LIT_LEN(item_head_end);
    }
    return len + (is_rich(notif, head) ? notif->rich_members_len : notif->members_len) + 1;
}

static char *append(char *out, const char *p, size_t len)
{
    memcpy(out, p, len);
    return out + len;
}

size_t notif_item_write(const notif_t *notif, const notif_item_head_t *head, char *out)
{
    char seq[24];
    size_t seq_len = format_seq(notif, seq);
    char *p = out;
    p = append(p, item_open, LIT_LEN(item_open));
    p = append(p, head->subscription_id, strlen(head->subscription_id));
    *p++ = '-';
    p = append(p, seq, seq_len);
    p = append(p, item_subscription, LIT_LEN(item_subscription));
    p = append(p, head->subscription_id, strlen(head->subscription_id));
    p = append(p, item_expiration, LIT_LEN(item_expiration));
    p = append(p, head->expiration, strlen(head->expiration));
    if (head->client_state_json != NULL) {
        p = append(p, item_client_state, LIT_LEN(item_client_state));
        p = append(p, head->client_state_json, strlen(head->client_state_json));
        *p++ = ',';
    } else {
        p = append(p, item_head_end, LIT_LEN(item_head_end));
    }
    if (is_rich(notif, head)) {
        p = append(p, notif->rich_members, notif->rich_members_len);
    } else {
        p = append(p, notif->members, notif->members_len);
    }
    *p++ = '}';
    return (size_t)(p - out);
}

bool notif_cursor_parse(const char *text, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20) {
        return false;
    }
    uint64_t value = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') {
            return false;
        }
        unsigned digit = (unsigned)(text[i] - '0');
        if (value > (UINT64_MAX - digit) / 10) {
            return false;
        }
        value = value * 10 + digit;
    }
    *out = value;
    return true;
}
