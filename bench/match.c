/*
 * bench/match: the matching core (subs + index + reader check) on one core, with a
 * realistic mix of subscriptions, at growing sizes.
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
 * For each size it prints the subscriptions; the memory they took (what malloc handed out
 * over the build, and the tables in mappings of their own (ptable.h), divided by N:
 * records, pattern records and their table, the filings of large patterns); the memory per
 * user for the owners (N/5 users: their interned principals and shared owner sets, made
 * before the build as their sessions would; not their tokens, which the sessions hold);
 * the events matched per second on one core (subs_match_event with the reader check,
 * counting deliveries), the cost per event relative to the smallest size of the same run,
 * the subscriptions added per second while building, the longest any one add took (what a
 * subscription change can hold the service thread, and with it every delivery, for), and
 * the events/s of one thread per CPU matching at once over the same index (a match writes
 * nothing, so they share it without a lock). Events/s is the median over timed passes of
 * the event pool (for MATCH_SECONDS), so that bursts of other work on a shared machine
 * move it less than a plain average.
 */

#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "auth.h"
#include "clock.h"
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
    size_t users;
    size_t departments;
    auth_principal_t **principals; /* per user */
    size_t *user_projects;         /* two project groups per user: [2k], [2k+1] */
    size_t folders;                /* department folders */
    size_t *folder_department;
};

static auth_principal_t *make_principal(struct world *w, size_t k)
{
    auth_principal_t *p = xcalloc(1, sizeof(*p));
    char text[32];
    snprintf(text, sizeof(text), "u%zu", k);
    p->user = xstrdup(text);
    size_t projects = below(19); /* 0..18, plus the department: 1..19 groups, 2..20 with the user */
    p->group_count = 1 + projects;
    p->groups = xcalloc(p->group_count, sizeof(char *));
    snprintf(text, sizeof(text), "d%zu", k / USERS_PER_DEPARTMENT);
    p->groups[0] = xstrdup(text);
    for (size_t i = 0; i < projects; i++) {
        size_t project = below(PROJECT_GROUPS);
        if (i < 2) {
            w->user_projects[2 * k + i] = project;
        }
        snprintf(text, sizeof(text), "p%zu", project);
        p->groups[1 + i] = xstrdup(text);
    }
    if (projects < 2) {
        for (size_t i = projects; i < 2; i++) {
            w->user_projects[2 * k + i] = SIZE_MAX;
        }
    }
    p->expires_at = INT64_MAX;
    return p;
}

static size_t user_in(size_t department)
{
    return department * USERS_PER_DEPARTMENT + below(USERS_PER_DEPARTMENT);
}

static sub_t **made;
static size_t made_count;
static double longest_add_seconds;

static void add_or_die(subs_t *subs, const char *pattern, const auth_principal_t *owner)
{
    sub_t *sub;
    struct herr err;
    double start = clock_monotonic_seconds();
    if (subs_add(subs, pattern, strlen(pattern), EVENT_CHANGE_ALL, owner, NULL, &sub, &err) != 0) {
        fprintf(stderr, "match: %s: %s\n", pattern, err.message);
        exit(1);
    }
    made[made_count++] = sub;
    double took = clock_monotonic_seconds() - start;
    longest_add_seconds = took > longest_add_seconds ? took : longest_add_seconds;
}

static void build(subs_t *subs, struct world *w, size_t n)
{
    char text[128];
    size_t personal = n * 60 / 100;
    size_t shared = n * 30 / 100;
    size_t wildcard = n - personal - shared;
    for (size_t i = 0; i < personal; i++) {
        size_t k = below(w->users);
        if (below(3) == 0) {
            snprintf(text, sizeof(text), "/users/u%zu/calendar", k);
        } else {
            snprintf(text, sizeof(text), "/users/u%zu/files/f%zu", k, below(4));
        }
        add_or_die(subs, text, w->principals[k]);
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
            snprintf(text, sizeof(text), "/dms/d%zu/cabinets/c%zu", d, folder);
            add_or_die(subs, text, w->principals[user_in(d)]);
        }
    }
    for (size_t i = 0; i < wildcard; i++) {
        size_t d = below(w->departments);
        size_t k = user_in(d);
        if (below(2) == 0) {
            snprintf(text, sizeof(text), "/dms/d%zu/cabinets/*/reports", d);
        } else {
            snprintf(text, sizeof(text), "/users/u%zu/*/shared", k);
        }
        add_or_die(subs, text, w->principals[k]);
    }
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
        for (size_t i = 0; i < EVENT_POOL; i++) {
            subs_match_event(w->subs, &w->pool[i].event, count_delivery, &w->deliveries);
        }
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

int main(int argc, char **argv)
{
    const char *sizes_text = argc > 1 ? argv[1] : "10000,100000,1000000";
    printf("command: %s %s\n", argv[0], sizes_text);
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    threads = threads < 1 ? 1 : threads;
    char parallel_title[32];
    snprintf(parallel_title, sizeof(parallel_title), "events/s x%d", threads);
    printf("%12s %12s %12s %14s %16s %12s %12s %14s %14s\n", "subs", "bytes/sub", "bytes/owner",
           "events/s", "deliveries/event", "cost ratio", "adds/s", "longest add ms",
           parallel_title);
    double first_cost = 0.0;
    char *sizes = xstrdup(sizes_text);
    for (char *item = strtok(sizes, ","); item != NULL; item = strtok(NULL, ",")) {
        size_t n = strtoul(item, NULL, 10);
        rng_state = 0x9e3779b97f4a7c15ULL ^ n;
        struct world w = {0};
        w.users = n / 5 > USERS_PER_DEPARTMENT ? n / 5 : USERS_PER_DEPARTMENT;
        w.departments = (w.users + USERS_PER_DEPARTMENT - 1) / USERS_PER_DEPARTMENT;
        w.users = w.departments * USERS_PER_DEPARTMENT;
        w.principals = xcalloc(w.users, sizeof(*w.principals));
        w.user_projects = xcalloc(2 * w.users, sizeof(size_t));
        for (size_t k = 0; k < w.users; k++) {
            w.principals[k] = make_principal(&w, k);
        }
        made = xmalloc(n * sizeof(*made));
        subs_t *subs = subs_new();
        /* What owners cost comes first, as when their sessions log in: each user's
         * principals interned and their owner set made. What subscriptions cost is
         * measured after. The users' tokens exist already and are not counted. */
        size_t owners_before = allocated_bytes() + subs_table_bytes(subs);
        const owner_set_t **owner_sets = xmalloc(w.users * sizeof(*owner_sets));
        for (size_t k = 0; k < w.users; k++) {
            owner_sets[k] = principals_owner_get(subs_principals(subs), w.principals[k]);
        }
        size_t rss_before = allocated_bytes() + subs_table_bytes(subs);
        made_count = 0;
        longest_add_seconds = 0.0;
        double build_start = clock_monotonic_seconds();
        build(subs, &w, n);
        /* The last doubling of the table of patterns may still be moving; the broker
         * moves it on whenever dispatch runs dry. Matching is measured once it is done. */
        while (subs_maintain(subs, 1024) > 0) {
        }
        double build_seconds = clock_monotonic_seconds() - build_start;
        size_t rss_after = allocated_bytes() + subs_table_bytes(subs);

        struct pooled *pool = xcalloc(EVENT_POOL, sizeof(*pool));
        for (size_t i = 0; i < EVENT_POOL; i++) {
            make_event(&pool[i], &w);
        }
        uint64_t deliveries = 0;
        uint64_t events = 0;
        uint64_t seq = 1;
        double *pass_rates = xmalloc(MAX_PASSES * sizeof(double));
        size_t passes = 0;
        double start = clock_monotonic_seconds();
        double elapsed;
        do {
            double pass_start = clock_monotonic_seconds();
            for (size_t i = 0; i < EVENT_POOL; i++) {
                pool[i].event.seq = seq++;
                subs_match_event(subs, &pool[i].event, count_delivery, &deliveries);
            }
            double pass_end = clock_monotonic_seconds();
            pass_rates[passes++] = (double)EVENT_POOL / (pass_end - pass_start);
            events += EVENT_POOL;
            elapsed = pass_end - start;
        } while (elapsed < MATCH_SECONDS && passes < MAX_PASSES);
        qsort(pass_rates, passes, sizeof(double), bench_compare_doubles);
        double rate = pass_rates[passes / 2];
        double cost = 1.0 / rate;
        free(pass_rates);
        if (first_cost == 0.0) {
            first_cost = cost;
        }
        double together = parallel_rate(subs, pool, threads);
        printf("%12zu %12.0f %12.0f %14.0f %16.2f %12.2f %12.0f %14.2f %14.0f\n", n,
               (double)(rss_after - rss_before) / (double)n,
               (double)(rss_before - owners_before) / (double)w.users, rate,
               (double)deliveries / (double)events, cost / first_cost, (double)n / build_seconds,
               longest_add_seconds * 1e3, together);
        fflush(stdout);
        for (size_t i = 0; i < made_count; i++) {
            subs_remove(subs, made[i]);
        }
        free(made);
        for (size_t k = 0; k < w.users; k++) {
            principals_owner_put(subs_principals(subs), owner_sets[k]);
        }
        free(owner_sets);
        subs_free(subs);
        for (size_t k = 0; k < w.users; k++) {
            auth_principal_free(w.principals[k]);
        }
        free(w.principals);
        free(w.user_projects);
        free(w.folder_department);
        free(pool);
    }
    free(sizes);
    return 0;
}
