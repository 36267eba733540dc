/*
 * Webhook delivery (see webhook.h for the contract).
 *
 * One thread drives a libcurl multi handle. Its loop: drain the command channel, fire the
 * timers that are due, let curl work (curl_multi_perform), act on finished transfers
 * (curl_multi_info_read), then sleep in curl_multi_poll until a socket is ready, the next
 * timer is due, or webhook_send wakes it (the command channel's wake callback calls
 * curl_multi_wakeup, which any thread may call).
 *
 * Every HTTP request is a `post`: a delivery batch, a lifecycle notification or a
 * validation. A post keeps what its retries need (URL, body, webhook-id, first attempt,
 * backoff) and owns an easy handle only while an attempt is in flight, so a failing
 * endpoint holds no socket while it backs off.
 *
 * Targets live in a chained hash map keyed by subscription id. A target is in one of four
 * states, read from its fields rather than stored:
 *   idle           no batch, empty queue, timer not armed;
 *   window         no batch, queue not empty, timer armed for the end of the batch window;
 *   in flight      batch != NULL and batch->easy != NULL;
 *   backing off    batch != NULL, no easy handle, timer armed for the next attempt.
 * A batch's body is built once from the queue (the notif references are released then),
 * so a retry sends exactly the same bytes under the same webhook-id; only the timestamp
 * and the signature are new for each attempt.
 *
 * Timers (batch windows, retries of batches and of lifecycle posts) sit in one binary
 * min-heap with their index stored in the timer, so arming, re-arming and disarming are
 * O(log n) with tens of thousands of targets. Request timeouts are curl's
 * (CURLOPT_TIMEOUT_MS); curl_multi_poll already shortens its sleep for them.
 *
 * Retry-After below one second (0, or a date already past) falls back to the normal
 * jittered backoff, so an endpoint cannot make this loop spin.
 *
 * Positions. A target is live (items come from dispatch as events arrive) or behind
 * (items come from the store, in chunks the target asks for). It goes behind when its
 * queue would overflow — the queue is dropped, nothing is lost, the items are still in
 * the store — or when it is created behind (after a restart). A behind target that is idle
 * (no batch, empty queue) sends one WANT result naming the seq it has taken up to; the
 * service thread answers with a REPLAY command; the chunk that reaches the end of the
 * store makes the target live again. Live items arriving for a behind target are dropped:
 * the service thread stops sending them when it starts a replay and reads them from the
 * store instead. The delivered position (what the store's cursor keeps) rises when a
 * batch succeeds, to the scanned end of a delivered replay chunk, and for a live idle
 * target to the seq of the last MARK (dispatch had sent every item up to it); all moved
 * positions go back in one POSITIONS result per MARK. After a 410 the target keeps no
 * queue and takes no more items until the service thread removes it.
 *
 * While stopping, nothing new starts (no timers, no validations, no lifecycle posts); items
 * still arriving are queued unsent, which keeps their target's position below them (see
 * commands_run). Transfers in flight get until the deadline, then everything is released on
 * this thread before it exits.
 */

#include "webhook.h"

#include <arpa/inet.h>
#include <assert.h>
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "hash.h"
#include "heap.h"
#include "mem.h"
#include "thread.h"

#define COMMAND_CAPACITY 65536
#define COMMAND_DRAIN_BATCH 256
/* Commands handled per loop turn, so that a flood of them cannot starve transfers. */
#define COMMAND_TURN_MAX 4096
#define POLL_MAX_MS 10000
#define MULTI_MAX_HOST_CONNECTIONS 8
#define MULTI_MAX_CONNECTS 256
#define LIFECYCLE_MAX_ATTEMPTS 4 /* the first try and three retries */
#define MSG_ID_RANDOM_BYTES 16
#define MSG_ID_BYTES (4 + 2 * MSG_ID_RANDOM_BYTES + 1)
#define TOKEN_RANDOM_BYTES 32
#define TOKEN_BYTES (2 * TOKEN_RANDOM_BYTES + 1)
#define SIGNATURE_BYTES 64
#define TIMER_IDLE SIZE_MAX
#define TARGET_MAP_MIN_BUCKETS 64

static const char batch_open[] = "{\"value\":[";
static const char batch_close[] = "]}";

#define LIT_LEN(s) (sizeof(s) - 1)

/* ---- timers ---------------------------------------------------------------------------- */

typedef struct wtimer {
    int64_t due_ms;    /* CLOCK_MONOTONIC */
    size_t heap_index; /* TIMER_IDLE while not armed */
    bool is_post;      /* owner is a post_t (lifecycle retry), else a target_t */
    void *owner;
} wtimer_t;

static int64_t timer_key(const void *item)
{
    return ((const wtimer_t *)item)->due_ms;
}

static void timer_place(void *item, size_t slot)
{
    ((wtimer_t *)item)->heap_index = slot;
}

static void timer_init(wtimer_t *timer, bool is_post, void *owner)
{
    timer->due_ms = 0;
    timer->heap_index = TIMER_IDLE;
    timer->is_post = is_post;
    timer->owner = owner;
}

static bool timer_is_armed(const wtimer_t *timer)
{
    return timer->heap_index != TIMER_IDLE;
}

static void timer_arm(heap_t *heap, wtimer_t *timer, int64_t due_ms)
{
    timer->due_ms = due_ms;
    if (timer_is_armed(timer)) {
        heap_rekey(heap, timer->heap_index);
    } else {
        heap_push(heap, timer);
    }
}

static void timer_disarm(heap_t *heap, wtimer_t *timer)
{
    if (timer_is_armed(timer)) {
        heap_remove(heap, timer->heap_index);
        timer->heap_index = TIMER_IDLE;
    }
}

/* ---- posts and targets ----------------------------------------------------------------- */

typedef enum post_kind {
    POST_DELIVERY,
    POST_LIFECYCLE,
    POST_VALIDATION,
} post_kind_t;

struct target;

typedef struct post {
    post_kind_t kind;
    webhook_t *webhook;
    struct post *prev; /* every live post, so that shutdown can release them */
    struct post *next;
    struct target *target; /* DELIVERY: the owner; NULL once the target was removed */
    char subscription_id[37];
    char *url;
    char *body;
    size_t body_len;
    size_t item_count; /* DELIVERY */
    uint64_t last_seq; /* DELIVERY: the highest seq among the items */
    char msg_id[MSG_ID_BYTES];
    unsigned char secret[WEBHOOK_SECRET_BYTES];
    int64_t first_attempt_ms;
    int attempt_count;
    int64_t delay_ms;            /* nominal backoff before the last retry; 0 before any */
    wtimer_t timer;              /* LIFECYCLE: next attempt */
    const char *lifecycle_event; /* LIFECYCLE (static) */
    uint64_t request_id;         /* VALIDATION */
    const char *url_name;        /* VALIDATION (static) */
    char token[TOKEN_BYTES];     /* VALIDATION */
    /* The attempt in flight. */
    CURL *easy;
    struct curl_slist *headers;
    char *response; /* VALIDATION: the first WEBHOOK_MAX_RESPONSE_BYTES of the body */
    size_t response_len;
    size_t response_total;
    bool was_refused;
    char refused_address[INET6_ADDRSTRLEN];
    char error_text[CURL_ERROR_SIZE];
} post_t;

typedef struct target {
    struct target *next; /* hash chain */
    webhook_target_spec_t spec;
    notif_t **queue; /* ring of queue_capacity slots */
    size_t queue_head;
    size_t queue_length;
    size_t queue_capacity;
    bool is_gone;   /* answered 410: nothing more is queued */
    bool is_behind; /* takes its items from REPLAY chunks, not from dispatch */
    bool is_want_sent;
    uint64_t position;          /* delivered up to here */
    uint64_t reported_position; /* as last sent in a POSITIONS result */
    uint64_t taken_seq;         /* the highest seq taken into a batch */
    uint64_t replay_seq;        /* behind: the store was read up to here */
    post_t *batch;              /* in flight or backing off */
    wtimer_t timer;             /* end of the batch window, or the batch's next attempt */
} target_t;

typedef struct target_map {
    target_t **buckets;
    size_t bucket_count; /* a power of two */
    size_t count;
} target_map_t;

struct webhook {
    webhook_config_t config;
    chan_t *results;
    chan_t *commands;
    CURLM *multi;
    pthread_t thread;
    bool is_started;
    atomic_bool stop_requested;
    atomic_int stop_deadline_ms;
    /* Delivery thread only. */
    target_map_t targets;
    heap_t timers;
    post_t *posts;
    size_t in_flight;
    uint64_t mark_seq;                 /* the last MARK */
    webhook_result_t *final_positions; /* made as the thread ends */
    bool is_stopping;
    int64_t stop_at_ms;
};

/* ---- small helpers --------------------------------------------------------------------- */

static void random_bytes(unsigned char *out, size_t len)
{
    if (RAND_bytes(out, (int)len) != 1) {
        /* Without randomness there are no safe secrets, ids or tokens. */
        log_msg(LOG_LEVEL_ERROR, "webhook: RAND_bytes failed");
        abort();
    }
}

/* A uniformly distributed value in [lo, hi]. */
static int64_t random_between(int64_t lo, int64_t hi)
{
    if (hi <= lo) {
        return lo;
    }
    uint64_t r;
    random_bytes((unsigned char *)&r, sizeof(r));
    return lo + (int64_t)(r % (uint64_t)(hi - lo + 1));
}

static void hex_encode(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

static void msg_id_new(char out[MSG_ID_BYTES])
{
    unsigned char raw[MSG_ID_RANDOM_BYTES];
    random_bytes(raw, sizeof(raw));
    memcpy(out, "msg_", 4);
    hex_encode(raw, sizeof(raw), out + 4);
}

static void spec_clear(webhook_target_spec_t *spec)
{
    free(spec->notification_url);
    free(spec->lifecycle_url);
    free(spec->client_state_json);
    free(spec->tenant_id);
    spec->notification_url = NULL;
    spec->lifecycle_url = NULL;
    spec->client_state_json = NULL;
    spec->tenant_id = NULL;
}

/* Moves the spec's strings from src to dst (dst must hold none). */
static void spec_move(webhook_target_spec_t *dst, webhook_target_spec_t *src)
{
    *dst = *src;
    src->notification_url = NULL;
    src->lifecycle_url = NULL;
    src->client_state_json = NULL;
    src->tenant_id = NULL;
}

static void result_push(webhook_t *webhook, webhook_result_t *result)
{
    if (!chan_push(webhook->results, result)) {
        webhook_result_free(result);
    }
}

/* ---- the target map -------------------------------------------------------------------- */

static size_t id_hash(const char *id)
{
    uint64_t hash = hash_cstr(id);
    return (size_t)(hash ^ (hash >> 32));
}

static target_t *map_find(const target_map_t *map, const char *id)
{
    if (map->bucket_count == 0) {
        return NULL;
    }
    target_t *t = map->buckets[id_hash(id) & (map->bucket_count - 1)];
    while (t != NULL && strcmp(t->spec.subscription_id, id) != 0) {
        t = t->next;
    }
    return t;
}

static void map_insert(target_map_t *map, target_t *target)
{
    if (map->count >= map->bucket_count) {
        size_t count = map->bucket_count == 0 ? TARGET_MAP_MIN_BUCKETS : map->bucket_count * 2;
        target_t **buckets = xcalloc(count, sizeof(*buckets));
        for (size_t i = 0; i < map->bucket_count; i++) {
            target_t *t = map->buckets[i];
            while (t != NULL) {
                target_t *next = t->next;
                size_t b = id_hash(t->spec.subscription_id) & (count - 1);
                t->next = buckets[b];
                buckets[b] = t;
                t = next;
            }
        }
        free(map->buckets);
        map->buckets = buckets;
        map->bucket_count = count;
    }
    size_t b = id_hash(target->spec.subscription_id) & (map->bucket_count - 1);
    target->next = map->buckets[b];
    map->buckets[b] = target;
    map->count++;
}

static target_t *map_take(target_map_t *map, const char *id)
{
    if (map->bucket_count == 0) {
        return NULL;
    }
    target_t **link = &map->buckets[id_hash(id) & (map->bucket_count - 1)];
    while (*link != NULL && strcmp((*link)->spec.subscription_id, id) != 0) {
        link = &(*link)->next;
    }
    target_t *t = *link;
    if (t != NULL) {
        *link = t->next;
        t->next = NULL;
        map->count--;
    }
    return t;
}

/* ---- the target queue ------------------------------------------------------------------ */

static notif_t *queue_pop(target_t *t)
{
    assert(t->queue_length > 0);
    notif_t *notif = t->queue[t->queue_head];
    t->queue_head = (t->queue_head + 1) % t->queue_capacity;
    t->queue_length--;
    return notif;
}

static void queue_push(target_t *t, notif_t *notif)
{
    if (t->queue_length == t->queue_capacity) {
        size_t capacity = t->queue_capacity == 0 ? 16 : t->queue_capacity * 2;
        if (capacity > WEBHOOK_MAX_QUEUED_ITEMS) {
            capacity = WEBHOOK_MAX_QUEUED_ITEMS;
        }
        notif_t **queue = xmalloc(capacity * sizeof(*queue));
        for (size_t i = 0; i < t->queue_length; i++) {
            queue[i] = t->queue[(t->queue_head + i) % t->queue_capacity];
        }
        free(t->queue);
        t->queue = queue;
        t->queue_capacity = capacity;
        t->queue_head = 0;
    }
    t->queue[(t->queue_head + t->queue_length) % t->queue_capacity] = notif;
    t->queue_length++;
}

static void queue_clear(target_t *t)
{
    while (t->queue_length > 0) {
        notif_release(queue_pop(t));
    }
    free(t->queue);
    t->queue = NULL;
    t->queue_capacity = 0;
    t->queue_head = 0;
}

/* ---- posts ----------------------------------------------------------------------------- */

static post_t *post_new(webhook_t *webhook, post_kind_t kind)
{
    post_t *p = xcalloc(1, sizeof(*p));
    p->kind = kind;
    p->webhook = webhook;
    timer_init(&p->timer, true, p);
    p->next = webhook->posts;
    if (webhook->posts != NULL) {
        webhook->posts->prev = p;
    }
    webhook->posts = p;
    return p;
}

/* Ends the attempt in flight, if any: curl gives the easy handle back first. */
static void post_release_easy(webhook_t *webhook, post_t *p)
{
    if (p->easy != NULL) {
        curl_multi_remove_handle(webhook->multi, p->easy);
        curl_easy_cleanup(p->easy);
        p->easy = NULL;
        webhook->in_flight--;
    }
    curl_slist_free_all(p->headers);
    p->headers = NULL;
}

static void post_free(webhook_t *webhook, post_t *p)
{
    post_release_easy(webhook, p);
    timer_disarm(&webhook->timers, &p->timer);
    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else {
        webhook->posts = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
    if (p->target != NULL && p->target->batch == p) {
        p->target->batch = NULL;
    }
    free(p->url);
    free(p->body);
    free(p->response);
    free(p);
}

static curl_socket_t on_open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *address)
{
    post_t *p = ctx;
    (void)purpose;
    if (!p->webhook->config.allow_private &&
        webhook_address_is_private(&address->addr, address->addrlen)) {
        const void *raw = NULL;
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;
        if (address->family == AF_INET && address->addrlen >= sizeof(sin)) {
            memcpy(&sin, &address->addr, sizeof(sin));
            raw = &sin.sin_addr;
        } else if (address->family == AF_INET6 && address->addrlen >= sizeof(sin6)) {
            memcpy(&sin6, &address->addr, sizeof(sin6));
            raw = &sin6.sin6_addr;
        }
        if (raw == NULL || inet_ntop(address->family, raw, p->refused_address,
                                     sizeof(p->refused_address)) == NULL) {
            snprintf(p->refused_address, sizeof(p->refused_address), "(family %d)",
                     address->family);
        }
        p->was_refused = true;
        log_msg(LOG_LEVEL_INFO,
                "webhook: refused to connect to %s for %s %s: private range "
                "(see --webhook-allow-private)",
                p->refused_address, p->kind == POST_VALIDATION ? "validation" : "subscription",
                p->kind == POST_VALIDATION ? "request" : p->subscription_id);
        return CURL_SOCKET_BAD;
    }
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

static size_t on_body(char *data, size_t size, size_t count, void *ctx)
{
    post_t *p = ctx;
    size_t len = size * count;
    if (p->response != NULL && p->response_len < WEBHOOK_MAX_RESPONSE_BYTES) {
        size_t room = WEBHOOK_MAX_RESPONSE_BYTES - p->response_len;
        size_t take = len < room ? len : room;
        memcpy(p->response + p->response_len, data, take);
        p->response_len += take;
    }
    p->response_total += len;
    /* Beyond the limit the body is read and dropped: refusing it would fail the request. */
    return len;
}

static bool headers_add(struct curl_slist **list, const char *line)
{
    struct curl_slist *next = curl_slist_append(*list, line);
    if (next == NULL) {
        return false;
    }
    *list = next;
    return true;
}

/* The headers of one attempt. Signed requests get a new timestamp and signature each time. */
static struct curl_slist *post_headers(const post_t *p)
{
    struct curl_slist *list = NULL;
    bool ok = headers_add(&list, "Expect:");
    if (p->kind == POST_VALIDATION) {
        ok = ok && headers_add(&list, "Content-Type: text/plain");
    } else {
        char line[128];
        char signature[SIGNATURE_BYTES];
        int64_t timestamp = (int64_t)time(NULL);
        webhook_sign(p->secret, p->msg_id, timestamp, p->body, p->body_len, signature,
                     sizeof(signature));
        ok = ok && headers_add(&list, "Content-Type: application/json");
        snprintf(line, sizeof(line), "webhook-id: %s", p->msg_id);
        ok = ok && headers_add(&list, line);
        snprintf(line, sizeof(line), "webhook-timestamp: %" PRId64, timestamp);
        ok = ok && headers_add(&list, line);
        snprintf(line, sizeof(line), "webhook-signature: %s", signature);
        ok = ok && headers_add(&list, line);
    }
    if (!ok) {
        curl_slist_free_all(list);
        return NULL;
    }
    return list;
}

static CURL *post_easy_new(webhook_t *webhook, post_t *p)
{
    CURL *easy = curl_easy_init();
    if (easy == NULL) {
        return NULL;
    }
    long timeout_ms = p->kind == POST_VALIDATION ? WEBHOOK_VALIDATION_TIMEOUT_MS
                                                 : webhook->config.request_timeout_ms;
    CURLcode rc = CURLE_OK;
#define SETOPT(option, value)                                                                      \
    do {                                                                                           \
        if (rc == CURLE_OK) {                                                                      \
            rc = curl_easy_setopt(easy, option, value);                                            \
        }                                                                                          \
    } while (0)
    SETOPT(CURLOPT_PRIVATE, p);
    SETOPT(CURLOPT_URL, p->url);
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    /* An empty proxy disables the *_proxy variables: the address check must see the
     * endpoint itself. */
    SETOPT(CURLOPT_PROXY, "");
    SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L);
    if (webhook->config.ca_file != NULL) {
        SETOPT(CURLOPT_CAINFO, webhook->config.ca_file);
    }
    SETOPT(CURLOPT_CAPATH, "/etc/ssl/certs");
    SETOPT(CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    SETOPT(CURLOPT_OPENSOCKETDATA, p);
    SETOPT(CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(CURLOPT_WRITEDATA, p);
    SETOPT(CURLOPT_ERRORBUFFER, p->error_text);
    SETOPT(CURLOPT_USERAGENT, "herold");
    SETOPT(CURLOPT_POST, 1L);
    SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->body_len);
    SETOPT(CURLOPT_POSTFIELDS, p->body != NULL ? p->body : "");
    SETOPT(CURLOPT_HTTPHEADER, p->headers);
#undef SETOPT
    if (rc != CURLE_OK) {
        snprintf(p->error_text, sizeof(p->error_text), "curl_easy_setopt: %s",
                 curl_easy_strerror(rc));
        curl_easy_cleanup(easy);
        return NULL;
    }
    return easy;
}

typedef struct outcome {
    CURLcode result;
    long status;
    int64_t retry_after_ms; /* -1: none */
} outcome_t;

static void post_done(webhook_t *webhook, post_t *p, const outcome_t *outcome, int64_t now);

/* Starts one attempt. A failure to start counts as a failed attempt. */
static void post_attempt(webhook_t *webhook, post_t *p, int64_t now)
{
    assert(p->easy == NULL);
    if (p->attempt_count++ == 0) {
        p->first_attempt_ms = now;
    }
    if (p->kind == POST_DELIVERY) {
        /* Retries follow a replaced spec: the current URL and secret. */
        free(p->url);
        p->url = xstrdup(p->target->spec.notification_url);
        memcpy(p->secret, p->target->spec.secret, sizeof(p->secret));
    }
    p->was_refused = false;
    p->error_text[0] = '\0';
    p->response_len = 0;
    p->response_total = 0;
    p->headers = post_headers(p);
    CURL *easy = p->headers != NULL ? post_easy_new(webhook, p) : NULL;
    if (easy != NULL) {
        CURLMcode mrc = curl_multi_add_handle(webhook->multi, easy);
        if (mrc == CURLM_OK) {
            p->easy = easy;
            webhook->in_flight++;
            return;
        }
        snprintf(p->error_text, sizeof(p->error_text), "curl_multi_add_handle: %s",
                 curl_multi_strerror(mrc));
        curl_easy_cleanup(easy);
    } else if (p->error_text[0] == '\0') {
        snprintf(p->error_text, sizeof(p->error_text), "cannot set up the request");
    }
    curl_slist_free_all(p->headers);
    p->headers = NULL;
    outcome_t outcome = {CURLE_FAILED_INIT, 0, -1};
    post_done(webhook, p, &outcome, now);
}

/* Describes a failed attempt for a log line (no URL, body or header values). */
static void outcome_describe(const post_t *p, const outcome_t *outcome, char *out, size_t cap)
{
    if (outcome->result == CURLE_OK) {
        snprintf(out, cap, "status %ld", outcome->status);
    } else if (p->was_refused) {
        snprintf(out, cap, "address %s is in a private range", p->refused_address);
    } else {
        snprintf(out, cap, "%s",
                 p->error_text[0] != '\0' ? p->error_text : curl_easy_strerror(outcome->result));
    }
}

/* The time of the next attempt: Retry-After when the endpoint gave one of at least a
 * second (bounded by WEBHOOK_MAX_RETRY_AFTER_MS), else jittered exponential backoff. */
static int64_t post_next_attempt(webhook_t *webhook, post_t *p, const outcome_t *outcome,
                                 int64_t now)
{
    const webhook_config_t *config = &webhook->config;
    int64_t nominal = p->delay_ms == 0 ? config->first_retry_ms : p->delay_ms * 2;
    if (nominal > config->max_retry_ms) {
        nominal = config->max_retry_ms;
    }
    p->delay_ms = nominal;
    if (outcome->retry_after_ms >= 1000) {
        int64_t wait = outcome->retry_after_ms;
        return now + (wait < WEBHOOK_MAX_RETRY_AFTER_MS ? wait : WEBHOOK_MAX_RETRY_AFTER_MS);
    }
    return now + random_between(nominal / 2, nominal);
}

/* ---- lifecycle notifications ----------------------------------------------------------- */

static char *lifecycle_body(const webhook_target_spec_t *spec, const char *event)
{
    json_t *item = json_object();
    json_object_set_new(item, "subscriptionId", json_string(spec->subscription_id));
    json_object_set_new(item, "subscriptionExpirationDateTime", json_string(spec->expiration));
    if (spec->tenant_id != NULL) {
        json_t *tenant = json_string(spec->tenant_id);
        if (tenant != NULL) {
            json_object_set_new(item, "tenantId", tenant);
        }
    }
    if (spec->client_state_json != NULL) {
        json_t *state = json_loads(spec->client_state_json, JSON_DECODE_ANY, NULL);
        if (state != NULL) {
            json_object_set_new(item, "clientState", state);
        }
    }
    json_object_set_new(item, "lifecycleEvent", json_string(event));
    json_t *value = json_array();
    json_array_append_new(value, item);
    json_t *root = json_object();
    json_object_set_new(root, "value", value);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    assert(text != NULL);
    return text;
}

/* Posts a lifecycle notification; independent of the target, which may be gone already. */
static void lifecycle_send(webhook_t *webhook, const webhook_target_spec_t *spec, const char *event,
                           int64_t now)
{
    if (spec->lifecycle_url == NULL || event == NULL || webhook->is_stopping) {
        return;
    }
    post_t *p = post_new(webhook, POST_LIFECYCLE);
    memcpy(p->subscription_id, spec->subscription_id, sizeof(p->subscription_id));
    p->subscription_id[sizeof(p->subscription_id) - 1] = '\0';
    p->url = xstrdup(spec->lifecycle_url);
    char *body = lifecycle_body(spec, event);
    p->body_len = strlen(body);
    p->body = xstrndup(body, p->body_len);
    free(body);
    msg_id_new(p->msg_id);
    memcpy(p->secret, spec->secret, sizeof(p->secret));
    p->lifecycle_event = event;
    post_attempt(webhook, p, now);
}

static void lifecycle_done(webhook_t *webhook, post_t *p, const outcome_t *outcome, int64_t now)
{
    if (outcome->result == CURLE_OK && outcome->status / 100 == 2) {
        log_msg(LOG_LEVEL_DEBUG, "webhook: lifecycle %s delivered for subscription %s",
                p->lifecycle_event, p->subscription_id);
        post_free(webhook, p);
        return;
    }
    int64_t at = p->attempt_count < LIFECYCLE_MAX_ATTEMPTS
                     ? post_next_attempt(webhook, p, outcome, now)
                     : -1;
    if (at < 0 || webhook->is_stopping) {
        char why[CURL_ERROR_SIZE + 64];
        outcome_describe(p, outcome, why, sizeof(why));
        log_msg(LOG_LEVEL_WARN,
                "webhook: gave up the lifecycle notification %s for subscription %s after %d "
                "attempts (%s)",
                p->lifecycle_event, p->subscription_id, p->attempt_count, why);
        post_free(webhook, p);
        return;
    }
    timer_arm(&webhook->timers, &p->timer, at);
}

/* ---- deliveries ------------------------------------------------------------------------ */

static void batch_start(webhook_t *webhook, target_t *t, int64_t now);

/* An idle target (no batch, empty queue) has delivered everything it took: a behind one
 * moves to the end of its last chunk and asks for the next; a live one moves to the last
 * MARK. */
static void target_idle(webhook_t *webhook, target_t *t)
{
    if (t->is_behind) {
        if (t->replay_seq > t->position) {
            t->position = t->replay_seq;
        }
        if (!t->is_want_sent && !webhook->is_stopping) {
            t->is_want_sent = true;
            webhook_result_t *result = xcalloc(1, sizeof(*result));
            result->kind = WEBHOOK_RESULT_WANT;
            memcpy(result->subscription_id, t->spec.subscription_id,
                   sizeof(result->subscription_id));
            result->seq = t->replay_seq > t->taken_seq ? t->replay_seq : t->taken_seq;
            result_push(webhook, result);
        }
    } else if (webhook->mark_seq > t->position) {
        t->position = webhook->mark_seq;
    }
}

/* Sends the next batch now when a full one is waiting, else after the batching window. */
static void target_schedule(webhook_t *webhook, target_t *t, int64_t now)
{
    if (t->batch != NULL || t->is_gone || webhook->is_stopping) {
        return;
    }
    if (t->queue_length == 0) {
        target_idle(webhook, t);
        return;
    }
    if (t->queue_length >= (size_t)webhook->config.max_batch_items) {
        timer_disarm(&webhook->timers, &t->timer);
        batch_start(webhook, t, now);
    } else if (!timer_is_armed(&t->timer)) {
        timer_arm(&webhook->timers, &t->timer, now + webhook->config.batch_window_ms);
    }
}

/* Takes up to max_batch_items from the queue into a new batch and sends it. */
static void batch_start(webhook_t *webhook, target_t *t, int64_t now)
{
    assert(t->batch == NULL && t->queue_length > 0);
    size_t count = t->queue_length;
    if (count > (size_t)webhook->config.max_batch_items) {
        count = (size_t)webhook->config.max_batch_items;
    }
    notif_item_head_t head = {t->spec.subscription_id, t->spec.expiration,
                              t->spec.client_state_json, t->spec.include_resource_data};
    size_t len = LIT_LEN(batch_open) + LIT_LEN(batch_close) + (count - 1);
    for (size_t i = 0; i < count; i++) {
        len += notif_item_length(t->queue[(t->queue_head + i) % t->queue_capacity], &head);
    }
    char *body = xmalloc(len + 1);
    size_t at = 0;
    memcpy(body, batch_open, LIT_LEN(batch_open));
    at += LIT_LEN(batch_open);
    uint64_t last_seq = 0;
    for (size_t i = 0; i < count; i++) {
        notif_t *notif = queue_pop(t);
        if (notif->seq > last_seq) {
            last_seq = notif->seq;
        }
        if (i > 0) {
            body[at++] = ',';
        }
        at += notif_item_write(notif, &head, body + at);
        notif_release(notif);
    }
    memcpy(body + at, batch_close, LIT_LEN(batch_close));
    at += LIT_LEN(batch_close);
    assert(at == len);
    body[len] = '\0';

    post_t *p = post_new(webhook, POST_DELIVERY);
    p->target = t;
    memcpy(p->subscription_id, t->spec.subscription_id, sizeof(p->subscription_id));
    p->subscription_id[sizeof(p->subscription_id) - 1] = '\0';
    p->body = body;
    p->body_len = len;
    p->item_count = count;
    p->last_seq = last_seq;
    if (last_seq > t->taken_seq) {
        t->taken_seq = last_seq;
    }
    msg_id_new(p->msg_id);
    t->batch = p;
    post_attempt(webhook, p, now);
}

static void delivery_done(webhook_t *webhook, post_t *p, const outcome_t *outcome, int64_t now)
{
    target_t *t = p->target;
    if (t == NULL) {
        /* The target was removed while this attempt was in flight. */
        post_free(webhook, p);
        return;
    }
    if (outcome->result == CURLE_OK && outcome->status / 100 == 2) {
        log_msg(LOG_LEVEL_DEBUG, "webhook: delivered %zu items to subscription %s (attempt %d)",
                p->item_count, t->spec.subscription_id, p->attempt_count);
        if (p->last_seq > t->position) {
            t->position = p->last_seq;
        }
        t->batch = NULL;
        post_free(webhook, p);
        target_schedule(webhook, t, now);
        return;
    }
    if (outcome->result == CURLE_OK && outcome->status == 410) {
        log_msg(LOG_LEVEL_INFO, "webhook: subscription %s: endpoint answered 410 Gone",
                t->spec.subscription_id);
        post_free(webhook, p);
        timer_disarm(&webhook->timers, &t->timer);
        queue_clear(t);
        t->is_gone = true;
        webhook_result_t *result = xcalloc(1, sizeof(*result));
        result->kind = WEBHOOK_RESULT_GONE;
        memcpy(result->subscription_id, t->spec.subscription_id, sizeof(result->subscription_id));
        result_push(webhook, result);
        return;
    }
    char why[CURL_ERROR_SIZE + 64];
    outcome_describe(p, outcome, why, sizeof(why));
    if (webhook->is_stopping) {
        /* No new attempts while stopping: the batch is released with the target. */
        log_msg(LOG_LEVEL_INFO, "webhook: subscription %s: attempt %d failed (%s) while stopping",
                t->spec.subscription_id, p->attempt_count, why);
        return;
    }
    int64_t at = post_next_attempt(webhook, p, outcome, now);
    if (p->attempt_count == 1 || p->attempt_count % 10 == 0) {
        log_msg(LOG_LEVEL_INFO, "webhook: subscription %s: attempt %d failed (%s); retrying",
                t->spec.subscription_id, p->attempt_count, why);
    }
    log_msg(LOG_LEVEL_DEBUG,
            "webhook: subscription %s: attempt %d failed (%s), next in %" PRId64 " ms",
            t->spec.subscription_id, p->attempt_count, why, at - now);
    timer_arm(&webhook->timers, &t->timer, at);
}

/* ---- validation ------------------------------------------------------------------------ */

static void validation_answer(webhook_t *webhook, uint64_t request_id, int code,
                              const char *message)
{
    webhook_result_t *result = xcalloc(1, sizeof(*result));
    result->kind = WEBHOOK_RESULT_VALIDATED;
    result->request_id = request_id;
    result->code = code;
    snprintf(result->message, sizeof(result->message), "%s", message);
    result_push(webhook, result);
}

static void validation_start(webhook_t *webhook, webhook_command_t *command, int64_t now)
{
    const char *name = command->url_name != NULL ? command->url_name : "notificationUrl";
    char message[HERR_MESSAGE_MAX];
    unsigned char raw[TOKEN_RANDOM_BYTES];
    char token[TOKEN_BYTES];
    random_bytes(raw, sizeof(raw));
    hex_encode(raw, sizeof(raw), token);

    /* CURLU appends with "?" or "&" as the URL needs and keeps a fragment in its place. */
    char query[sizeof("validationToken=") + TOKEN_BYTES];
    snprintf(query, sizeof(query), "validationToken=%s", token);
    CURLU *u = curl_url();
    char *full = NULL;
    CURLUcode urc = CURLUE_MALFORMED_INPUT;
    if (u != NULL && command->url != NULL) {
        urc = curl_url_set(u, CURLUPART_URL, command->url, 0);
        if (urc == CURLUE_OK) {
            urc = curl_url_set(u, CURLUPART_QUERY, query, CURLU_APPENDQUERY);
        }
        if (urc == CURLUE_OK) {
            urc = curl_url_get(u, CURLUPART_URL, &full, 0);
        }
    }
    curl_url_cleanup(u);
    if (urc != CURLUE_OK || full == NULL) {
        snprintf(message, sizeof(message), "%s validation: not a valid URL (%s)", name,
                 curl_url_strerror(urc));
        validation_answer(webhook, command->request_id, HEROLD_E_BAD_REQUEST, message);
        return;
    }
    post_t *p = post_new(webhook, POST_VALIDATION);
    p->url = xstrdup(full);
    curl_free(full);
    p->request_id = command->request_id;
    p->url_name = name;
    memcpy(p->token, token, sizeof(p->token));
    p->response = xmalloc(WEBHOOK_MAX_RESPONSE_BYTES);
    post_attempt(webhook, p, now);
}

static void validation_done(webhook_t *webhook, post_t *p, const outcome_t *outcome)
{
    char message[HERR_MESSAGE_MAX];
    int code = HEROLD_E_BAD_REQUEST;
    size_t token_len = strlen(p->token);
    if (outcome->result != CURLE_OK && p->was_refused) {
        snprintf(message, sizeof(message),
                 "%s validation: refused: address %s is in a private range "
                 "(see --webhook-allow-private)",
                 p->url_name, p->refused_address);
    } else if (outcome->result == CURLE_OPERATION_TIMEDOUT) {
        snprintf(message, sizeof(message), "%s validation: timed out after %d s", p->url_name,
                 WEBHOOK_VALIDATION_TIMEOUT_MS / 1000);
    } else if (outcome->result != CURLE_OK) {
        snprintf(message, sizeof(message), "%s validation: %.200s", p->url_name,
                 p->error_text[0] != '\0' ? p->error_text : curl_easy_strerror(outcome->result));
    } else if (outcome->status != 200) {
        snprintf(message, sizeof(message), "%s validation: endpoint answered %ld", p->url_name,
                 outcome->status);
    } else if (p->response_total != token_len || p->response_len != token_len ||
               memcmp(p->response, p->token, token_len) != 0) {
        snprintf(message, sizeof(message), "%s validation: body did not match the validationToken",
                 p->url_name);
    } else {
        code = 0;
        message[0] = '\0';
    }
    log_msg(LOG_LEVEL_DEBUG, "webhook: validation request %" PRIu64 ": %s", p->request_id,
            code == 0 ? "valid" : message);
    validation_answer(webhook, p->request_id, code, message);
    post_free(webhook, p);
}

/* ---- completions, commands, timers ----------------------------------------------------- */

static void post_done(webhook_t *webhook, post_t *p, const outcome_t *outcome, int64_t now)
{
    switch (p->kind) {
    case POST_DELIVERY:
        delivery_done(webhook, p, outcome, now);
        break;
    case POST_LIFECYCLE:
        lifecycle_done(webhook, p, outcome, now);
        break;
    case POST_VALIDATION:
        validation_done(webhook, p, outcome);
        break;
    }
}

/* Retry-After as delta-seconds or an HTTP date, in ms from now; -1 when absent or unreadable. */
static int64_t retry_after_ms(CURL *easy)
{
    struct curl_header *header = NULL;
    if (curl_easy_header(easy, "Retry-After", 0, CURLH_HEADER, -1, &header) != CURLHE_OK) {
        return -1;
    }
    const char *v = header->value;
    while (*v == ' ' || *v == '\t') {
        v++;
    }
    if (*v >= '0' && *v <= '9') {
        int64_t seconds = 0;
        for (; *v >= '0' && *v <= '9'; v++) {
            if (seconds < INT32_MAX) {
                seconds = seconds * 10 + (*v - '0');
            }
        }
        while (*v == ' ' || *v == '\t') {
            v++;
        }
        return *v == '\0' ? seconds * 1000 : -1;
    }
    time_t at = curl_getdate(v, NULL);
    if (at == (time_t)-1) {
        return -1;
    }
    int64_t delta = ((int64_t)at - (int64_t)time(NULL)) * 1000;
    return delta < 0 ? 0 : delta;
}

static void completions_read(webhook_t *webhook)
{
    CURLMsg *msg;
    int pending;
    while ((msg = curl_multi_info_read(webhook->multi, &pending)) != NULL) {
        if (msg->msg != CURLMSG_DONE) {
            continue;
        }
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        char *private = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &private);
        post_t *p = (post_t *)(void *)private;
        assert(p != NULL && p->easy == easy);
        outcome_t outcome = {result, 0, -1};
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &outcome.status);
        if (result == CURLE_OK && (outcome.status == 429 || outcome.status == 503)) {
            outcome.retry_after_ms = retry_after_ms(easy);
        }
        post_release_easy(webhook, p);
        post_done(webhook, p, &outcome, clock_monotonic_ms());
    }
}

static void target_free(webhook_t *webhook, target_t *t)
{
    timer_disarm(&webhook->timers, &t->timer);
    if (t->batch != NULL) {
        if (t->batch->easy != NULL) {
            /* Curl owns the handle until the transfer ends; its answer will be ignored. */
            t->batch->target = NULL;
            t->batch = NULL;
        } else {
            post_free(webhook, t->batch);
        }
    }
    queue_clear(t);
    spec_clear(&t->spec);
    free(t);
}

/* A live item from dispatch. A full queue sends the target behind: its items stay in the
 * store, and it will ask for them from the last one it took into a batch. */
static void target_enqueue(webhook_t *webhook, target_t *t, notif_t *notif, int64_t now)
{
    if (t->is_behind) {
        notif_release(notif);
        return;
    }
    if (t->queue_length == WEBHOOK_MAX_QUEUED_ITEMS) {
        log_msg(LOG_LEVEL_INFO,
                "webhook: subscription %s: more than %d items waiting; it will catch up from "
                "the store after seq %" PRIu64,
                t->spec.subscription_id, WEBHOOK_MAX_QUEUED_ITEMS, t->taken_seq);
        queue_clear(t);
        notif_release(notif);
        t->is_behind = true;
        t->is_want_sent = false;
        t->replay_seq = t->taken_seq;
        target_schedule(webhook, t, now);
        return;
    }
    queue_push(t, notif);
    target_schedule(webhook, t, now);
}

/* A chunk read from the store for a behind target. */
static void target_replay(webhook_t *webhook, target_t *t, webhook_command_t *c, int64_t now)
{
    if (!t->is_behind || !t->is_want_sent) {
        return; /* an answer to a WANT of a target that was replaced meanwhile */
    }
    for (size_t i = 0; i < c->notif_count; i++) {
        if (c->notifs[i]->seq > t->taken_seq) {
            queue_push(t, c->notifs[i]);
            c->notifs[i] = NULL;
        }
    }
    t->is_want_sent = false;
    if (c->scanned_seq > t->replay_seq) {
        t->replay_seq = c->scanned_seq;
    }
    if (c->is_at_end) {
        t->is_behind = false;
    }
    target_schedule(webhook, t, now);
}

/* Every live target that is idle has delivered everything up to seq; the moved positions
 * go back to the service thread in one result. */
/* A POSITIONS result with every position that moved since the last one, or NULL. */
static webhook_result_t *positions_moved(webhook_t *webhook)
{
    size_t moved = 0;
    for (size_t i = 0; i < webhook->targets.bucket_count; i++) {
        for (target_t *t = webhook->targets.buckets[i]; t != NULL; t = t->next) {
            moved += t->position != t->reported_position;
        }
    }
    if (moved == 0) {
        return NULL;
    }
    webhook_result_t *result = xcalloc(1, sizeof(*result));
    result->kind = WEBHOOK_RESULT_POSITIONS;
    result->positions = xcalloc(moved, sizeof(*result->positions));
    for (size_t i = 0; i < webhook->targets.bucket_count; i++) {
        for (target_t *t = webhook->targets.buckets[i]; t != NULL; t = t->next) {
            if (t->position != t->reported_position) {
                webhook_position_t *position = &result->positions[result->position_count++];
                memcpy(position->subscription_id, t->spec.subscription_id,
                       sizeof(position->subscription_id));
                position->seq = t->position;
                t->reported_position = t->position;
            }
        }
    }
    return result;
}

static void targets_mark(webhook_t *webhook, uint64_t seq)
{
    webhook->mark_seq = seq;
    for (size_t i = 0; i < webhook->targets.bucket_count; i++) {
        for (target_t *t = webhook->targets.buckets[i]; t != NULL; t = t->next) {
            if (!t->is_behind && t->batch == NULL && t->queue_length == 0 && seq > t->position) {
                t->position = seq;
            }
        }
    }
    webhook_result_t *result = positions_moved(webhook);
    if (result != NULL) {
        result_push(webhook, result);
    }
}

static void command_run(webhook_t *webhook, webhook_command_t *c, int64_t now)
{
    target_t *t;
    switch (c->kind) {
    case WEBHOOK_CMD_TARGET_PUT:
        if (c->spec.notification_url == NULL) {
            log_msg(LOG_LEVEL_ERROR, "webhook: TARGET_PUT for %s without a URL",
                    c->spec.subscription_id);
            break;
        }
        c->spec.subscription_id[sizeof(c->spec.subscription_id) - 1] = '\0';
        t = map_find(&webhook->targets, c->spec.subscription_id);
        if (t == NULL) {
            t = xcalloc(1, sizeof(*t));
            timer_init(&t->timer, false, t);
            t->position = c->spec.position;
            t->reported_position = c->spec.position;
            t->taken_seq = c->spec.position;
            t->replay_seq = c->spec.position;
            t->is_behind = c->spec.is_behind;
            spec_move(&t->spec, &c->spec);
            map_insert(&webhook->targets, t);
            target_schedule(webhook, t, now);
        } else {
            spec_clear(&t->spec);
            spec_move(&t->spec, &c->spec);
        }
        break;
    case WEBHOOK_CMD_TARGET_REMOVE:
        c->spec.subscription_id[sizeof(c->spec.subscription_id) - 1] = '\0';
        t = map_take(&webhook->targets, c->spec.subscription_id);
        if (t != NULL) {
            target_free(webhook, t);
        }
        break;
    case WEBHOOK_CMD_NOTIFY:
        c->spec.subscription_id[sizeof(c->spec.subscription_id) - 1] = '\0';
        t = map_find(&webhook->targets, c->spec.subscription_id);
        if (t != NULL && !t->is_gone && c->notif != NULL) {
            target_enqueue(webhook, t, c->notif, now);
            c->notif = NULL;
        }
        break;
    case WEBHOOK_CMD_REPLAY:
        c->spec.subscription_id[sizeof(c->spec.subscription_id) - 1] = '\0';
        t = map_find(&webhook->targets, c->spec.subscription_id);
        if (t != NULL && !t->is_gone) {
            target_replay(webhook, t, c, now);
        }
        break;
    case WEBHOOK_CMD_MARK:
        targets_mark(webhook, c->mark_seq);
        break;
    case WEBHOOK_CMD_VALIDATE:
        validation_start(webhook, c, now);
        break;
    case WEBHOOK_CMD_LIFECYCLE:
        c->spec.subscription_id[sizeof(c->spec.subscription_id) - 1] = '\0';
        lifecycle_send(webhook, &c->spec, c->lifecycle_event, now);
        break;
    }
    webhook_command_free(c);
}

/* Returns true when commands are left for the next turn. */
static bool commands_run(webhook_t *webhook)
{
    void *items[COMMAND_DRAIN_BATCH];
    size_t done = 0;
    while (done < COMMAND_TURN_MAX) {
        size_t count = chan_drain(webhook->commands, items, COMMAND_DRAIN_BATCH);
        if (count == 0) {
            return false;
        }
        int64_t now = clock_monotonic_ms();
        for (size_t i = 0; i < count; i++) {
            /* While stopping nothing new starts: a validation or a lifecycle notification is
             * released unsent. Every other command still runs. A MARK moves the positions of
             * idle targets, so that the final report covers them; the items of a NOTIFY or a
             * REPLAY are queued (target_schedule sends nothing now), so that their target is
             * not idle and that MARK cannot move it past them. Released instead, they would
             * be lost: the cursor would be stored beyond them. */
            webhook_command_t *c = items[i];
            if (webhook->is_stopping &&
                (c->kind == WEBHOOK_CMD_VALIDATE || c->kind == WEBHOOK_CMD_LIFECYCLE)) {
                webhook_command_free(c);
            } else {
                command_run(webhook, items[i], now);
            }
        }
        done += count;
    }
    return chan_length(webhook->commands) > 0;
}

static void timers_run(webhook_t *webhook, int64_t now)
{
    wtimer_t *timer;
    while ((timer = (wtimer_t *)heap_first(&webhook->timers)) != NULL && timer->due_ms <= now) {
        timer_disarm(&webhook->timers, timer);
        if (timer->is_post) {
            post_attempt(webhook, timer->owner, now);
            continue;
        }
        target_t *t = timer->owner;
        if (t->batch != NULL) {
            post_attempt(webhook, t->batch, now);
        } else if (t->queue_length > 0) {
            batch_start(webhook, t, now);
        }
    }
}

static void stop_begin(webhook_t *webhook, int64_t now)
{
    webhook->is_stopping = true;
    webhook->stop_at_ms = now + atomic_load(&webhook->stop_deadline_ms);
    /* No new attempts: empty the timer heap. */
    while (webhook->timers.count > 0) {
        timer_disarm(&webhook->timers, webhook->timers.items[0]);
    }
}

/* Runs on the delivery thread when it ends: every post, target and timer goes. */
static void state_release(webhook_t *webhook)
{
    while (webhook->posts != NULL) {
        post_free(webhook, webhook->posts);
    }
    for (size_t i = 0; i < webhook->targets.bucket_count; i++) {
        target_t *t = webhook->targets.buckets[i];
        while (t != NULL) {
            target_t *next = t->next;
            target_free(webhook, t);
            t = next;
        }
    }
    free(webhook->targets.buckets);
    memset(&webhook->targets, 0, sizeof(webhook->targets));
    heap_clear(&webhook->timers);
}

static void *webhook_main(void *arg)
{
    webhook_t *webhook = arg;
    for (;;) {
        if (!webhook->is_stopping && atomic_load(&webhook->stop_requested)) {
            stop_begin(webhook, clock_monotonic_ms());
        }
        bool has_more_commands = commands_run(webhook);
        int64_t now = clock_monotonic_ms();
        if (!webhook->is_stopping) {
            timers_run(webhook, now);
        }
        int running = 0;
        curl_multi_perform(webhook->multi, &running);
        completions_read(webhook);

        now = clock_monotonic_ms();
        if (webhook->is_stopping && (webhook->in_flight == 0 || now >= webhook->stop_at_ms)) {
            break;
        }
        int64_t timeout = POLL_MAX_MS;
        wtimer_t *next = webhook->is_stopping ? NULL : (wtimer_t *)heap_first(&webhook->timers);
        if (next != NULL && next->due_ms - now < timeout) {
            timeout = next->due_ms - now;
        }
        if (webhook->is_stopping && webhook->stop_at_ms - now < timeout) {
            timeout = webhook->stop_at_ms - now;
        }
        if (has_more_commands || timeout < 0) {
            timeout = 0;
        }
        curl_multi_poll(webhook->multi, NULL, 0, (int)timeout, NULL);
    }
    if (webhook->in_flight > 0) {
        log_msg(LOG_LEVEL_WARN, "webhook: stopping with %zu requests still in flight",
                webhook->in_flight);
    }
    /* What moved since the last report, for webhook_take_final_positions (the service
     * thread no longer drains results). */
    webhook->final_positions = positions_moved(webhook);
    state_release(webhook);
    return NULL;
}

/* ---- public API ------------------------------------------------------------------------ */

void webhook_config_init(webhook_config_t *config)
{
    memset(config, 0, sizeof(*config));
    config->max_batch_items = 100;
    config->batch_window_ms = 10;
    config->request_timeout_ms = 10000;
    config->first_retry_ms = 5000;
    config->max_retry_ms = 600000;
    config->allow_private = false;
    config->ca_file = NULL;
}

static void command_free_item(void *item)
{
    webhook_command_free(item);
}

static void wake_delivery(void *ctx)
{
    webhook_t *webhook = ctx;
    curl_multi_wakeup(webhook->multi);
}

webhook_t *webhook_new(const webhook_config_t *config, chan_t *results, struct herr *err)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK) {
        herr_set(err, HEROLD_E_SYSTEM, "webhook: curl_global_init failed: %s",
                 curl_easy_strerror(rc));
        return NULL;
    }
    CURLM *multi = curl_multi_init();
    if (multi == NULL) {
        curl_global_cleanup();
        herr_set(err, HEROLD_E_SYSTEM, "webhook: curl_multi_init failed");
        return NULL;
    }
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)MULTI_MAX_HOST_CONNECTIONS);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)MULTI_MAX_CONNECTS);

    webhook_t *webhook = xcalloc(1, sizeof(*webhook));
    webhook->timers = heap_make(timer_key, timer_place);
    webhook->config = *config;
    /* Nonsense values would make batches empty or retries spin. */
    if (webhook->config.max_batch_items < 1) {
        webhook->config.max_batch_items = 1;
    }
    if (webhook->config.batch_window_ms < 0) {
        webhook->config.batch_window_ms = 0;
    }
    if (webhook->config.request_timeout_ms < 1) {
        webhook->config.request_timeout_ms = 1;
    }
    if (webhook->config.first_retry_ms < 2) {
        webhook->config.first_retry_ms = 2;
    }
    if (webhook->config.max_retry_ms < webhook->config.first_retry_ms) {
        webhook->config.max_retry_ms = webhook->config.first_retry_ms;
    }
    webhook->results = results;
    webhook->multi = multi;
    webhook->commands = chan_new(COMMAND_CAPACITY, wake_delivery, webhook, command_free_item);
    atomic_init(&webhook->stop_requested, false);
    atomic_init(&webhook->stop_deadline_ms, 0);
    return webhook;
}

int webhook_start(webhook_t *webhook, struct herr *err)
{
    sigset_t all;
    sigset_t old;
    /* Signals belong to the main thread; curl's resolver threads inherit this mask too. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&webhook->thread, NULL, webhook_main, webhook);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        return herr_set(err, HEROLD_E_SYSTEM, "webhook: pthread_create failed: %s", strerror(rc));
    }
    thread_name(webhook->thread, "webhook");
    webhook->is_started = true;
    return 0;
}

static void commands_release(webhook_t *webhook)
{
    void *items[COMMAND_DRAIN_BATCH];
    size_t count;
    while ((count = chan_drain(webhook->commands, items, COMMAND_DRAIN_BATCH)) > 0) {
        for (size_t i = 0; i < count; i++) {
            webhook_command_free(items[i]);
        }
    }
}

void webhook_stop(webhook_t *webhook, int deadline_ms)
{
    /* Producers blocked on a full channel return now, and later sends are released. */
    chan_close(webhook->commands);
    if (webhook->is_started) {
        atomic_store(&webhook->stop_deadline_ms, deadline_ms < 0 ? 0 : deadline_ms);
        atomic_store(&webhook->stop_requested, true);
        curl_multi_wakeup(webhook->multi);
        pthread_join(webhook->thread, NULL);
        webhook->is_started = false;
    }
    commands_release(webhook);
}

void webhook_free(webhook_t *webhook)
{
    if (webhook == NULL) {
        return;
    }
    webhook_stop(webhook, 0);
    chan_free(webhook->commands);
    webhook_result_free(webhook->final_positions);
    curl_multi_cleanup(webhook->multi);
    curl_global_cleanup();
    free(webhook);
}

void webhook_send(webhook_t *webhook, webhook_command_t **command)
{
    webhook_command_t *c = *command;
    *command = NULL;
    if (c != NULL && !chan_push(webhook->commands, c)) {
        webhook_command_free(c);
    }
}

webhook_command_t *webhook_command_new(webhook_command_kind_t kind)
{
    webhook_command_t *c = xcalloc(1, sizeof(*c));
    c->kind = kind;
    return c;
}

void webhook_command_free(webhook_command_t *command)
{
    if (command == NULL) {
        return;
    }
    spec_clear(&command->spec);
    notif_release(command->notif);
    for (size_t i = 0; i < command->notif_count; i++) {
        notif_release(command->notifs[i]);
    }
    free(command->notifs);
    free(command->url);
    free(command);
}

webhook_result_t *webhook_take_final_positions(webhook_t *webhook)
{
    webhook_result_t *result = webhook->final_positions;
    webhook->final_positions = NULL;
    return result;
}

void webhook_result_free(webhook_result_t *result)
{
    if (result != NULL) {
        free(result->positions);
        free(result);
    }
}

/* ---- addresses and URLs ---------------------------------------------------------------- */

static bool ipv4_is_private(uint32_t a)
{
    static const struct {
        uint32_t net;
        int bits;
    } ranges[] = {
        {0x00000000u, 8},  /* 0.0.0.0/8: "this network"; 0.0.0.0 reaches the host */
        {0x0a000000u, 8},  /* 10/8 */
        {0x64400000u, 10}, /* 100.64/10: carrier-grade NAT */
        {0x7f000000u, 8},  /* 127/8: loopback */
        {0xa9fe0000u, 16}, /* 169.254/16: link-local, cloud metadata */
        {0xac100000u, 12}, /* 172.16/12 */
        {0xc0a80000u, 16}, /* 192.168/16 */
        {0xe0000000u, 4},  /* 224/4: multicast */
        {0xf0000000u, 4},  /* 240/4: reserved, and 255.255.255.255 */
    };
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        uint32_t mask = 0xffffffffu << (32 - ranges[i].bits);
        if ((a & mask) == ranges[i].net) {
            return true;
        }
    }
    return false;
}

static bool ipv6_is_private(const unsigned char b[16])
{
    static const unsigned char zeros[12] = {0};
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    /* ::/96 (with :: and ::1, which fall in 0.0.0.0/8), ::ffff:a.b.c.d and the NAT64
     * prefix 64:ff9b::/96 carry an IPv4 address: judge that one. */
    if (memcmp(b, zeros, 12) == 0 || memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0) {
        uint32_t a = ((uint32_t)b[12] << 24) | ((uint32_t)b[13] << 16) | ((uint32_t)b[14] << 8) |
                     (uint32_t)b[15];
        return ipv4_is_private(a);
    }
    if ((b[0] & 0xfe) == 0xfc) { /* fc00::/7: unique local */
        return true;
    }
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) { /* fe80::/10: link-local */
        return true;
    }
    return b[0] == 0xff; /* ff00::/8: multicast */
}

bool webhook_address_is_private(const void *sockaddr, size_t len)
{
    sa_family_t family;
    if (sockaddr == NULL || len < offsetof(struct sockaddr, sa_family) + sizeof(family)) {
        return true;
    }
    memcpy(&family, (const char *)sockaddr + offsetof(struct sockaddr, sa_family), sizeof(family));
    if (family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in sin;
        memcpy(&sin, sockaddr, sizeof(sin));
        return ipv4_is_private(ntohl(sin.sin_addr.s_addr));
    }
    if (family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, sockaddr, sizeof(sin6));
        return ipv6_is_private(sin6.sin6_addr.s6_addr);
    }
    /* Anything else (a short buffer, another family) is not a public internet address. */
    return true;
}

/* True for "localhost" and names under ".localhost" (RFC 6761), trailing dot or not. */
static bool host_is_localhost(const char *host)
{
    size_t len = strlen(host);
    if (len > 0 && host[len - 1] == '.') {
        len--;
    }
    static const char name[] = "localhost";
    size_t n = LIT_LEN(name);
    if (len < n || strncasecmp(host + len - n, name, n) != 0) {
        return false;
    }
    return len == n || host[len - n - 1] == '.';
}

int webhook_url_check_named(const char *name, const char *url, bool allow_private, struct herr *err)
{
    if (url == NULL || url[0] == '\0') {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "%s: empty", name);
    }
    if (strlen(url) > WEBHOOK_MAX_URL_BYTES) {
        return herr_set(err, HEROLD_E_BAD_REQUEST, "%s: longer than %d bytes", name,
                        WEBHOOK_MAX_URL_BYTES);
    }
    CURLU *u = curl_url();
    if (u == NULL) {
        return herr_set(err, HEROLD_E_INTERNAL, "%s: curl_url failed", name);
    }
    int rc = 0;
    char *scheme = NULL;
    char *part = NULL;
    char *host = NULL;
    CURLUcode urc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (urc == CURLUE_UNSUPPORTED_SCHEME || urc == CURLUE_BAD_SCHEME) {
        rc = herr_set(err, HEROLD_E_BAD_REQUEST, "%s: the scheme must be http or https", name);
        goto done;
    }
    if (urc == CURLUE_NO_HOST) {
        rc = herr_set(err, HEROLD_E_BAD_REQUEST, "%s: has no host", name);
        goto done;
    }
    if (urc != CURLUE_OK) {
        rc = herr_set(err, HEROLD_E_BAD_REQUEST, "%s: not a valid URL (%s)", name,
                      curl_url_strerror(urc));
        goto done;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        rc = herr_set(err, HEROLD_E_BAD_REQUEST, "%s: the scheme must be http or https", name);
        goto done;
    }
    if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK) {
        rc =
            herr_set(err, HEROLD_E_BAD_REQUEST, "%s: must not carry a user name or password", name);
        goto done;
    }
    /* curl reads "http:///x" as host "x"; herold does not guess. */
    const char *authority = strstr(url, "://");
    if (authority == NULL || authority[3] == '/' || authority[3] == '\\' ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
        rc = herr_set(err, HEROLD_E_BAD_REQUEST, "%s: has no host", name);
        goto done;
    }
    if (allow_private) {
        goto done;
    }
    if (host_is_localhost(host)) {
        rc = herr_set(err, HEROLD_E_FORBIDDEN,
                      "%s: host %s is loopback (see --webhook-allow-private)", name, host);
        goto done;
    }
    /* An IPv6 literal comes back in brackets; a zone id is a separate part. */
    char literal[INET6_ADDRSTRLEN + 2];
    size_t host_len = strlen(host);
    if (host[0] == '[' && host_len >= 2 && host[host_len - 1] == ']' &&
        host_len - 2 < sizeof(literal)) {
        memcpy(literal, host + 1, host_len - 2);
        literal[host_len - 2] = '\0';
    } else {
        /* A trailing dot ("127.0.0.1.") still names the address. */
        snprintf(literal, sizeof(literal), "%.*s",
                 (int)(host_len > 0 && host[host_len - 1] == '.' ? host_len - 1 : host_len), host);
    }
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    memset(&sin, 0, sizeof(sin));
    memset(&sin6, 0, sizeof(sin6));
    bool is_private = false;
    if (inet_pton(AF_INET, literal, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        is_private = webhook_address_is_private(&sin, sizeof(sin));
    } else if (inet_pton(AF_INET6, literal, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        is_private = webhook_address_is_private(&sin6, sizeof(sin6));
    }
    if (is_private) {
        rc = herr_set(err, HEROLD_E_FORBIDDEN,
                      "%s: address %s is in a private range (see --webhook-allow-private)", name,
                      literal);
    }
done:
    curl_free(scheme);
    curl_free(part);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

int webhook_url_check(const char *url, bool allow_private, struct herr *err)
{
    return webhook_url_check_named("notificationUrl", url, allow_private, err);
}

/* ---- secrets and signatures ------------------------------------------------------------ */

void webhook_secret_new(unsigned char secret[WEBHOOK_SECRET_BYTES], char *text, size_t cap)
{
    unsigned char b64[4 * ((WEBHOOK_SECRET_BYTES + 2) / 3) + 1];
    assert(cap >= sizeof("whsec_") + sizeof(b64) - 1);
    random_bytes(secret, WEBHOOK_SECRET_BYTES);
    EVP_EncodeBlock(b64, secret, WEBHOOK_SECRET_BYTES);
    snprintf(text, cap, "whsec_%s", (const char *)b64);
}

void webhook_sign_key(const unsigned char *key, size_t key_len, const char *id, int64_t timestamp,
                      const char *body, size_t body_len, char *out, size_t cap)
{
    char ts[24];
    int ts_len = snprintf(ts, sizeof(ts), "%" PRId64, timestamp);
    char digest_name[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end(),
    };
    unsigned char digest[EVP_MAX_MD_SIZE];
    size_t digest_len = 0;
    /* Incremental, so that a large batch body is not copied to be signed. */
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    bool ok = ctx != NULL && EVP_MAC_init(ctx, key, key_len, params) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)ts_len) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
              EVP_MAC_update(ctx, (const unsigned char *)body, body_len) == 1 &&
              EVP_MAC_final(ctx, digest, &digest_len, sizeof(digest)) == 1;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (!ok) {
        /* HMAC-SHA256 is always available in OpenSSL's default provider. */
        log_msg(LOG_LEVEL_ERROR, "webhook: HMAC-SHA256 failed");
        abort();
    }
    unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    EVP_EncodeBlock(b64, digest, (int)digest_len);
    snprintf(out, cap, "v1,%s", (const char *)b64);
}

void webhook_sign(const unsigned char secret[WEBHOOK_SECRET_BYTES], const char *id,
                  int64_t timestamp, const char *body, size_t body_len, char *out, size_t cap)
{
    webhook_sign_key(secret, WEBHOOK_SECRET_BYTES, id, timestamp, body, body_len, out, cap);
}
