#include "notif.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decimal.h"
#include "mem.h"
#include "path.h"

static const char item_open[] = "{\"id\":\"";
static const char item_subscription[] = "\",\"subscriptionId\":\"";
static const char item_expiration[] = "\",\"subscriptionExpirationDateTime\":\"";
static const char item_client_state[] = "\",\"clientState\":";
static const char item_head_end[] = "\",";

#define LIT_LEN(s) (sizeof(s) - 1)

/* "YYYY-MM-DDTHH:MM:SS" of a second, formatted once per second asked. Event times come in
 * order and expiries repeat (a session's subscriptions share their token's), so gmtime_r
 * and snprintf, 5 % of the service thread under load, run about once a second. Each
 * caller keeps its own cache, per thread: event times and expiries alternate on the
 * delivery path and would evict each other from a shared one. */
struct second_cache {
    int64_t seconds;
    size_t len;
    char text[80];
};

static const struct second_cache *second_text(struct second_cache *cache, int64_t seconds)
{
    if (seconds != cache->seconds || cache->len == 0) {
        time_t t = (time_t)seconds;
        struct tm tm;
        gmtime_r(&t, &tm);
        int len = snprintf(cache->text, sizeof(cache->text), "%04d-%02d-%02dT%02d:%02d:%02d",
                           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                           tm.tm_sec);
        cache->len = len > 0 ? (size_t)len : 0;
        cache->seconds = seconds;
    }
    return cache;
}

/* Writes the cached second and then suffix[0..suffix_len) into out[0..cap), cut to fit
 * and NUL-terminated as snprintf would (this runs once per notification item, where
 * snprintf itself was the larger part of the cost). */
static void put_second_and(const struct second_cache *second, const char *suffix, size_t suffix_len,
                           char *out, size_t cap)
{
    if (cap == 0) {
        return;
    }
    size_t len = second->len < cap - 1 ? second->len : cap - 1;
    memcpy(out, second->text, len);
    size_t rest = suffix_len < cap - 1 - len ? suffix_len : cap - 1 - len;
    memcpy(out + len, suffix, rest);
    out[len + rest] = '\0';
}

void notif_format_time_ms(int64_t ms, char *out, size_t cap)
{
    static _Thread_local struct second_cache cache;
    int64_t seconds = ms / 1000;
    int millis = (int)(ms % 1000);
    if (millis < 0) {
        seconds--;
        millis += 1000;
    }
    char suffix[5] = {'.', (char)('0' + millis / 100), (char)('0' + millis / 10 % 10),
                      (char)('0' + millis % 10), 'Z'};
    put_second_and(second_text(&cache, seconds), suffix, sizeof(suffix), out, cap);
}

void notif_format_graph_time(int64_t seconds, char *out, size_t cap)
{
    static _Thread_local struct second_cache cache;
    static const char suffix[] = ".0000000Z";
    put_second_and(second_text(&cache, seconds), suffix, LIT_LEN(suffix), out, cap);
}

/* ---- the shared members, written directly ----
 *
 * notif_new runs once per matched event on the dispatch path; building a jansson tree and
 * dumping it cost about 30 % of the service thread at 25k events/s (perf, W1 workload), so
 * the members are written here. The output is byte for byte what json_dumps with
 * JSON_COMPACT wrote: '"' and '\\' escaped, control characters as \b \f \n \r \t or
 * \u00XX, everything else (UTF-8 already validated by event_decode) copied. */

/* Text being built: in the caller's stack buffer while it fits, then on the heap. */
struct text {
    char *p;
    size_t len;
    size_t cap;
    char *stack; /* the initial buffer, not freed */
};

#define TEXT_STACK_BYTES 2048

static void text_init(struct text *t, char *stack, size_t cap)
{
    t->p = stack;
    t->len = 0;
    t->cap = cap;
    t->stack = stack;
}

static void text_free(struct text *t)
{
    if (t->p != t->stack) {
        free(t->p);
    }
}

static void text_reserve(struct text *t, size_t more)
{
    if (t->len + more > t->cap) {
        size_t cap = t->cap;
        while (cap < t->len + more) {
            cap *= 2;
        }
        if (t->p == t->stack) {
            char *heap = xmalloc(cap);
            memcpy(heap, t->p, t->len);
            t->p = heap;
        } else {
            t->p = xrealloc(t->p, cap);
        }
        t->cap = cap;
    }
}

static void text_put(struct text *t, const char *p, size_t len)
{
    text_reserve(t, len);
    memcpy(t->p + t->len, p, len);
    t->len += len;
}

#define TEXT_LIT(t, s) text_put((t), (s), LIT_LEN(s))

/* Appends p as a JSON string literal with its quotes. */
static void text_put_string(struct text *t, const char *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    text_reserve(t, len * 6 + 2);
    char *out = t->p + t->len;
    *out++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"':
        case '\\':
            *out++ = (char)c;
            break;
        case '\b':
            *out++ = 'b';
            break;
        case '\f':
            *out++ = 'f';
            break;
        case '\n':
            *out++ = 'n';
            break;
        case '\r':
            *out++ = 'r';
            break;
        case '\t':
            *out++ = 't';
            break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
            break;
        }
    }
    *out++ = '"';
    t->len = (size_t)(out - t->p);
}

static void text_put_view(struct text *t, hstr_t view)
{
    text_put_string(t, view.p, view.len);
}

/* Kept blocks are listed in an array of their own, not chained through their first bytes:
 * a block comes back after the frames holding it went out, often out of the cache by then,
 * and reading its link to take the next one stalled every notif_new (perf, W1). From the
 * array the next block is known without touching it, and is fetched for writing while the
 * text is composed (notif_pool_prefetch). */
struct notif_pool {
    size_t count;
    void **blocks; /* NOTIF_POOL_MAX of them, the last released on top; NULL: no pool */
};

static _Thread_local struct notif_pool pool;

void notif_pool_begin(void)
{
    pool.blocks = xmalloc(NOTIF_POOL_MAX * sizeof(*pool.blocks));
    pool.count = 0;
}

void notif_pool_end(void)
{
    while (pool.count > 0) {
        void *block = pool.blocks[--pool.count];
        MEM_UNPOISON(block, NOTIF_POOL_BLOCK_BYTES);
        free(block);
    }
    free(pool.blocks);
    pool.blocks = NULL;
}

/* The lines of the next block that a notification of a 200-byte event fills. */
#define NOTIF_PREFETCH_BYTES 640

static void notif_pool_prefetch(void)
{
    if (pool.count > 0) {
        const char *block = pool.blocks[pool.count - 1];
        for (size_t at = 0; at < NOTIF_PREFETCH_BYTES; at += 64) {
            __builtin_prefetch(block + at, 1);
        }
    }
}

static notif_t *notif_alloc(size_t size)
{
    if (pool.blocks == NULL || size > NOTIF_POOL_BLOCK_BYTES) {
        notif_t *notif = xmalloc(size);
        notif->is_pooled = false;
        return notif;
    }
    notif_t *notif;
    if (pool.count > 0) {
        notif = pool.blocks[--pool.count];
        MEM_UNPOISON(notif, NOTIF_POOL_BLOCK_BYTES);
    } else {
        notif = xmalloc(NOTIF_POOL_BLOCK_BYTES);
    }
    notif->is_pooled = true;
    return notif;
}

static void notif_dealloc(notif_t *notif)
{
    if (notif->is_pooled && pool.blocks != NULL && pool.count < NOTIF_POOL_MAX) {
        pool.blocks[pool.count++] = notif;
        MEM_POISON(notif, NOTIF_POOL_BLOCK_BYTES);
        return;
    }
    free(notif);
}

notif_t *notif_new(const event_t *event)
{
    char stack[TEXT_STACK_BYTES];
    struct text t;
    text_init(&t, stack, sizeof(stack));
    char event_time[32];
    notif_pool_prefetch();

    TEXT_LIT(&t, "\"changeType\":");
    const char *change = event_change_name(event->type);
    text_put_string(&t, change, strlen(change));
    TEXT_LIT(&t, ",\"resource\":");
    text_put_view(&t, event->resource);
    TEXT_LIT(&t, ",\"resourceData\":{\"@odata.type\":");
    if (event->kind.len > 0) {
        /* kind is A-Z a-z 0-9 _ . - only (event_decode), so it needs no escaping. */
        TEXT_LIT(&t, "\"#herold.");
        text_put(&t, event->kind.p, event->kind.len);
        TEXT_LIT(&t, "\"");
    } else {
        TEXT_LIT(&t, "\"#herold.resource\"");
    }
    TEXT_LIT(&t, ",\"@odata.id\":");
    text_put_view(&t, event->resource);
    TEXT_LIT(&t, ",\"id\":");
    text_put_view(&t, path_last_segment(&event->resource_path));
    size_t resource_data_end = t.len; /* where a rich form inserts the data members */
    TEXT_LIT(&t, "}");
    if (event->tenant.len > 0) {
        TEXT_LIT(&t, ",\"tenantId\":");
        text_put_view(&t, event->tenant);
    }
    if (event->has_previous) {
        TEXT_LIT(&t, ",\"previousResource\":");
        text_put_view(&t, event->previous);
    }
    if (event->actor.len > 0) {
        TEXT_LIT(&t, ",\"actor\":");
        text_put_view(&t, event->actor);
    }
    notif_format_time_ms(event->time_ms, event_time, sizeof(event_time));
    TEXT_LIT(&t, ",\"eventTime\":");
    text_put_string(&t, event_time, strlen(event_time));

    notif_t *notif = notif_alloc(sizeof(*notif) + t.len + 1 + event->data.len);
    atomic_init(&notif->refcount, 1);
    notif->local_refs = 0;
    atomic_init(&notif->rich, NULL);
    notif->seq = event->seq;
    notif->seq_len = decimal_u64(event->seq, notif->seq_text);
    notif->members_len = t.len;
    notif->resource_data_end = resource_data_end;
    memcpy(notif->members, t.p, t.len);
    notif->members[t.len] = '\0';
    notif->data_len = event->data.len;
    if (event->data.len > 0) {
        memcpy(notif->members + t.len + 1, event->data.p, event->data.len);
    }
    text_free(&t);
    return notif;
}

/* The rich form: the members with the data map's entries added to resourceData (never
 * overriding @odata.type, @odata.id or id). Built on first use by whichever thread needs
 * it; a thread that loses the race frees its copy. NULL when the event has no data. */
static const struct notif_rich *rich_form(const notif_t *shared)
{
    notif_t *notif = (notif_t *)shared; /* only the atomic cache is written */
    struct notif_rich *rich = atomic_load_explicit(&notif->rich, memory_order_acquire);
    if (rich != NULL || notif->data_len == 0) {
        return rich;
    }
    json_t *data = event_data_map_json(notif->members + notif->members_len + 1, notif->data_len);
    char stack[TEXT_STACK_BYTES];
    struct text t;
    text_init(&t, stack, sizeof(stack));
    text_put(&t, notif->members, notif->resource_data_end);
    if (data != NULL) {
        const char *key;
        json_t *value;
        json_object_foreach(data, key, value)
        {
            if (strcmp(key, "@odata.type") == 0 || strcmp(key, "@odata.id") == 0 ||
                strcmp(key, "id") == 0) {
                continue;
            }
            char *encoded = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
            if (encoded == NULL) {
                fprintf(stderr, "herold: out of memory encoding a notification\n");
                abort();
            }
            TEXT_LIT(&t, ",");
            text_put_string(&t, key, strlen(key));
            TEXT_LIT(&t, ":");
            text_put(&t, encoded, strlen(encoded));
            free(encoded);
        }
        json_decref(data);
    }
    text_put(&t, notif->members + notif->resource_data_end,
             notif->members_len - notif->resource_data_end);
    struct notif_rich *made = xmalloc(sizeof(*made) + t.len + 1);
    made->len = t.len;
    memcpy(made->text, t.p, t.len);
    made->text[t.len] = '\0';
    text_free(&t);
    struct notif_rich *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(&notif->rich, &expected, made,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        free(made);
        return expected;
    }
    return made;
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
        free(atomic_load_explicit(&notif->rich, memory_order_relaxed));
        notif_dealloc(notif);
    }
}

notif_t *notif_ref_local(notif_t *notif)
{
    if (notif->local_refs++ == 0) {
        notif_ref(notif); /* the local references' one */
    }
    return notif;
}

void notif_release_local(notif_t *notif)
{
    if (notif != NULL && --notif->local_refs == 0) {
        notif_release(notif);
    }
}

notif_t *notif_new_local(const event_t *event)
{
    notif_t *notif = notif_new(event);
    notif->local_refs = 1; /* its one reference stands for the local ones */
    return notif;
}

/* The members an item for head carries: the rich form when it asks for resource data and
 * the event has some. */
static void item_members(const notif_t *notif, const notif_item_head_t *head, const char **p,
                         size_t *len)
{
    const struct notif_rich *rich = head->include_resource_data ? rich_form(notif) : NULL;
    if (rich != NULL) {
        *p = rich->text;
        *len = rich->len;
    } else {
        *p = notif->members;
        *len = notif->members_len;
    }
}

size_t notif_item_length(const notif_t *notif, const notif_item_head_t *head)
{
    size_t len = LIT_LEN(item_open) + strlen(head->subscription_id) + 1 + notif->seq_len +
                 LIT_LEN(item_subscription) + strlen(head->subscription_id) +
                 LIT_LEN(item_expiration) + strlen(head->expiration);
    if (head->client_state_json != NULL) {
        len += LIT_LEN(item_client_state) + strlen(head->client_state_json) + 1;
    } else {
        len += LIT_LEN(item_head_end);
    }
    const char *members;
    size_t members_len;
    item_members(notif, head, &members, &members_len);
    return len + members_len + 1;
}

static char *append(char *out, const char *p, size_t len)
{
    memcpy(out, p, len);
    return out + len;
}

size_t notif_item_write(const notif_t *notif, const notif_item_head_t *head, char *out)
{
    char *p = out;
    p = append(p, item_open, LIT_LEN(item_open));
    p = append(p, head->subscription_id, strlen(head->subscription_id));
    *p++ = '-';
    p = append(p, notif->seq_text, notif->seq_len);
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
    const char *members;
    size_t members_len;
    item_members(notif, head, &members, &members_len);
    p = append(p, members, members_len);
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
