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

static const char item_head_id[] = "{\"subscriptionId\":\"";
static const char item_head_exp[] = "\",\"subscriptionExpirationDateTime\":\"";
static const char item_head_end[] = "\",";

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
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.0000000Z", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static json_t *json_from_view(hstr_t view)
{
    /* Every view reaching here passed event_decode's UTF-8 check. */
    json_t *value = json_stringn(view.p, view.len);
    assert(value != NULL);
    return value;
}

notif_t *notif_new(const event_t *event)
{
    char type_name[160];
    char event_time[32];
    json_t *item = json_object();
    json_t *resource_data = json_object();

    if (event->kind.len > 0) {
        snprintf(type_name, sizeof(type_name), "#herold.%.*s", (int)event->kind.len,
                 event->kind.p);
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

    char *text = json_dumps(item, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(item);
    if (text == NULL) {
        fprintf(stderr, "herold: out of memory encoding a notification\n");
        abort();
    }
    /* Strip the outer braces: the members are spliced after the per-subscription ones. */
    size_t text_len = strlen(text);
    assert(text_len >= 2 && text[0] == '{' && text[text_len - 1] == '}');
    size_t members_len = text_len - 2;
    notif_t *notif = xmalloc(sizeof(*notif) + members_len + 1);
    notif->refcount = 1;
    notif->seq = event->seq;
    notif->members_len = members_len;
    memcpy(notif->members, text + 1, members_len);
    notif->members[members_len] = '\0';
    free(text);
    return notif;
}

notif_t *notif_ref(notif_t *notif)
{
    notif->refcount++;
    return notif;
}

void notif_release(notif_t *notif)
{
    if (notif != NULL && --notif->refcount == 0) {
        free(notif);
    }
}

size_t notif_item_length(const notif_t *notif, const char *subscription_id,
                         const char *expiration)
{
    return sizeof(item_head_id) - 1 + strlen(subscription_id) + sizeof(item_head_exp) - 1 +
           strlen(expiration) + sizeof(item_head_end) - 1 + notif->members_len + 1;
}

static char *append(char *out, const char *p, size_t len)
{
    memcpy(out, p, len);
    return out + len;
}

size_t notif_item_write(const notif_t *notif, const char *subscription_id, const char *expiration,
                        char *out)
{
    char *p = out;
    p = append(p, item_head_id, sizeof(item_head_id) - 1);
    p = append(p, subscription_id, strlen(subscription_id));
    p = append(p, item_head_exp, sizeof(item_head_exp) - 1);
    p = append(p, expiration, strlen(expiration));
    p = append(p, item_head_end, sizeof(item_head_end) - 1);
    p = append(p, notif->members, notif->members_len);
    *p++ = '}';
    return (size_t)(p - out);
}
