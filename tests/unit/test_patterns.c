/* The matching index (patterns.h) through subs: every pattern shape against a brute-force
 * oracle under random adds, removes and events; wildcard patterns and the literal prefixes
 * that hold them, in every order of removal; and the filing's limits. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patterns.h"
#include "subs.h"
#include "unit.h"

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static auth_principal_t *owner_new(const char *user, const char *const *groups, size_t count)
{
    return unit_principal(user, groups, count);
}

static sub_t *add(subs_t *subs, const char *pattern, unsigned mask, const auth_principal_t *owner)
{
    sub_t *sub = NULL;
    struct herr err;
    ck_assert_msg(subs_add(subs, pattern, strlen(pattern), mask, owner, NULL, &sub, &err) == 0,
                  "%s: %s", pattern, err.message);
    return sub;
}

struct found {
    sub_t **subs;
    size_t count;
    size_t capacity;
};

static bool collect(sub_t *sub, void *ctx)
{
    struct found *f = ctx;
    if (f->count == f->capacity) {
        f->capacity = f->capacity == 0 ? 64 : 2 * f->capacity;
        f->subs = realloc(f->subs, f->capacity * sizeof(*f->subs));
    }
    f->subs[f->count++] = sub;
    return true;
}

static int compare_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (sub_t *const *)a;
    uintptr_t y = (uintptr_t) * (sub_t *const *)b;
    return x < y ? -1 : x > y;
}

/* ---- the property test ---- */

#define PROP_OWNERS 24
#define PROP_SUBS 2500
#define PROP_MAX_DEPTH 4
#define PROP_MAX_RESOURCE_DEPTH 6

/* A small alphabet so that patterns repeat (large patterns file their members) and events
 * match often; "x*" is a literal segment that only looks like a wildcard. */
static const char *const alphabet[] = {"a", "b", "c", "x*", "\xc3\xa9"};
#define ALPHABET (sizeof(alphabet) / sizeof(alphabet[0]))

static const char *const group_pool[] = {"g0", "g1", "g2", "g3", "g4", "u1"};
static const char *const reader_pool[] = {
    "user:u0",  "user:u1",  "user:u2",  "user:u3",  "user:u4",  "user:u5",
    "user:u6",  "user:g0",  "group:g0", "group:g1", "group:g2", "group:g3",
    "group:g4", "group:u1", "group:zz", "user:zz",  "*"};
#define READER_POOL (sizeof(reader_pool) / sizeof(reader_pool[0]))

struct live {
    sub_t *sub;
    char text[64];
    path_t pattern;
    const auth_principal_t *owner;
};

struct prop {
    subs_t *subs;
    auth_principal_t *owners[PROP_OWNERS];
    struct live *live;
    size_t live_count;
    struct found got;
    struct found want;
    size_t events;
    size_t deliveries;
};

static void random_pattern(char *text, size_t size)
{
    size_t depth = 1 + rnd(PROP_MAX_DEPTH);
    bool has_wildcards = rnd(4) == 0;
    size_t forced = rnd((uint32_t)depth);
    size_t len = 0;
    for (size_t i = 0; i < depth; i++) {
        bool is_star = has_wildcards && (i == forced || rnd(3) == 0);
        const char *seg = is_star ? "*" : alphabet[rnd(ALPHABET)];
        len += (size_t)snprintf(text + len, size - len, "/%s", seg);
    }
}

static void random_path(char *text, size_t size)
{
    size_t depth = 1 + rnd(PROP_MAX_RESOURCE_DEPTH);
    size_t len = 0;
    for (size_t i = 0; i < depth; i++) {
        const char *seg = rnd(10) == 0 ? "zz" : alphabet[rnd(ALPHABET)];
        len += (size_t)snprintf(text + len, size - len, "/%s", seg);
    }
}

static void prop_add(struct prop *p)
{
    struct live *l = &p->live[p->live_count];
    random_pattern(l->text, sizeof(l->text));
    ck_assert_int_eq(path_parse_pattern(l->text, strlen(l->text), &l->pattern, NULL), 0);
    l->owner = p->owners[rnd(PROP_OWNERS)];
    l->sub = add(p->subs, l->text, 1 + rnd(EVENT_CHANGE_ALL), l->owner);
    ck_assert_str_eq(subs_resource(l->sub), l->text);
    p->live_count++;
}

static void prop_remove(struct prop *p)
{
    size_t k = rnd((uint32_t)p->live_count);
    subs_remove(p->subs, p->live[k].sub);
    p->live[k] = p->live[--p->live_count];
    /* The views into text moved with the struct: parse again. */
    if (k < p->live_count) {
        struct live *l = &p->live[k];
        ck_assert_int_eq(path_parse_pattern(l->text, strlen(l->text), &l->pattern, NULL), 0);
    }
}

/* A random event; its views point into pe, which must not move while it is used. */
struct prop_event {
    char text[128];
    char previous[128];
    hstr_t readers[6];
    event_t event;
};

static void random_event(struct prop *p, struct prop_event *pe)
{
    static const event_change_t types[] = {EVENT_CREATED, EVENT_UPDATED, EVENT_DELETED};
    random_path(pe->text, sizeof(pe->text));
    bool is_move = rnd(4) == 0;
    if (is_move) {
        random_path(pe->previous, sizeof(pe->previous));
    }
    size_t reader_count = rnd(7);
    for (size_t i = 0; i < reader_count; i++) {
        /* `*` rarely, as in life. */
        size_t r = rnd(READER_POOL);
        r = r == READER_POOL - 1 && rnd(4) != 0 ? 0 : r;
        pe->readers[i] = hstr_from_cstr(reader_pool[r]);
    }
    event_t *event = &pe->event;
    memset(event, 0, sizeof(*event));
    event->type = types[rnd(3)];
    event->seq = ++p->events;
    ck_assert_int_eq(path_parse(pe->text, strlen(pe->text), &event->resource_path, NULL), 0);
    if (is_move) {
        event->has_previous = true;
        ck_assert_int_eq(
            path_parse(pe->previous, strlen(pe->previous), &event->previous_path, NULL), 0);
    }
    event->readers = pe->readers;
    event->reader_count = reader_count;
}

/* What the brute-force oracle says the event concerns. */
static void oracle(const struct prop *p, const event_t *event, struct found *want)
{
    want->count = 0;
    for (size_t k = 0; k < p->live_count; k++) {
        const struct live *l = &p->live[k];
        bool covers = path_matches(&l->pattern, &event->resource_path) ||
                      (event->has_previous && path_matches(&l->pattern, &event->previous_path));
        if (covers && (l->sub->change_mask & event->type) != 0 &&
            auth_may_read(l->owner, event->readers, event->reader_count)) {
            collect(l->sub, want);
        }
    }
}

static void assert_same_subs(const struct prop_event *pe, struct found *got, struct found *want)
{
    const char *text = pe->text;
    bool is_move = pe->event.has_previous;
    ck_assert_msg(got->count == want->count, "%s%s%s: %zu reported, %zu expected", text,
                  is_move ? " from " : "", is_move ? pe->previous : "", got->count, want->count);
    if (got->count > 0) {
        qsort(got->subs, got->count, sizeof(sub_t *), compare_ptr);
        qsort(want->subs, want->count, sizeof(sub_t *), compare_ptr);
    }
    for (size_t i = 0; i < got->count; i++) {
        ck_assert_msg(i == 0 || got->subs[i] != got->subs[i - 1], "%s: reported twice", text);
        ck_assert_msg(got->subs[i] == want->subs[i], "%s: the sets differ", text);
    }
}

static void prop_check_event(struct prop *p)
{
    struct prop_event pe;
    random_event(p, &pe);
    p->got.count = 0;
    size_t calls = subs_match_event(p->subs, &pe.event, collect, &p->got);
    ck_assert_uint_eq(calls, p->got.count);
    oracle(p, &pe.event, &p->want);
    assert_same_subs(&pe, &p->got, &p->want);
    p->deliveries += p->got.count;
}

/* A collector that stops its event's match after limit subscriptions. */
struct limited {
    struct found found;
    size_t limit;
};

static bool collect_limited(sub_t *sub, void *ctx)
{
    struct limited *l = ctx;
    collect(sub, &l->found);
    return l->found.count < l->limit;
}

#define PROP_BATCH_MAX 9

/* A few events matched in one subs_match_events: each one's own subscriptions, as the
 * oracle says; and a match stopped by its callback stops that event only. */
static void prop_check_batch(struct prop *p)
{
    static struct prop_event pes[PROP_BATCH_MAX];
    const event_t *events[PROP_BATCH_MAX];
    struct limited got[PROP_BATCH_MAX];
    void *ctxs[PROP_BATCH_MAX];
    size_t n = 1 + rnd(PROP_BATCH_MAX);
    bool is_limited = rnd(3) == 0;
    for (size_t i = 0; i < n; i++) {
        random_event(p, &pes[i]);
        events[i] = &pes[i].event;
        got[i] = (struct limited){.limit = is_limited ? 1 + rnd(2) : SIZE_MAX};
        ctxs[i] = &got[i];
    }
    size_t calls = subs_match_events(p->subs, events, n, collect_limited, ctxs);
    size_t reported = 0;
    for (size_t i = 0; i < n; i++) {
        oracle(p, events[i], &p->want);
        if (got[i].found.count < p->want.count) {
            /* Stopped: what it reported is some of what it should have. */
            ck_assert_uint_eq(got[i].found.count, got[i].limit);
            qsort(p->want.subs, p->want.count, sizeof(sub_t *), compare_ptr);
            for (size_t k = 0; k < got[i].found.count; k++) {
                ck_assert_msg(bsearch(&got[i].found.subs[k], p->want.subs, p->want.count,
                                      sizeof(sub_t *), compare_ptr) != NULL,
                              "%s: a subscription it does not concern", pes[i].text);
            }
        } else {
            assert_same_subs(&pes[i], &got[i].found, &p->want);
        }
        reported += got[i].found.count;
        p->deliveries += got[i].found.count;
        free(got[i].found.subs);
    }
    ck_assert_uint_eq(calls, reported);
}

static void prop_run(uint64_t seed)
{
    rng_state = seed;
    struct prop *p = calloc(1, sizeof(*p));
    p->subs = subs_new();
    p->live = calloc(PROP_SUBS, sizeof(*p->live));
    for (size_t i = 0; i < PROP_OWNERS; i++) {
        char user[24];
        snprintf(user, sizeof(user), "u%zu", i % 8);
        const char *groups[4];
        size_t count = rnd(5);
        for (size_t g = 0; g < count; g++) {
            groups[g] = group_pool[rnd(6)];
        }
        p->owners[i] = owner_new(user, groups, count);
    }

    /* Grow with about one removal per four adds, then shrink to nothing; check events all
     * along the way. */
    for (size_t step = 0; p->live_count < PROP_SUBS; step++) {
        if (p->live_count > 0 && rnd(5) == 0) {
            prop_remove(p);
        } else {
            prop_add(p);
        }
        if (step % 25 == 0) {
            prop_check_event(p);
        }
        if (step % 25 == 12) {
            prop_check_batch(p);
        }
    }
    size_t filed = 0;
    for (size_t k = 0; k < p->live_count; k++) {
        filed += patterns_is_filed(p->live[k].sub->pattern);
    }
    ck_assert_uint_gt(filed, 0); /* the large-pattern path was exercised */
    for (int e = 0; e < 1500; e++) {
        prop_check_event(p);
        if (e % 3 == 0) {
            prop_check_batch(p);
        }
    }
    while (p->live_count > 0) {
        prop_remove(p);
        if (p->live_count % 10 == 0) {
            prop_check_event(p);
        }
        if (p->live_count % 10 == 5) {
            prop_check_batch(p);
        }
    }
    ck_assert_uint_eq(subs_count(p->subs), 0);
    ck_assert_uint_gt(p->deliveries, 1000); /* the oracle was not trivially empty */
    subs_free(p->subs);
    for (size_t i = 0; i < PROP_OWNERS; i++) {
        auth_principal_free(p->owners[i]);
    }
    free(p->got.subs);
    free(p->want.subs);
    free(p->live);
    free(p);
}

START_TEST(test_patterns_match_brute_force)
{
    static const uint64_t seeds[] = {1, 42, 20261127};
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        prop_run(seeds[i]);
    }
}
END_TEST

/* ---- wildcard patterns and the prefixes that hold them ---- */

static size_t match_count(subs_t *subs, const char *resource, const char *reader)
{
    hstr_t readers[] = {hstr_from_cstr(reader)};
    event_t event;
    memset(&event, 0, sizeof(event));
    event.type = EVENT_UPDATED;
    event.seq = 1;
    ck_assert_int_eq(path_parse(resource, strlen(resource), &event.resource_path, NULL), 0);
    event.readers = readers;
    event.reader_count = 1;
    struct found f = {0};
    size_t calls = subs_match_event(subs, &event, collect, &f);
    free(f.subs);
    return calls;
}

/* Thousands of literal patterns make the table of patterns double several times (it
 * starts at 1024 slots): every pattern, and the wildcard ones held under some, is still
 * found afterwards, exactly once. */
START_TEST(test_patterns_every_pattern_found_after_the_table_grows)
{
    enum { N = 3000 };
    auth_principal_t *anna = owner_new("anna", NULL, 0);
    subs_t *subs = subs_new();
    sub_t **made = calloc(2 * N, sizeof(*made));
    size_t made_count = 0;
    char text[64];
    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof(text), "/grow/p%d", i);
        made[made_count++] = add(subs, text, EVENT_CHANGE_ALL, anna);
        if (i % 7 == 0) {
            snprintf(text, sizeof(text), "/grow/p%d/*/w", i);
            made[made_count++] = add(subs, text, EVENT_CHANGE_ALL, anna);
        }
    }
    ck_assert_uint_eq(subs_pattern_count(subs), made_count);
    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof(text), "/grow/p%d/x", i);
        ck_assert_uint_eq(match_count(subs, text, "user:anna"), 1);
        snprintf(text, sizeof(text), "/grow/p%d/x/w", i);
        ck_assert_uint_eq(match_count(subs, text, "user:anna"), i % 7 == 0 ? 2 : 1);
    }
    ck_assert_uint_eq(match_count(subs, "/grow/q1/x", "user:anna"), 0);
    for (size_t k = 0; k < made_count; k++) {
        subs_remove(subs, made[k]);
    }
    ck_assert_uint_eq(subs_pattern_count(subs), 0);
    free(made);
    subs_free(subs);
    auth_principal_free(anna);
}
END_TEST

/* ---- the table doubling over a while ---- */

struct moving {
    subs_t *subs;
    auth_principal_t *anna;
    sub_t **literal; /* by number; NULL once removed */
    sub_t **wild;    /* "/move/pN/ * /w" beside every seventh, NULL once removed */
    int count;
};

static void moving_add(struct moving *mv, const char *prefix, int i)
{
    char text[64];
    snprintf(text, sizeof(text), "/move/%s%d", prefix, i);
    mv->literal[i] = add(mv->subs, text, EVENT_CHANGE_ALL, mv->anna);
    if (i % 7 == 0) {
        snprintf(text, sizeof(text), "/move/%s%d/*/w", prefix, i);
        mv->wild[i] = add(mv->subs, text, EVENT_CHANGE_ALL, mv->anna);
    }
}

/* Every pattern still there matches exactly what it should, and every one removed
 * matches nothing. */
static void moving_check(const struct moving *mv, const char *prefix)
{
    char text[64];
    for (int i = 0; i < mv->count; i++) {
        snprintf(text, sizeof(text), "/move/%s%d/x/w", prefix, i);
        size_t want = (mv->literal[i] != NULL) + (mv->wild[i] != NULL);
        size_t got = match_count(mv->subs, text, "user:anna");
        if (got != want) { /* not an assertion per pattern: Check writes each one down */
            ck_abort_msg("%s: %zu reported, %zu expected", text, got, want);
        }
    }
}

/* Adds, removals and matches while the table of patterns doubles (ptable.h; test_ptable
 * covers the table itself): literal patterns, wildcard ones and the prefixes that hold
 * them are found in whichever table they are, and a holder that goes with its last
 * wildcard pattern leaves the moving table. */
START_TEST(test_patterns_table_doubles_over_a_while)
{
    enum { MAX = 10000, ADDED = 50 };
    struct moving mv = {.subs = subs_new(), .anna = owner_new("anna", NULL, 0)};
    mv.literal = calloc(MAX, sizeof(*mv.literal));
    mv.wild = calloc(MAX, sizeof(*mv.wild));
    struct moving fresh = mv;
    fresh.literal = calloc(ADDED, sizeof(*fresh.literal));
    fresh.wild = calloc(ADDED, sizeof(*fresh.wild));

    /* Until the doubling from 4096 slots is under way (the one from 2048 leaves at most
     * 2048 to move): far more changes than each of them moves can come in before it ends. */
    while (subs_maintain(mv.subs, 0) <= 2048) {
        ck_assert_int_lt(mv.count, MAX);
        moving_add(&mv, "p", mv.count++);
    }
    moving_check(&mv, "p");

    /* Removals spread over the table, literal patterns that hold a wildcard one among
     * them, then the wildcard ones of some (their holders then go as well). */
    for (int i = 0; i < mv.count; i += 41) {
        subs_remove(mv.subs, mv.literal[i]);
        mv.literal[i] = NULL;
    }
    for (int i = 0; i < mv.count; i += 9 * 7) {
        if (mv.wild[i] != NULL) {
            subs_remove(mv.subs, mv.wild[i]);
            mv.wild[i] = NULL;
        }
    }
    ck_assert_uint_gt(subs_maintain(mv.subs, 0), 0);
    moving_check(&mv, "p");

    for (int i = 0; i < ADDED; i++) {
        moving_add(&fresh, "q", fresh.count++);
    }
    ck_assert_uint_gt(subs_maintain(mv.subs, 0), 0); /* all of it while the move went on */
    moving_check(&mv, "p");
    moving_check(&fresh, "q");

    while (subs_maintain(mv.subs, 100) > 0) {
    }
    moving_check(&mv, "p");
    moving_check(&fresh, "q");

    struct moving *all[] = {&mv, &fresh};
    for (size_t a = 0; a < 2; a++) {
        for (int i = 0; i < all[a]->count; i++) {
            if (all[a]->literal[i] != NULL) {
                subs_remove(mv.subs, all[a]->literal[i]);
            }
            if (all[a]->wild[i] != NULL) {
                subs_remove(mv.subs, all[a]->wild[i]);
            }
        }
        free(all[a]->literal);
        free(all[a]->wild);
    }
    ck_assert_uint_eq(subs_pattern_count(mv.subs), 0);
    subs_free(mv.subs);
    auth_principal_free(mv.anna);
}
END_TEST

/* A literal pattern that also holds wildcard patterns under it, removed in every order:
 * each removal leaves exactly the rest matching and the index empty at the end. */
START_TEST(test_patterns_prefix_holders_in_every_order)
{
    static const char *const texts[] = {"/d/c", "/d/c/*/r", "/d/c/*", "/*/c", "/d/*/*/r"};
    enum { N = sizeof(texts) / sizeof(texts[0]) };
    auth_principal_t *anna = owner_new("anna", NULL, 0);
    /* Every permutation of removal, by Heap's algorithm over indices. */
    size_t order[N];
    size_t c[N] = {0};
    for (size_t i = 0; i < N; i++) {
        order[i] = i;
    }
    size_t permutations = 0;
    for (size_t i = 0;;) {
        subs_t *subs = subs_new();
        sub_t *made[N];
        for (size_t k = 0; k < N; k++) {
            made[k] = add(subs, texts[k], EVENT_CHANGE_ALL, anna);
        }
        ck_assert_uint_eq(subs_pattern_count(subs), N);
        ck_assert_uint_eq(match_count(subs, "/d/c/x/r", "user:anna"), 5);
        ck_assert_uint_eq(match_count(subs, "/d/c/x", "user:anna"), 3);
        ck_assert_uint_eq(match_count(subs, "/d/c", "user:anna"), 2);
        ck_assert_uint_eq(match_count(subs, "/e/c", "user:anna"), 1);
        ck_assert_uint_eq(match_count(subs, "/d/c/x/r", "user:bob"), 0);
        bool live[N];
        for (size_t k = 0; k < N; k++) {
            live[k] = true;
        }
        for (size_t step = 0; step < N; step++) {
            size_t k = order[step];
            subs_remove(subs, made[k]);
            live[k] = false;
            size_t want = 0;
            path_t resource;
            ck_assert_int_eq(path_parse("/d/c/x/r", 8, &resource, NULL), 0);
            for (size_t j = 0; j < N; j++) {
                path_t pattern;
                ck_assert_int_eq(path_parse_pattern(texts[j], strlen(texts[j]), &pattern, NULL), 0);
                want += live[j] && path_matches(&pattern, &resource);
            }
            ck_assert_uint_eq(match_count(subs, "/d/c/x/r", "user:anna"), want);
        }
        ck_assert_uint_eq(subs_pattern_count(subs), 0);
        subs_free(subs);
        permutations++;
        /* Next permutation. */
        while (i < N && c[i] >= i) {
            c[i] = 0;
            i++;
        }
        if (i == N) {
            break;
        }
        size_t swap = i % 2 == 0 ? 0 : c[i];
        size_t t = order[swap];
        order[swap] = order[i];
        order[i] = t;
        c[i]++;
        i = 0;
    }
    ck_assert_uint_eq(permutations, 120);
    auth_principal_free(anna);
}
END_TEST

/* A match probes only the prefix lengths some record in the table has (patterns.c):
 * the counts follow records made and dropped, wildcard holders included, and a length
 * keeps being probed while any record of it is left. */
START_TEST(test_patterns_only_lengths_with_records_are_probed)
{
    auth_principal_t *anna = owner_new("anna", NULL, 0);
    subs_t *subs = subs_new();
    /* Its holder, /a/b, is the only record of two segments. */
    sub_t *wild = add(subs, "/a/b/*/d", EVENT_CHANGE_ALL, anna);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d", "user:anna"), 1);
    /* Another record of two segments, made and dropped, leaves the holder probed. */
    subs_remove(subs, add(subs, "/a/x", EVENT_CHANGE_ALL, anna));
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d", "user:anna"), 1);
    /* Deeper than any record so far, and then beneath it. */
    sub_t *deep = add(subs, "/a/b/c/d/e/f", EVENT_CHANGE_ALL, anna);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d/e/f", "user:anna"), 2);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d/e/f/g/h", "user:anna"), 2);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d/e/x", "user:anna"), 1);
    /* One segment, the shallowest. */
    sub_t *top = add(subs, "/a", EVENT_CHANGE_ALL, anna);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d/e/f/g", "user:anna"), 3);
    subs_remove(subs, deep);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d/e/f/g", "user:anna"), 2);
    subs_remove(subs, wild);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d", "user:anna"), 1);
    /* Gone and made again at a length that had no record left. */
    sub_t *again = add(subs, "/a/b/c/d/e/f", EVENT_CHANGE_ALL, anna);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d/e/f/g", "user:anna"), 2);
    subs_remove(subs, top);
    subs_remove(subs, again);
    ck_assert_uint_eq(subs_pattern_count(subs), 0);
    ck_assert_uint_eq(match_count(subs, "/a/b/c/d/e/f/g", "user:anna"), 0);
    subs_free(subs);
    auth_principal_free(anna);
}
END_TEST

/* ---- records of every size ---- */

/* The pattern texts of one subscription per length, literal and wildcard, pooled by size
 * (up to 256 bytes of record) and from malloc beyond. */
#define SIZES_MIN 4
#define SIZES_MAX 300

static void sized_texts(size_t len, char *literal, char *wild)
{
    literal[0] = '/';
    memset(literal + 1, 'a', len - 1);
    literal[len] = '\0';
    /* "/wb..b" and a last segment `*`, len bytes in all, held under "/wb..b". */
    wild[0] = '/';
    wild[1] = 'w';
    memset(wild + 2, 'b', len - 2);
    memcpy(wild + len - 2, "/*", 3);
}

/* Each subscription's text reads back whole and its resources match it alone. */
static void expect_sized(subs_t *subs, sub_t *const *literal, sub_t *const *wild)
{
    char want_literal[SIZES_MAX + 1];
    char want_wild[SIZES_MAX + 1];
    char resource[SIZES_MAX + 16];
    for (size_t len = SIZES_MIN; len <= SIZES_MAX; len++) {
        sized_texts(len, want_literal, want_wild);
        snprintf(resource, sizeof(resource), "%s/doc", want_literal);
        size_t n = match_count(subs, resource, "user:anna");
        if (literal[len] != NULL) {
            ck_assert_str_eq(subs_resource(literal[len]), want_literal);
        }
        ck_assert_msg(n == (literal[len] != NULL), "%zu bytes: %zu matches", len, n);
        snprintf(resource, sizeof(resource), "%.*s/x/doc", (int)(len - 2), want_wild);
        n = match_count(subs, resource, "user:anna");
        if (wild[len] != NULL) {
            ck_assert_str_eq(subs_resource(wild[len]), want_wild);
        }
        ck_assert_msg(n == (wild[len] != NULL), "%zu bytes, wild: %zu matches", len, n);
    }
}

static void sized_leave_all(subs_t *subs, sub_t **literal, sub_t **wild)
{
    for (size_t len = SIZES_MIN; len <= SIZES_MAX; len++) {
        subs_remove(subs, literal[len]);
        subs_remove(subs, wild[len]);
        literal[len] = wild[len] = NULL;
    }
}

START_TEST(test_patterns_records_of_every_size)
{
    auth_principal_t *anna = owner_new("anna", NULL, 0);
    subs_t *subs = subs_new();
    sub_t *literal[SIZES_MAX + 1] = {0};
    sub_t *wild[SIZES_MAX + 1] = {0};
    char text_literal[SIZES_MAX + 1];
    char text_wild[SIZES_MAX + 1];
    rng_state = 7;
    /* Joined in a shuffled order of lengths, so that records of one size are made between
     * records of others. */
    size_t order[SIZES_MAX + 1];
    size_t count = 0;
    for (size_t len = SIZES_MIN; len <= SIZES_MAX; len++) {
        order[count++] = len;
    }
    for (size_t i = count; i > 1; i--) {
        size_t j = rnd((uint32_t)i);
        size_t tmp = order[i - 1];
        order[i - 1] = order[j];
        order[j] = tmp;
    }
    for (size_t i = 0; i < count; i++) {
        sized_texts(order[i], text_literal, text_wild);
        literal[order[i]] = add(subs, text_literal, EVENT_CHANGE_ALL, anna);
        wild[order[i]] = add(subs, text_wild, EVENT_CHANGE_ALL, anna);
    }
    expect_sized(subs, literal, wild);
    /* Every other one leaves; its records go back to their pools. */
    for (size_t i = 0; i < count; i += 2) {
        subs_remove(subs, literal[order[i]]);
        subs_remove(subs, wild[order[i]]);
        literal[order[i]] = wild[order[i]] = NULL;
    }
    expect_sized(subs, literal, wild);
    /* Joined again in the other order: freed records of each size are reused. */
    for (size_t i = count; i-- > 0;) {
        if (literal[order[i]] == NULL) {
            sized_texts(order[i], text_literal, text_wild);
            wild[order[i]] = add(subs, text_wild, EVENT_CHANGE_ALL, anna);
            literal[order[i]] = add(subs, text_literal, EVENT_CHANGE_ALL, anna);
        }
    }
    expect_sized(subs, literal, wild);
    /* All leave and join again, three times: each record comes back from its own size's
     * pool, so after the first time the pools never grow. (A record put back in another
     * size's pool leaves its own pool short, which then grows every time.) The pools'
     * own count is exact; malloc's (mallinfo2) also counts the chunks its per-thread
     * caches hold, which moved by 32-48 bytes between rounds with unrelated changes. */
    size_t pool_bytes = 0;
    for (int round = 0; round < 3; round++) {
        sized_leave_all(subs, literal, wild);
        ck_assert_uint_eq(subs_pattern_count(subs), 0);
        for (size_t len = SIZES_MIN; len <= SIZES_MAX; len++) {
            sized_texts(len, text_literal, text_wild);
            literal[len] = add(subs, text_literal, EVENT_CHANGE_ALL, anna);
            wild[len] = add(subs, text_wild, EVENT_CHANGE_ALL, anna);
        }
        expect_sized(subs, literal, wild);
        if (round == 0) {
            pool_bytes = subs_record_pool_bytes(subs);
            ck_assert_uint_gt(pool_bytes, 0);
        } else {
            ck_assert_uint_eq(subs_record_pool_bytes(subs), pool_bytes);
        }
    }
    sized_leave_all(subs, literal, wild);
    ck_assert_uint_eq(subs_pattern_count(subs), 0);
    subs_free(subs);
    auth_principal_free(anna);
}
END_TEST

/* ---- the filing's limits ---- */

/* A pattern with several chunks of members: joins and leaves in every chunk, members
 * moving from the last chunk into an earlier one, a chunk emptied and made again, and
 * the filing dropped when the pattern is small; deliveries exact throughout. */
START_TEST(test_patterns_filing_across_chunks)
{
    enum { OWNERS = 10 };
    auth_principal_t *owners[OWNERS];
    for (int i = 0; i < OWNERS; i++) {
        char user[16];
        snprintf(user, sizeof(user), "u%d", i);
        const char *groups[] = {i % 2 == 0 ? "even" : "odd", "all"};
        owners[i] = owner_new(user, groups, 2);
    }
    subs_t *subs = subs_new();
    size_t total = 2 * PATTERNS_FILING_CHUNK + 5;
    sub_t **made = malloc(total * sizeof(*made));
    bool *live = calloc(total, sizeof(*live));
    for (size_t k = 0; k < total; k++) {
        made[k] = add(subs, "/big", EVENT_CHANGE_ALL, owners[k % OWNERS]);
        live[k] = true;
        if (k + 1 == PATTERNS_FILING_MIN - 1) {
            ck_assert(!patterns_is_filed(made[0]->pattern));
        } else if (k + 1 == PATTERNS_FILING_MIN) {
            ck_assert(patterns_is_filed(made[0]->pattern));
        }
    }
    /* Removals from the front move members out of the last chunk; then from the middle,
     * across the chunk boundary; checked against the count of live members by owner. */
    size_t plan[][2] = {{0, 1},
                        {1, 6},
                        {PATTERNS_FILING_CHUNK - 3, PATTERNS_FILING_CHUNK + 3},
                        {6, 200},
                        {total - 9, total},
                        {300, 4500}};
    for (size_t step = 0; step <= sizeof(plan) / sizeof(plan[0]); step++) {
        size_t u3 = 0;
        size_t odd = 0;
        size_t all = 0;
        for (size_t k = 0; k < total; k++) {
            if (live[k]) {
                u3 += k % OWNERS == 3;
                odd += (k % OWNERS) % 2 == 1;
                all++;
            }
        }
        ck_assert_uint_eq(match_count(subs, "/big/x", "user:u3"), u3);
        ck_assert_uint_eq(match_count(subs, "/big/x", "group:odd"), odd);
        ck_assert_uint_eq(match_count(subs, "/big/x", "group:all"), all);
        ck_assert_uint_eq(match_count(subs, "/big/x", "group:even"), all - odd);
        if (step == sizeof(plan) / sizeof(plan[0])) {
            break;
        }
        for (size_t k = plan[step][0]; k < plan[step][1]; k++) {
            if (live[k]) {
                subs_remove(subs, made[k]);
                live[k] = false;
            }
        }
        /* Grow the last chunk again after the first removals. */
        if (step == 1) {
            for (size_t k = 0; k < 6; k++) {
                made[k] = add(subs, "/big", EVENT_CHANGE_ALL, owners[k % OWNERS]);
                live[k] = true;
            }
        }
    }
    size_t left = 0;
    for (size_t k = 0; k < total; k++) {
        if (live[k] && left++ >= 10) {
            subs_remove(subs, made[k]);
            live[k] = false;
        }
    }
    ck_assert_uint_eq(subs_count(subs), 10);
    size_t first_live = 0;
    while (!live[first_live]) {
        first_live++;
    }
    ck_assert(patterns_is_filed(made[first_live]->pattern)); /* 10 is above half of 16 */
    size_t removed = 0;
    for (size_t k = 0; k < total; k++) {
        if (live[k]) {
            subs_remove(subs, made[k]);
            live[k] = false;
            if (++removed == 3) {
                break;
            }
        }
    }
    size_t still = 0;
    for (size_t k = 0; k < total; k++) {
        if (live[k]) {
            ck_assert(!patterns_is_filed(made[k]->pattern)); /* 7: scanned */
            still++;
        }
    }
    ck_assert_uint_eq(still, 7);
    ck_assert_uint_eq(match_count(subs, "/big/x", "group:all"), 7);
    for (size_t k = 0; k < total; k++) {
        if (live[k]) {
            subs_remove(subs, made[k]);
        }
    }
    ck_assert_uint_eq(subs_pattern_count(subs), 0);
    subs_free(subs);
    free(made);
    free(live);
    for (int i = 0; i < OWNERS; i++) {
        auth_principal_free(owners[i]);
    }
}
END_TEST

/* An owner holding many of the event's readers, in a filed pattern, is told once; a
 * principal nobody holds finds nobody. */
START_TEST(test_patterns_filed_member_reported_once_under_many_readers)
{
    const char *groups[] = {"g1", "g2", "g3", "g4", "g5", "g6"};
    auth_principal_t *many = owner_new("many", groups, 6);
    auth_principal_t *other = owner_new("other", NULL, 0);
    subs_t *subs = subs_new();
    sub_t *made[40];
    for (int k = 0; k < 40; k++) {
        made[k] = add(subs, "/f", EVENT_CHANGE_ALL, k == 7 ? many : other);
    }
    ck_assert(patterns_is_filed(made[0]->pattern));
    hstr_t readers[] = {HSTR_LIT("group:g6"), HSTR_LIT("group:g2"), HSTR_LIT("user:many"),
                        HSTR_LIT("group:g1"), HSTR_LIT("group:nobody")};
    event_t event;
    memset(&event, 0, sizeof(event));
    event.type = EVENT_CREATED;
    event.seq = 1;
    ck_assert_int_eq(path_parse("/f/x", 4, &event.resource_path, NULL), 0);
    event.readers = readers;
    event.reader_count = 5;
    struct found f = {0};
    ck_assert_uint_eq(subs_match_event(subs, &event, collect, &f), 1);
    ck_assert_ptr_eq(f.subs[0], made[7]);
    event.reader_count = 0;
    ck_assert_uint_eq(subs_match_event(subs, &event, collect, &f), 0);
    event.readers = readers + 4;
    event.reader_count = 1;
    ck_assert_uint_eq(subs_match_event(subs, &event, collect, &f), 0);
    free(f.subs);
    for (int k = 0; k < 40; k++) {
        subs_remove(subs, made[k]);
    }
    subs_free(subs);
    auth_principal_free(many);
    auth_principal_free(other);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("patterns");
    TCase *tc = tcase_create("patterns");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_patterns_match_brute_force);
    tcase_add_test(tc, test_patterns_prefix_holders_in_every_order);
    tcase_add_test(tc, test_patterns_only_lengths_with_records_are_probed);
    tcase_add_test(tc, test_patterns_every_pattern_found_after_the_table_grows);
    tcase_add_test(tc, test_patterns_table_doubles_over_a_while);
    tcase_add_test(tc, test_patterns_records_of_every_size);
    tcase_add_test(tc, test_patterns_filing_across_chunks);
    tcase_add_test(tc, test_patterns_filed_member_reported_once_under_many_readers);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
