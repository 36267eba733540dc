/*
 * bench/match: the matching core (subs + index + reader check) on one core, with a
 * realistic mix of subscriptions, at growing sizes, and beside unrelated ones.
 *
 *   build/bench/match [sizes]      sizes comma-separated, default 10000,100000,1000000
 *
 * The city's shape, scaled with N subscriptions:
 *   - users: N/5, in departments of 500; each user's principal (the token's user and
 *     groups) is made once and shared by all of the user's subscriptions, as a WebSocket
 *     session shares it: the department group and 0-18 project groups (1-20 principals);
 *   - 60 % subtree subscriptions on a person's own folders and calendars
 *     (/users/u<k>/files/f<m>, /users/u<k>/calendar);
 *   - 30 % on shared department folders (/dms/d<d>/cabinets/c<c>), 50-500 subscribers per
 *     folder, all from the department;
 *   - 10 % with a wildcard segment (/dms/d<d>/cabinets/ * /reports, /users/u<k>/ * /shared).
 * Events: a fixed pool of 4096 with 1-20 readers each: 55 % in someone's own folder or
 * calendar (readers: that user and project groups), 40 % in a department folder (readers:
 * a few users of the department and project groups), 5 % elsewhere. The mix gives about two
 * deliveries per event; the benchmark prints the measured average.
 *
 * Every size gets an index of its own, and one more index holds the smallest size's city
 * again with as many subscriptions of another city beside it as the largest size has in
 * all: other users, groups and paths, so that none of them concerns the smallest city's
 * events, and added interleaved with the city's own, as subscriptions come and go over time
 * (added after them, they measured 0.2 less in the ratio: the city's records then lie
 * together). That is the "match cost flat as unrelated subscriptions grow"; the
 * sizes' own ratio says what a bigger city costs, where every event's own subscriptions,
 * readers and owners are spread over a larger index too.
 *
 * For each size it prints the subscriptions; the memory they took (what malloc handed out
 * over the build, and the tables in mappings of their own (ptable.h), divided by N:
 * records, pattern records and their table, the filings of large patterns); the memory per
 * user for the owners (N/5 users: their interned principals and shared owner sets, made
 * before the build as their sessions would; not their tokens, which the sessions hold);
 * the events matched per second on one core (subs_match_events with the reader check, in
 * dispatch's turns of DISPATCH_EVENTS_PER_TURN events, counting deliveries), the cost per
 * event relative to the smallest size, the subscriptions added per second while building,
 * the longest any one add took (what a subscription change can hold the service thread,
 * and with it every delivery, for), the longest any one user's owner set took to make (the
 * same, for a session's first subscription, which interns the user's principals), and the
 * events/s of one thread per CPU matching at once over the same index (a match writes
 * nothing, so they share it without a lock). Then the smallest city's events/s alone and
 * beside the unrelated subscriptions, their cost ratio, and the deliveries of one pass over
 * the city's events in each; it exits 1 unless those are the same.
 *
 * Events/s is the median of timed passes over the event pool. The indexes take turns, pass
 * by pass (each turn one pass to bring the index's part of the cache back, then the timed
 * one), for MATCH_SECONDS per index: the speed of this shared machine moved by half within
 * minutes, and measured in turns it moves every index's figure alike, so the cost ratios
 * hold.
 */

#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "auth.h"
#include "clock.h"
#include "dispatch.h"
#include "event.h"
#include "mem.h"
#include "path.h"
#include "principals.h"
#include "subs.h"

#define USERS_PER_DEPARTMENT 500
#define PROJECT_GROUPS 5000
#define EVENT_POOL 4096
#define MATCH_SECONDS 2.0
#define MAX_PASSES 100000
#define MAX_SIZES 8

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static size_t below(size_t n)
{
    return (size_t)(rng() % n);
}

/* Bytes the allocator has handed out and not got back (malloc's own overhead per block
 * included in what it counts as in use). */
static size_t allocated_bytes(void)
{
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

struct world {
    const char *tag; /* before every name of the world: users, groups and paths */
    size_t users;
    size_t departments;
    auth_principal_t **principals;  /* per user */
    const owner_set_t **owner_sets; /* per user, while the world's subscriptions exist */
    size_t folders;                 /* department folders */
    size_t *folder_department;
};

static auth_principal_t *make_principal(const struct world *w, size_t k)
{
    auth_principal_t *p = xcalloc(1, sizeof(*p));
    char text[32];
    snprintf(text, sizeof(text), "%su%zu", w->tag, k);
    p->user = xstrdup(text);
    size_t projects = below(19); /* 0..18, plus the department: 1..19 groups, 2..20 with the user */
    p->group_count = 1 + projects;
    p->groups = xcalloc(p->group_count, sizeof(char *));
    snprintf(text, sizeof(text), "%sd%zu", w->tag, k / USERS_PER_DEPARTMENT);
    p->groups[0] = xstrdup(text);
    for (size_t i = 0; i < projects; i++) {
        snprintf(text, sizeof(text), "%sp%zu", w->tag, below(PROJECT_GROUPS));
        p->groups[1 + i] = xstrdup(text);
    }
    p->expires_at = INT64_MAX;
    return p;
}

/* The users of a world for n subscriptions (one per five, whole departments), with their
 * principals. */
static void world_init(struct world *w, const char *tag, size_t n)
{
    *w = (struct world){.tag = tag};
    w->users = n / 5 > USERS_PER_DEPARTMENT ? n / 5 : USERS_PER_DEPARTMENT;
    w->departments = (w->users + USERS_PER_DEPARTMENT - 1) / USERS_PER_DEPARTMENT;
    w->users = w->departments * USERS_PER_DEPARTMENT;
    w->principals = xcalloc(w->users, sizeof(*w->principals));
    w->owner_sets = xcalloc(w->users, sizeof(*w->owner_sets));
    for (size_t k = 0; k < w->users; k++) {
        w->principals[k] = make_principal(w, k);
    }
}

/* Each user's principals interned and owner set made, as when their sessions log in (the
 * broker does it on the service thread, at a session's first subscription). Returns the
 * longest one took, in seconds. */
static double world_log_in(struct world *w, subs_t *subs)
{
    double longest = 0;
    for (size_t k = 0; k < w->users; k++) {
        double start = clock_monotonic_seconds();
        w->owner_sets[k] = principals_owner_get(subs_principals(subs), w->principals[k]);
        double took = clock_monotonic_seconds() - start;
        longest = took > longest ? took : longest;
    }
    return longest;
}

static void world_destroy(struct world *w, subs_t *subs)
{
    for (size_t k = 0; k < w->users; k++) {
        principals_owner_put(subs_principals(subs), w->owner_sets[k]);
        auth_principal_free(w->principals[k]);
    }
    free(w->principals);
    free(w->owner_sets);
    free(w->folder_department);
}

static size_t user_in(size_t department)
{
    return department * USERS_PER_DEPARTMENT + below(USERS_PER_DEPARTMENT);
}

/* The subscriptions a world asks for, in the order they are added: made before any is
 * added, so that the subscriptions of two worlds can be added interleaved. */
#define PLAN_PATTERN_BYTES 64

struct plan {
    size_t count;
    char (*patterns)[PLAN_PATTERN_BYTES];
    size_t *owners; /* users of the world */
};

static void plan_add(struct plan *plan, size_t owner, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void plan_add(struct plan *plan, size_t owner, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(plan->patterns[plan->count], PLAN_PATTERN_BYTES, fmt, args);
    va_end(args);
    plan->owners[plan->count++] = owner;
}

static void plan_make(struct plan *plan, struct world *w, size_t n)
{
    plan->count = 0;
    plan->patterns = xmalloc(n * sizeof(*plan->patterns));
    plan->owners = xmalloc(n * sizeof(*plan->owners));
    const char *tag = w->tag;
    size_t personal = n * 60 / 100;
    size_t shared = n * 30 / 100;
    size_t wildcard = n - personal - shared;
    for (size_t i = 0; i < personal; i++) {
        size_t k = below(w->users);
        if (below(3) == 0) {
            plan_add(plan, k, "/users/%su%zu/calendar", tag, k);
        } else {
            plan_add(plan, k, "/users/%su%zu/files/f%zu", tag, k, below(4));
        }
    }
    /* Department folders get 50..500 subscribers each until the share is used up. */
    size_t capacity = shared / 50 + 1;
    w->folder_department = xcalloc(capacity, sizeof(size_t));
    w->folders = 0;
    for (size_t done = 0; done < shared;) {
        size_t d = below(w->departments);
        size_t folder = w->folders++;
        w->folder_department[folder] = d;
        size_t subscribers = 50 + below(451);
        for (size_t j = 0; j < subscribers && done < shared; j++, done++) {
            plan_add(plan, user_in(d), "/dms/%sd%zu/cabinets/c%zu", tag, d, folder);
        }
    }
    for (size_t i = 0; i < wildcard; i++) {
        size_t d = below(w->departments);
        size_t k = user_in(d);
        if (below(2) == 0) {
            plan_add(plan, k, "/dms/%sd%zu/cabinets/*/reports", tag, d);
        } else {
            plan_add(plan, k, "/users/%su%zu/*/shared", tag, k);
        }
    }
}

static void plan_free(struct plan *plan)
{
    free(plan->patterns);
    free(plan->owners);
}

/* An event of the pool: its paths and reader strings live in one owned buffer. */
struct pooled {
    event_t event;
    char text[1024];
    hstr_t readers[20];
};

static void add_reader(struct pooled *p, size_t *used, const char *fmt, size_t value)
{
    if (p->event.reader_count == 20) {
        return;
    }
    char *at = p->text + 256 + *used;
    int len = snprintf(at, 32, fmt, value);
    p->readers[p->event.reader_count++] = (hstr_t){at, (size_t)len};
    *used += (size_t)len + 1;
}

/* An event in the world whose tag is "" (the names below have none). */
static void make_event(struct pooled *p, const struct world *w)
{
    memset(&p->event, 0, sizeof(p->event));
    size_t used = 0;
    size_t roll = below(100);
    size_t extra = below(20); /* more readers, 0..19 */
    int len;
    if (roll < 55) {
        size_t k = below(w->users);
        if (below(3) == 0) {
            len = snprintf(p->text, 256, "/users/u%zu/calendar/e%zu", k, below(1000));
        } else {
            len = snprintf(p->text, 256, "/users/u%zu/files/f%zu/doc%zu", k, below(4), below(1000));
        }
        add_reader(p, &used, "user:u%zu", k);
    } else if (roll < 95 && w->folders > 0) {
        size_t folder = below(w->folders);
        size_t d = w->folder_department[folder];
        len = snprintf(p->text, 256, "/dms/d%zu/cabinets/c%zu/%s%zu", d, folder,
                       below(10) == 0 ? "reports/r" : "doc", below(1000));
        add_reader(p, &used, "user:u%zu", user_in(d));
        add_reader(p, &used, "user:u%zu", user_in(d));
    } else {
        len = snprintf(p->text, 256, "/archive/x%zu/doc%zu", below(100), below(1000));
        add_reader(p, &used, "user:u%zu", below(w->users));
    }
    for (size_t i = 0; i < extra; i++) {
        add_reader(p, &used, "group:p%zu", below(PROJECT_GROUPS));
    }
    p->event.type = EVENT_UPDATED;
    p->event.readers = p->readers;
    if (path_parse(p->text, (size_t)len, &p->event.resource_path, NULL) != 0) {
        fprintf(stderr, "match: bad event path %s\n", p->text);
        exit(1);
    }
}

static bool count_delivery(sub_t *sub, void *ctx)
{
    (void)sub;
    (*(uint64_t *)ctx)++;
    return true;
}

/* One index under measurement: its worlds, subscriptions and event pool, and what was
 * measured of it. */
struct index {
    size_t n; /* subscriptions */
    subs_t *subs;
    struct world worlds[2];
    size_t world_count;
    sub_t **made;
    size_t made_count;
    struct pooled *pool; /* events in worlds[0] */
    bool owns_pool;
    double bytes_per_sub;
    double bytes_per_owner;
    double adds_per_s;
    double longest_add_seconds;
    double longest_owner_seconds; /* a user's owner set made */
    double *pass_rates;           /* timed passes over the pool, events/s */
    size_t passes;
    uint64_t events;
    uint64_t deliveries;
};

/* Moves every doubling under way to its end, as the broker's idle turns do. */
static void finish_doublings(subs_t *subs)
{
    while (subs_maintain(subs, 1024) > 0) {
    }
}

static void add_or_die(struct index *ix, const char *pattern, const auth_principal_t *owner)
{
    sub_t *sub;
    struct herr err;
    double start = clock_monotonic_seconds();
    if (subs_add(ix->subs, pattern, strlen(pattern), EVENT_CHANGE_ALL, owner, NULL, &sub, &err) !=
        0) {
        fprintf(stderr, "match: %s: %s\n", pattern, err.message);
        exit(1);
    }
    ix->made[ix->made_count++] = sub;
    double took = clock_monotonic_seconds() - start;
    ix->longest_add_seconds = took > ix->longest_add_seconds ? took : ix->longest_add_seconds;
}

/* Adds the planned subscriptions of the index's worlds (ix->made has room for them), the second
 * world's spread evenly among the first's (as subscriptions come and go over time, not one city
 * after the other), and lets the last doubling of the table of patterns finish, as the broker does
 * whenever dispatch runs dry. */
static void index_fill(struct index *ix, const struct plan *plans)
{
    size_t taken[2] = {0, 0};
    size_t second = ix->world_count > 1 ? plans[1].count : 0;
    size_t total = plans[0].count + second;
    double start = clock_monotonic_seconds();
    for (size_t i = 0; i < total; i++) {
        /* After i + 1 adds the second world has had its share of them, rounded down. */
        size_t from = taken[1] < (i + 1) * second / total ? 1 : 0;
        const struct plan *plan = &plans[from];
        size_t j = taken[from]++;
        add_or_die(ix, plan->patterns[j], ix->worlds[from].principals[plan->owners[j]]);
    }
    finish_doublings(ix->subs);
    ix->adds_per_s = (double)total / (clock_monotonic_seconds() - start);
}

/* The index of the realistic mix at n subscriptions, with its memory per subscription and
 * per user. */
static struct index *index_realistic(size_t n)
{
    struct index *ix = xcalloc(1, sizeof(*ix));
    ix->n = n;
    rng_state = 0x9e3779b97f4a7c15ULL ^ n;
    world_init(&ix->worlds[0], "", n);
    ix->world_count = 1;
    ix->subs = subs_new();
    struct plan plan;
    plan_make(&plan, &ix->worlds[0], n);
    ix->made = xmalloc(n * sizeof(*ix->made));
    /* What owners cost comes first, as when their sessions log in; what subscriptions
     * cost is measured after. The users' tokens exist already and are not counted. */
    size_t owners_before = allocated_bytes() + subs_table_bytes(ix->subs);
    ix->longest_owner_seconds = world_log_in(&ix->worlds[0], ix->subs);
    /* The owners' tables may still be doubling: finish that first, or the old tables freed
     * while subscriptions are added would count against the subscriptions. */
    finish_doublings(ix->subs);
    size_t before = allocated_bytes() + subs_table_bytes(ix->subs);
    index_fill(ix, &plan);
    size_t after = allocated_bytes() + subs_table_bytes(ix->subs);
    ix->bytes_per_sub = (double)(after - before) / (double)n;
    ix->bytes_per_owner = (double)(before - owners_before) / (double)ix->worlds[0].users;
    plan_free(&plan);
    ix->pool = xcalloc(EVENT_POOL, sizeof(*ix->pool));
    ix->owns_pool = true;
    for (size_t i = 0; i < EVENT_POOL; i++) {
        make_event(&ix->pool[i], &ix->worlds[0]);
    }
    return ix;
}

/* The index of related (an index of the realistic mix) again, with n - related->n
 * subscriptions of another city beside it: their own users, groups and paths, so that
 * none concerns related's events, which are matched against it. */
static struct index *index_with_unrelated(const struct index *related, size_t n)
{
    struct index *ix = xcalloc(1, sizeof(*ix));
    ix->n = n;
    ix->subs = subs_new();
    struct plan plans[2];
    /* The same seed and order as related's own: the same users and subscriptions. */
    rng_state = 0x9e3779b97f4a7c15ULL ^ related->n;
    world_init(&ix->worlds[0], "", related->n);
    plan_make(&plans[0], &ix->worlds[0], related->n);
    rng_state = 0x2545f4914f6cdd1dULL ^ n;
    world_init(&ix->worlds[1], "x", n - related->n);
    plan_make(&plans[1], &ix->worlds[1], n - related->n);
    ix->world_count = 2;
    ix->made = xmalloc(n * sizeof(*ix->made));
    world_log_in(&ix->worlds[0], ix->subs);
    world_log_in(&ix->worlds[1], ix->subs);
    index_fill(ix, plans);
    plan_free(&plans[0]);
    plan_free(&plans[1]);
    ix->pool = related->pool;
    return ix;
}

static void index_free(struct index *ix)
{
    for (size_t i = 0; i < ix->made_count; i++) {
        subs_remove(ix->subs, ix->made[i]);
    }
    free(ix->made);
    for (size_t w = 0; w < ix->world_count; w++) {
        world_destroy(&ix->worlds[w], ix->subs);
    }
    subs_free(ix->subs);
    if (ix->owns_pool) {
        free(ix->pool);
    }
    free(ix->pass_rates);
    free(ix);
}

/* Matches the pool as dispatch matches what it drains from ingest: DISPATCH_EVENTS_PER_TURN
 * events per subs_match_events. With seq, numbers the events from *seq on. */
static void match_pool(subs_t *subs, struct pooled *pool, uint64_t *deliveries, uint64_t *seq)
{
    _Static_assert(EVENT_POOL % DISPATCH_EVENTS_PER_TURN == 0, "whole turns");
    const event_t *events[DISPATCH_EVENTS_PER_TURN];
    void *ctxs[DISPATCH_EVENTS_PER_TURN];
    for (size_t i = 0; i < DISPATCH_EVENTS_PER_TURN; i++) {
        ctxs[i] = deliveries;
    }
    for (size_t start = 0; start < EVENT_POOL; start += DISPATCH_EVENTS_PER_TURN) {
        for (size_t i = 0; i < DISPATCH_EVENTS_PER_TURN; i++) {
            if (seq != NULL) {
                pool[start + i].event.seq = (*seq)++;
            }
            events[i] = &pool[start + i].event;
        }
        subs_match_events(subs, events, DISPATCH_EVENTS_PER_TURN, count_delivery, ctxs);
    }
}

/* One pass over the index's event pool; returns its events/s. */
static double index_pass(struct index *ix, uint64_t *seq)
{
    double start = clock_monotonic_seconds();
    match_pool(ix->subs, ix->pool, &ix->deliveries, seq);
    ix->events += EVENT_POOL;
    return (double)EVENT_POOL / (clock_monotonic_seconds() - start);
}

/* The deliveries of one more pass over the index's event pool. */
static uint64_t pool_deliveries(struct index *ix, uint64_t *seq)
{
    uint64_t before = ix->deliveries;
    index_pass(ix, seq);
    return ix->deliveries - before;
}

/* Matching measured on every index in turn, round after round, so that a change in the
 * machine's speed meets them all alike and the cost ratios hold. In each round an index
 * gets one pass to bring its part of the cache back, then one timed pass. */
static void measure_interleaved(struct index **indexes, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        indexes[i]->pass_rates = xmalloc(MAX_PASSES * sizeof(double));
    }
    uint64_t seq = 1;
    double start = clock_monotonic_seconds();
    size_t rounds = 0;
    do {
        for (size_t i = 0; i < count; i++) {
            struct index *ix = indexes[i];
            index_pass(ix, &seq);
            ix->pass_rates[ix->passes++] = index_pass(ix, &seq);
        }
        rounds++;
    } while (clock_monotonic_seconds() - start < MATCH_SECONDS * (double)count &&
             rounds < MAX_PASSES);
}

static double median_rate(struct index *ix)
{
    qsort(ix->pass_rates, ix->passes, sizeof(double), bench_compare_doubles);
    return ix->pass_rates[ix->passes / 2];
}

/* Matching from several threads at once over the same index, which a match never writes
 * (patterns.h): each thread matches the whole event pool again and again for
 * MATCH_SECONDS and counts its own events and deliveries. */
struct worker {
    pthread_t thread;
    subs_t *subs;
    struct pooled *pool;
    uint64_t events;
    uint64_t deliveries;
};

static void *match_worker(void *arg)
{
    struct worker *w = arg;
    double start = clock_monotonic_seconds();
    do {
        match_pool(w->subs, w->pool, &w->deliveries, NULL);
        w->events += EVENT_POOL;
    } while (clock_monotonic_seconds() - start < MATCH_SECONDS);
    return NULL;
}

/* Events per second matched by threads threads together. */
static double parallel_rate(subs_t *subs, struct pooled *pool, int threads)
{
    struct worker *workers = xcalloc((size_t)threads, sizeof(*workers));
    double start = clock_monotonic_seconds();
    for (int t = 0; t < threads; t++) {
        workers[t].subs = subs;
        workers[t].pool = pool;
        pthread_create(&workers[t].thread, NULL, match_worker, &workers[t]);
    }
    uint64_t events = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        events += workers[t].events;
    }
    double elapsed = clock_monotonic_seconds() - start;
    free(workers);
    return (double)events / elapsed;
}

static int compare_sizes(const void *a, const void *b)
{
    size_t x = *(const size_t *)a;
    size_t y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *sizes_text = argc > 1 ? argv[1] : "10000,100000,1000000";
    printf("command: %s %s\n", argv[0], sizes_text);
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    threads = threads < 1 ? 1 : threads;

    /* Sizes smallest first: the first is what the others are compared with. */
    size_t ns[MAX_SIZES];
    size_t size_count = 0;
    char *sizes = xstrdup(sizes_text);
    for (char *item = strtok(sizes, ","); item != NULL; item = strtok(NULL, ",")) {
        size_t n = strtoul(item, NULL, 10);
        if (n < 1000 || size_count == MAX_SIZES) {
            fprintf(stderr, "match: sizes are up to %d numbers of at least 1000\n", MAX_SIZES);
            free(sizes);
            return 2;
        }
        ns[size_count++] = n;
    }
    free(sizes);
    if (size_count == 0) {
        fprintf(stderr, "match: no sizes\n");
        return 2;
    }
    qsort(ns, size_count, sizeof(ns[0]), compare_sizes);
    struct index *indexes[MAX_SIZES + 1];
    for (size_t i = 0; i < size_count; i++) {
        indexes[i] = index_realistic(ns[i]);
    }
    size_t count = size_count;
    if (ns[size_count - 1] > ns[0]) {
        indexes[count++] = index_with_unrelated(indexes[0], ns[size_count - 1]);
    }
    measure_interleaved(indexes, count);

    char parallel_title[32];
    snprintf(parallel_title, sizeof(parallel_title), "events/s x%d", threads);
    printf("%12s %12s %12s %14s %16s %12s %12s %14s %16s %14s\n", "subs", "bytes/sub",
           "bytes/owner", "events/s", "deliveries/event", "cost ratio", "adds/s", "longest add ms",
           "longest owner ms", parallel_title);
    double first_rate = median_rate(indexes[0]);
    int status = 0;
    for (size_t i = 0; i < size_count; i++) {
        struct index *ix = indexes[i];
        double rate = median_rate(ix);
        double together = parallel_rate(ix->subs, ix->pool, threads);
        printf("%12zu %12.0f %12.0f %14.0f %16.2f %12.2f %12.0f %14.2f %16.2f %14.0f\n", ix->n,
               ix->bytes_per_sub, ix->bytes_per_owner, rate,
               (double)ix->deliveries / (double)ix->events, first_rate / rate, ix->adds_per_s,
               ix->longest_add_seconds * 1e3, ix->longest_owner_seconds * 1e3, together);
        fflush(stdout);
    }
    if (count > size_count) {
        struct index *ix = indexes[size_count];
        double rate = median_rate(ix);
        printf("\nThe events of %zu subscriptions matched beside %zu unrelated ones (another city's"
               " users, groups and paths), against the %zu alone:\n",
               indexes[0]->n, ix->n - indexes[0]->n, indexes[0]->n);
        printf("%12s %12s %16s %16s %16s %12s\n", "related", "unrelated", "events/s alone",
               "events/s beside", "deliveries/event", "cost ratio");
        printf("%12zu %12zu %16.0f %16.0f %16.2f %12.2f\n", indexes[0]->n, ix->n - indexes[0]->n,
               first_rate, rate, (double)ix->deliveries / (double)ix->events, first_rate / rate);
        /* None of the other city's subscriptions may concern the city's events. */
        uint64_t seq = 1;
        uint64_t alone = pool_deliveries(indexes[0], &seq);
        uint64_t beside = pool_deliveries(ix, &seq);
        printf("deliveries of the event pool: %" PRIu64 " alone, %" PRIu64 " beside\n", alone,
               beside);
        if (alone != beside) {
            fprintf(stderr, "match: the unrelated subscriptions changed what the events reach\n");
            status = 1;
        }
    }
    for (size_t i = 0; i < count; i++) {
        index_free(indexes[count - 1 - i]);
    }
    return status;
}
