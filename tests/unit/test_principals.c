/* Principals: interning shares ids and owner sets, ids are released and reused, readers
 * translate to sorted unique ids, and the id check agrees with auth_may_read. */

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "principals.h"
#include "unit.h"

/* A principal on the heap (release with auth_principal_free); groups may repeat. */
static auth_principal_t *principal(const char *user, const char *const *groups, size_t count)
{
    return unit_principal(user, groups, count);
}

static bool ids_strictly_ascending(const uint32_t *ids, size_t count)
{
    for (size_t i = 1; i < count; i++) {
        if (ids[i - 1] >= ids[i]) {
            return false;
        }
    }
    return true;
}

static void translate(const principals_t *p, const char *const *names, size_t count,
                      reader_ids_t *out)
{
    hstr_t readers[16];
    ck_assert_uint_le(count, 16);
    for (size_t i = 0; i < count; i++) {
        readers[i] = hstr_from_cstr(names[i]);
    }
    principals_readers(p, readers, count, out);
}

/* The id of one principal text, or UINT32_MAX when nobody holds it. */
static uint32_t id_of(const principals_t *p, const char *text)
{
    reader_ids_t r;
    translate(p, &text, 1, &r);
    return r.count == 1 ? r.ids[0] : UINT32_MAX;
}

START_TEST(test_principals_owner_sets_are_shared_and_counted)
{
    principals_t *p = principals_new();
    const char *bau_fin[] = {"bau", "fin"};
    const char *fin_bau[] = {"fin", "bau"};
    const char *bau_fin_bau[] = {"bau", "fin", "bau", "fin"};
    auth_principal_t *a1 = principal("anna", bau_fin, 2);
    auth_principal_t *a2 = principal("anna", bau_fin, 2);
    auth_principal_t *a3 = principal("anna", fin_bau, 2);
    auth_principal_t *a4 = principal("anna", bau_fin_bau, 4);
    auth_principal_t *otto = principal("otto", bau_fin, 2);
    auth_principal_t *anna_only = principal("anna", NULL, 0);

    const owner_set_t *s1 = principals_owner_get(p, a1);
    ck_assert_uint_eq(s1->refs, 1);
    ck_assert_uint_eq(s1->count, 3);
    ck_assert(ids_strictly_ascending(s1->ids, s1->count));
    ck_assert_uint_eq(principals_count(p), 3);

    /* Same user and groups in another allocation, another order, with repeats: one set. */
    ck_assert_ptr_eq(principals_owner_get(p, a2), s1);
    ck_assert_ptr_eq(principals_owner_get(p, a3), s1);
    ck_assert_ptr_eq(principals_owner_get(p, a4), s1);
    ck_assert_uint_eq(s1->refs, 4);
    ck_assert_uint_eq(s1->count, 3);
    ck_assert_uint_eq(principals_count(p), 3);

    /* Another user with the same groups shares the group ids, not the set. */
    const owner_set_t *so = principals_owner_get(p, otto);
    ck_assert_ptr_ne(so, s1);
    ck_assert_uint_eq(so->count, 3);
    ck_assert_uint_eq(principals_count(p), 4);
    uint32_t bau = id_of(p, "group:bau");
    uint32_t fin = id_of(p, "group:fin");
    uint32_t anna = id_of(p, "user:anna");
    uint32_t otto_id = id_of(p, "user:otto");
    ck_assert_uint_ne(bau, UINT32_MAX);
    ck_assert_uint_ne(fin, UINT32_MAX);
    ck_assert_uint_ne(anna, otto_id);
    for (uint32_t i = 0; i < 3; i++) {
        ck_assert(s1->ids[i] == bau || s1->ids[i] == fin || s1->ids[i] == anna);
        ck_assert(so->ids[i] == bau || so->ids[i] == fin || so->ids[i] == otto_id);
    }

    /* A subset of the principals is a set of its own. */
    const owner_set_t *sa = principals_owner_get(p, anna_only);
    ck_assert_ptr_ne(sa, s1);
    ck_assert_uint_eq(sa->count, 1);
    ck_assert_uint_eq(sa->ids[0], anna);
    ck_assert_uint_eq(principals_count(p), 4);

    /* Putting back one reference keeps the set and its ids. */
    principals_owner_put(p, s1);
    principals_owner_put(p, s1);
    principals_owner_put(p, s1);
    ck_assert_uint_eq(s1->refs, 1);
    ck_assert_uint_eq(id_of(p, "group:bau"), bau);
    principals_owner_put(p, s1); /* last: anna's ids stay, held by sa */
    ck_assert_uint_eq(id_of(p, "user:anna"), anna);
    ck_assert_uint_eq(principals_count(p), 4);
    principals_owner_put(p, so);
    ck_assert_uint_eq(id_of(p, "group:bau"), UINT32_MAX);
    ck_assert_uint_eq(id_of(p, "user:otto"), UINT32_MAX);
    ck_assert_uint_eq(principals_count(p), 1);
    principals_owner_put(p, sa);
    ck_assert_uint_eq(principals_count(p), 0);
    principals_owner_put(p, NULL);

    principals_free(p);
    principals_free(NULL);
    auth_principal_free(a1);
    auth_principal_free(a2);
    auth_principal_free(a3);
    auth_principal_free(a4);
    auth_principal_free(otto);
    auth_principal_free(anna_only);
}
END_TEST

START_TEST(test_principals_user_and_group_of_one_name_are_distinct)
{
    principals_t *p = principals_new();
    const char *x[] = {"x"};
    auth_principal_t *px = principal("x", x, 1);
    const owner_set_t *s = principals_owner_get(p, px);
    ck_assert_uint_eq(s->count, 2);
    ck_assert_uint_eq(principals_count(p), 2);
    ck_assert_uint_ne(id_of(p, "user:x"), id_of(p, "group:x"));
    principals_owner_put(p, s);
    ck_assert_uint_eq(principals_count(p), 0);
    principals_free(p);
    auth_principal_free(px);
}
END_TEST

#define MANY_OWNERS 400

/* Owner i: user u<i>, with groups own<i> (twice when own_twice: a repeated group is
 * interned once) and team<i % teams>. */
static auth_principal_t *numbered_owner(int i, int teams, bool own_twice)
{
    char user[32];
    char own[32];
    char team[32];
    snprintf(user, sizeof(user), "u%d", i);
    snprintf(own, sizeof(own), "own%d", i);
    snprintf(team, sizeof(team), "team%d", i % teams);
    const char *groups[] = {own, team, own};
    return principal(user, groups, own_twice ? 3 : 2);
}

/* How many of owners 0..n-1 (user u<i>, group own<i> among their groups) translate wrongly:
 * their user and own group (and a group nobody holds) must give two ids of their set, or
 * none once the owner left (sets[i] NULL). */
static int owners_translated_wrongly(const principals_t *p, const owner_set_t *const *sets, int n)
{
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        char user[32];
        char group[32];
        snprintf(user, sizeof(user), "user:u%d", i);
        snprintf(group, sizeof(group), "group:own%d", i);
        const char *names[] = {user, group, "group:nobody"};
        reader_ids_t r;
        translate(p, names, 3, &r);
        if (sets[i] == NULL) {
            wrong += r.count != 0;
            continue;
        }
        bool ok = r.count == 2 && !r.is_everyone && principals_may_read(sets[i], &r);
        for (size_t k = 0; ok && k < r.count; k++) {
            bool in_set = false;
            for (uint32_t j = 0; j < sets[i]->count; j++) {
                in_set = in_set || sets[i]->ids[j] == r.ids[k];
            }
            ok = in_set;
        }
        wrong += !ok;
    }
    return wrong;
}

/* Removing every other owner leaves the rest findable, and freed ids are reused before new
 * ones are made. (test_principals_tables_double_over_a_while has the tables grow.) */
START_TEST(test_principals_count_returns_to_zero_and_ids_are_reused)
{
    principals_t *p = principals_new();
    static auth_principal_t *owners[MANY_OWNERS];
    static const owner_set_t *sets[MANY_OWNERS];
    uint32_t max_id = 0;
    for (int i = 0; i < MANY_OWNERS; i++) {
        owners[i] = numbered_owner(i, 7, true);
        sets[i] = principals_owner_get(p, owners[i]);
        ck_assert_uint_eq(sets[i]->count, 3);
        for (uint32_t k = 0; k < sets[i]->count; k++) {
            max_id = sets[i]->ids[k] > max_id ? sets[i]->ids[k] : max_id;
        }
    }
    ck_assert_uint_eq(principals_count(p), 2 * MANY_OWNERS + 7);
    ck_assert_uint_eq(max_id + 1, principals_count(p)); /* dense while nothing was freed */

    for (int i = 0; i < MANY_OWNERS; i += 2) {
        principals_owner_put(p, sets[i]);
        sets[i] = NULL;
    }
    ck_assert_uint_eq(principals_count(p), MANY_OWNERS + 7);
    int lost = owners_translated_wrongly(p, sets, MANY_OWNERS);
    ck_assert_msg(lost == 0, "%d owners translate wrongly after half were released", lost);

    /* New names take freed ids first: none exceeds the largest id seen so far. */
    static auth_principal_t *fresh[MANY_OWNERS / 2];
    static const owner_set_t *fresh_sets[MANY_OWNERS / 2];
    for (int i = 0; i < MANY_OWNERS / 2; i++) {
        char user[32];
        char group[32];
        snprintf(user, sizeof(user), "new%d", i);
        snprintf(group, sizeof(group), "newgroup%d", i);
        const char *groups[] = {group};
        fresh[i] = principal(user, groups, 1);
        fresh_sets[i] = principals_owner_get(p, fresh[i]);
        for (uint32_t k = 0; k < fresh_sets[i]->count; k++) {
            ck_assert_uint_le(fresh_sets[i]->ids[k], max_id);
        }
    }
    ck_assert_uint_eq(principals_count(p), 2 * MANY_OWNERS + 7);

    for (int i = 0; i < MANY_OWNERS; i++) {
        principals_owner_put(p, sets[i]);
    }
    for (int i = 0; i < MANY_OWNERS / 2; i++) {
        principals_owner_put(p, fresh_sets[i]);
        auth_principal_free(fresh[i]);
    }
    ck_assert_uint_eq(principals_count(p), 0);
    ck_assert_uint_eq(id_of(p, "user:u1"), UINT32_MAX);
    principals_free(p);
    for (int i = 0; i < MANY_OWNERS; i++) {
        auth_principal_free(owners[i]);
    }
}
END_TEST

START_TEST(test_principals_readers_translate_sorted_unique_known_only)
{
    principals_t *p = principals_new();
    const char *groups[] = {"bau", "fin", "hr"};
    auth_principal_t *anna = principal("anna", groups, 3);
    const owner_set_t *s = principals_owner_get(p, anna);
    reader_ids_t r;

    /* Unknown names, the wrong prefix, a bare prefix and near misses are dropped. */
    const char *unknown[] = {"user:otto", "user:bau",   "group:anna", "group:", "user:",
                             "group:ba",  "group:bauX", "anna",       "*x"};
    translate(p, unknown, 9, &r);
    ck_assert_uint_eq(r.count, 0);
    ck_assert(!r.is_everyone);
    ck_assert(!principals_may_read(s, &r));

    /* Duplicates collapse, the result is sorted whatever the input order. */
    const char *mixed[] = {"group:hr",  "user:anna", "group:bau",   "group:hr",
                           "user:anna", "group:fin", "user:nobody", "group:bau"};
    translate(p, mixed, 8, &r);
    ck_assert_uint_eq(r.count, 4);
    ck_assert(!r.is_everyone);
    ck_assert(ids_strictly_ascending(r.ids, r.count));
    for (size_t i = 0; i < r.count; i++) {
        ck_assert_uint_eq(r.ids[i], s->ids[i]);
    }

    /* `*` anywhere sets is_everyone; it is not an id. */
    const char *star_last[] = {"user:nobody", "*"};
    translate(p, star_last, 2, &r);
    ck_assert(r.is_everyone);
    ck_assert_uint_eq(r.count, 0);
    const char *star_first[] = {"*", "group:fin"};
    translate(p, star_first, 2, &r);
    ck_assert(r.is_everyone);
    ck_assert_uint_eq(r.count, 1);
    ck_assert_uint_eq(r.ids[0], id_of(p, "group:fin"));

    /* No readers: nothing, and not everyone. */
    principals_readers(p, NULL, 0, &r);
    ck_assert(!r.is_everyone);
    ck_assert_uint_eq(r.count, 0);

    /* Readers are views: only their len bytes count, no terminator needed. */
    const char buffer[] = "group:finXYZuser:annaQ";
    hstr_t views[] = {{buffer, 9}, {buffer + 12, 9}, {buffer, 8}};
    principals_readers(p, views, 3, &r);
    ck_assert_uint_eq(r.count, 2);
    ck_assert(principals_may_read(s, &r));

    principals_owner_put(p, s);
    ck_assert_uint_eq(principals_count(p), 0);
    principals_free(p);
    auth_principal_free(anna);
}
END_TEST

/* An owner set made by hand, for the edges of the intersection. Caller frees it. */
static owner_set_t *fixed(const uint32_t *ids, uint32_t count)
{
    owner_set_t *s = calloc(1, sizeof(*s) + 4 * sizeof(uint32_t));
    s->count = count;
    if (count > 0) {
        memcpy(s->ids, ids, count * sizeof(uint32_t));
    }
    return s;
}

static reader_ids_t readers_of(const uint32_t *ids, size_t count, bool is_everyone)
{
    reader_ids_t r;
    r.is_everyone = is_everyone;
    r.count = count;
    if (count > 0) {
        memcpy(r.ids, ids, count * sizeof(uint32_t));
    }
    principals_readers_filter(&r);
    return r;
}

START_TEST(test_principals_may_read_edges)
{
    const uint32_t owner[] = {1, 5, 9};
    owner_set_t *s = fixed(owner, 3);
    static reader_ids_t r;

    const uint32_t first[] = {1};
    const uint32_t last[] = {9};
    const uint32_t middle[] = {0, 5, 100};
    const uint32_t between[] = {0, 2, 6, 8, 10};
    const uint32_t beyond[] = {10, 11};
    const uint32_t below[] = {0};
    r = readers_of(first, 1, false);
    ck_assert(principals_may_read(s, &r));
    r = readers_of(last, 1, false);
    ck_assert(principals_may_read(s, &r));
    r = readers_of(middle, 3, false);
    ck_assert(principals_may_read(s, &r));
    r = readers_of(between, 5, false);
    ck_assert(!principals_may_read(s, &r));
    r = readers_of(beyond, 2, false);
    ck_assert(!principals_may_read(s, &r));
    r = readers_of(below, 1, false);
    ck_assert(!principals_may_read(s, &r));

    /* Empty readers: nobody, unless everyone. */
    r = readers_of(NULL, 0, false);
    ck_assert(!principals_may_read(s, &r));
    r = readers_of(NULL, 0, true);
    ck_assert(principals_may_read(s, &r));
    r = readers_of(beyond, 2, true);
    ck_assert(principals_may_read(s, &r));

    /* An empty owner reads only what everyone may. */
    owner_set_t *empty = fixed(NULL, 0);
    r = readers_of(first, 1, false);
    ck_assert(!principals_may_read(empty, &r));
    r = readers_of(NULL, 0, false);
    ck_assert(!principals_may_read(empty, &r));
    r = readers_of(NULL, 0, true);
    ck_assert(principals_may_read(empty, &r));
    free(s);
    free(empty);
}
END_TEST

START_TEST(test_principals_may_read_real_principals)
{
    principals_t *p = principals_new();
    const char *bau[] = {"bau"};
    auth_principal_t *anna = principal("anna", bau, 1);
    auth_principal_t *otto = principal("otto", NULL, 0);
    const owner_set_t *sa = principals_owner_get(p, anna);
    const owner_set_t *so = principals_owner_get(p, otto);
    reader_ids_t r;

    const char *user_match[] = {"user:anna"};
    translate(p, user_match, 1, &r);
    ck_assert(principals_may_read(sa, &r) && !principals_may_read(so, &r));
    const char *group_match[] = {"user:nobody", "group:bau"};
    translate(p, group_match, 2, &r);
    ck_assert(principals_may_read(sa, &r) && !principals_may_read(so, &r));
    const char *no_match[] = {"group:otto", "user:bau"};
    translate(p, no_match, 2, &r);
    ck_assert(!principals_may_read(sa, &r) && !principals_may_read(so, &r));
    const char *everyone[] = {"*"};
    translate(p, everyone, 1, &r);
    ck_assert(principals_may_read(sa, &r) && principals_may_read(so, &r));

    principals_owner_put(p, sa);
    principals_owner_put(p, so);
    principals_free(p);
    auth_principal_free(anna);
    auth_principal_free(otto);
}
END_TEST

/* Names around the 256-byte stack buffer of intern ("user:" is 5 bytes, "group:" 6) and
 * far past it. */
START_TEST(test_principals_long_names)
{
    static const size_t lengths[] = {250, 251, 252, 300, 1000};
    principals_t *p = principals_new();
    for (size_t k = 0; k < sizeof(lengths) / sizeof(lengths[0]); k++) {
        size_t n = lengths[k];
        char *name = malloc(n + 1);
        memset(name, 'a' + (int)k, n);
        name[n] = '\0';
        char *other = strdup(name);
        other[n - 1] = 'Z'; /* differs only in the last byte */
        const char *groups[] = {name};
        auth_principal_t *a = principal(name, groups, 1);
        auth_principal_t *b = principal(name, groups, 1);
        const owner_set_t *sa = principals_owner_get(p, a);
        const owner_set_t *sb = principals_owner_get(p, b);
        ck_assert_ptr_eq(sa, sb);
        ck_assert_uint_eq(sa->count, 2);

        char *user_reader = malloc(n + 8);
        char *group_reader = malloc(n + 8);
        char *other_reader = malloc(n + 8);
        snprintf(user_reader, n + 8, "user:%s", name);
        snprintf(group_reader, n + 8, "group:%s", name);
        snprintf(other_reader, n + 8, "group:%s", other);
        hstr_t readers[] = {hstr_from_cstr(user_reader)};
        reader_ids_t r;
        principals_readers(p, readers, 1, &r);
        ck_assert_uint_eq(r.count, 1);
        ck_assert(principals_may_read(sa, &r));
        readers[0] = hstr_from_cstr(group_reader);
        principals_readers(p, readers, 1, &r);
        ck_assert_uint_eq(r.count, 1);
        ck_assert(principals_may_read(sa, &r));
        readers[0] = hstr_from_cstr(other_reader);
        principals_readers(p, readers, 1, &r);
        ck_assert_uint_eq(r.count, 0);

        principals_owner_put(p, sa);
        principals_owner_put(p, sb);
        ck_assert_uint_eq(principals_count(p), 0);
        auth_principal_free(a);
        auth_principal_free(b);
        free(user_reader);
        free(group_reader);
        free(other_reader);
        free(name);
        free(other);
    }
    principals_free(p);
}
END_TEST

/* ---- the id check against auth_may_read ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t bound)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % bound);
}

static const char *const user_pool[] = {"u0", "u1", "u2", "u3", "g0"};
static const char *const group_pool[] = {"g0", "g1", "g2", "g3", "u1", "g"};
/* Readers: everyone, held and unheld users and groups, and crossed prefixes. */
static const char *const reader_pool[] = {
    "*",        "user:u0",  "user:u1",  "user:u2",  "user:u3", "user:u9",  "user:g0",  "group:g0",
    "group:g1", "group:g2", "group:g3", "group:u1", "group:g", "group:g9", "group:u0", "user:g"};

#define POOL(a) (sizeof(a) / sizeof((a)[0]))
#define LIVE_MAX 24
#define PROPERTY_ROUNDS 4000

static int describe(char *out, size_t cap, const auth_principal_t *owner, const char **readers,
                    size_t count)
{
    int n = snprintf(out, cap, "owner %s groups [", owner->user);
    for (size_t i = 0; i < owner->group_count; i++) {
        n += snprintf(out + n, cap - (size_t)n, "%s%s", i ? " " : "", owner->groups[i]);
    }
    n += snprintf(out + n, cap - (size_t)n, "] readers [");
    for (size_t i = 0; i < count; i++) {
        n += snprintf(out + n, cap - (size_t)n, "%s%s", i ? " " : "", readers[i]);
    }
    n += snprintf(out + n, cap - (size_t)n, "]");
    return n;
}

START_TEST(test_principals_may_read_agrees_with_auth_may_read)
{
    principals_t *p = principals_new();
    auth_principal_t *live[LIVE_MAX] = {0};
    const owner_set_t *live_sets[LIVE_MAX] = {0};
    int mismatches = 0;
    char first[1024] = "";

    for (int round = 0; round < PROPERTY_ROUNDS; round++) {
        /* Replace one live owner now and then, so ids are released and reused. */
        size_t slot = rnd(LIVE_MAX);
        if (live[slot] == NULL || rnd(4) == 0) {
            if (live[slot] != NULL) {
                principals_owner_put(p, live_sets[slot]);
                auth_principal_free(live[slot]);
            }
            const char *groups[5];
            size_t group_count = rnd(6);
            for (size_t g = 0; g < group_count; g++) {
                groups[g] = group_pool[rnd(POOL(group_pool))];
            }
            live[slot] = principal(user_pool[rnd(POOL(user_pool))], groups, group_count);
            live_sets[slot] = principals_owner_get(p, live[slot]);
        }
        const char *names[6];
        hstr_t readers[6];
        size_t count = rnd(7);
        for (size_t i = 0; i < count; i++) {
            /* `*` is rare, or nearly every case would pass. */
            names[i] = reader_pool[1 + rnd(POOL(reader_pool) - 1)];
            if (rnd(20) == 0) {
                names[i] = "*";
            }
            readers[i] = hstr_from_cstr(names[i]);
        }
        reader_ids_t r;
        principals_readers(p, readers, count, &r);
        bool expected = auth_may_read(live[slot], readers, count);
        if (principals_may_read(live_sets[slot], &r) != expected) {
            if (mismatches++ == 0) {
                int n = describe(first, sizeof(first), live[slot], names, count);
                snprintf(first + n, sizeof(first) - (size_t)n, ": auth_may_read says %d", expected);
            }
        }
    }
    ck_assert_msg(mismatches == 0, "%d of %d checks disagree; first: %s", mismatches,
                  PROPERTY_ROUNDS, first);
    for (size_t i = 0; i < LIVE_MAX; i++) {
        principals_owner_put(p, live_sets[i]);
        auth_principal_free(live[i]);
    }
    ck_assert_uint_eq(principals_count(p), 0);
    principals_free(p);
}
END_TEST

START_TEST(test_principals_is_first_shared_real_principals)
{
    principals_t *p = principals_new();
    const char *bau_fin[] = {"bau", "fin"};
    auth_principal_t *anna = principal("anna", bau_fin, 2);
    const owner_set_t *sa = principals_owner_get(p, anna);
    auth_principal_t *otto = principal("otto", NULL, 0);
    const owner_set_t *so = principals_owner_get(p, otto);
    uint32_t bau = id_of(p, "group:bau");
    uint32_t fin = id_of(p, "group:fin");
    uint32_t user_otto = id_of(p, "user:otto");
    reader_ids_t r;
    const char *readers[] = {"group:fin", "user:otto", "group:bau"};
    translate(p, readers, 3, &r);

    /* anna shares bau and fin with the readers: only the smaller of the two is hers. */
    uint32_t smaller = bau < fin ? bau : fin;
    uint32_t larger = bau < fin ? fin : bau;
    ck_assert(principals_is_first_shared(sa, &r, smaller));
    ck_assert(!principals_is_first_shared(sa, &r, larger));
    /* A reader anna does not hold: what a colliding tag would offer. */
    ck_assert(!principals_is_first_shared(sa, &r, user_otto));
    /* otto shares only himself. */
    ck_assert(principals_is_first_shared(so, &r, user_otto));
    ck_assert(!principals_is_first_shared(so, &r, bau));
    ck_assert(!principals_is_first_shared(so, &r, fin));

    principals_owner_put(p, sa);
    principals_owner_put(p, so);
    auth_principal_free(anna);
    auth_principal_free(otto);
    principals_free(p);
}
END_TEST

/* Sorted unique ids drawn from 0..range-1, count of them at most. */
static uint32_t random_ids(uint32_t *ids, uint32_t count, uint32_t range)
{
    uint32_t n = 0;
    for (uint32_t id = 0; id < range && n < count; id++) {
        if ((uint32_t)rand() % range < count) {
            ids[n++] = id;
        }
    }
    return n;
}

START_TEST(test_principals_is_first_shared_agrees_with_the_smallest_common_id)
{
    /* Ids from a small range, so that owners and readers overlap often and the filter's
     * bits collide; the answer must be the plain one: the smallest id both hold. */
    srand(5);
    enum { ROUNDS = 20000, RANGE = 300, MAX_IDS = 20 };
    owner_set_t *owner = calloc(1, sizeof(*owner) + MAX_IDS * sizeof(uint32_t));
    static reader_ids_t r;
    int mismatches = 0;
    for (int round = 0; round < ROUNDS; round++) {
        owner->count = random_ids(owner->ids, 1 + (uint32_t)rand() % MAX_IDS, RANGE);
        r.is_everyone = false;
        r.count = random_ids(r.ids, 1 + (uint32_t)rand() % MAX_IDS, RANGE);
        principals_readers_filter(&r);
        uint32_t smallest = UINT32_MAX;
        for (uint32_t i = 0; i < owner->count && smallest == UINT32_MAX; i++) {
            for (size_t j = 0; j < r.count; j++) {
                if (owner->ids[i] == r.ids[j]) {
                    smallest = owner->ids[i];
                    break;
                }
            }
        }
        for (size_t j = 0; j < r.count; j++) {
            if (principals_is_first_shared(owner, &r, r.ids[j]) != (r.ids[j] == smallest)) {
                mismatches++;
            }
        }
        ck_assert(principals_share_any(owner, &r) == (smallest != UINT32_MAX));
    }
    ck_assert_msg(mismatches == 0, "%d answers differ from the smallest common id", mismatches);
    free(owner);
}
END_TEST

/* Thousands of owners: both tables double several times and are read and changed while a
 * doubling moves (ptable.h). Every owner's names translate to ids of its own set throughout,
 * sets stay shared, released names are gone, and all of it holds once the moves are done. */
#define DOUBLING_OWNERS 6000

START_TEST(test_principals_tables_double_over_a_while)
{
    principals_t *p = principals_new();
    static auth_principal_t *owners[DOUBLING_OWNERS];
    static const owner_set_t *sets[DOUBLING_OWNERS];
    size_t moving_seen = 0;
    for (int i = 0; i < DOUBLING_OWNERS; i++) {
        owners[i] = numbered_owner(i, 1500, false);
        sets[i] = principals_owner_get(p, owners[i]);
        /* A doubling under way: principals_maintain has slots left to move. */
        if (principals_maintain(p, 0) > 0) {
            moving_seen++;
            if (moving_seen % 50 == 1) {
                ck_assert_int_eq(owners_translated_wrongly(p, sets, i + 1), 0);
            }
        }
    }
    ck_assert_uint_gt(moving_seen, 0);
    ck_assert_uint_eq(principals_count(p), 2 * DOUBLING_OWNERS + 1500);
    ck_assert_uint_gt(principals_table_bytes(p), 0);
    ck_assert_int_eq(owners_translated_wrongly(p, sets, DOUBLING_OWNERS), 0);
    /* The same principal again shares its set, and so does a copy of it. */
    auth_principal_t *again = principal("u7", (const char *const[]){"own7", "team7"}, 2);
    ck_assert_ptr_eq(principals_owner_get(p, again), sets[7]);
    principals_owner_put(p, sets[7]);
    auth_principal_free(again);
    /* Every other owner leaves, the tables' moves not finished (nothing maintains them). */
    for (int i = 0; i < DOUBLING_OWNERS; i += 2) {
        principals_owner_put(p, sets[i]);
        sets[i] = NULL;
    }
    /* The users and own groups of half of them, and the odd teams (odd owners' teams). */
    ck_assert_uint_eq(principals_count(p), DOUBLING_OWNERS + 1500 / 2);
    ck_assert_int_eq(owners_translated_wrongly(p, sets, DOUBLING_OWNERS), 0);
    while (principals_maintain(p, 100) > 0) {
    }
    ck_assert_int_eq(owners_translated_wrongly(p, sets, DOUBLING_OWNERS), 0);
    for (int i = 1; i < DOUBLING_OWNERS; i += 2) {
        principals_owner_put(p, sets[i]);
        sets[i] = NULL;
    }
    ck_assert_uint_eq(principals_count(p), 0);
    ck_assert_int_eq(owners_translated_wrongly(p, sets, DOUBLING_OWNERS), 0);
    principals_free(p);
    for (int i = 0; i < DOUBLING_OWNERS; i++) {
        auth_principal_free(owners[i]);
    }
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("principals");
    TCase *tc = tcase_create("principals");
    tcase_add_test(tc, test_principals_owner_sets_are_shared_and_counted);
    tcase_add_test(tc, test_principals_user_and_group_of_one_name_are_distinct);
    tcase_add_test(tc, test_principals_count_returns_to_zero_and_ids_are_reused);
    tcase_add_test(tc, test_principals_tables_double_over_a_while);
    tcase_add_test(tc, test_principals_readers_translate_sorted_unique_known_only);
    tcase_add_test(tc, test_principals_may_read_edges);
    tcase_add_test(tc, test_principals_may_read_real_principals);
    tcase_add_test(tc, test_principals_long_names);
    tcase_add_test(tc, test_principals_may_read_agrees_with_auth_may_read);
    tcase_add_test(tc, test_principals_is_first_shared_real_principals);
    tcase_add_test(tc, test_principals_is_first_shared_agrees_with_the_smallest_common_id);
    suite_add_tcase(suite, tc);
    return unit_run(suite);
}
