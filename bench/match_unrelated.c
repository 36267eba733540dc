/*
 * bench/match_unrelated: the matching core's cost per event as unrelated subscriptions
 * grow. The claim under test (patterns.h): a match probes the resource's own prefixes, so
 * its cost does not grow with subscriptions elsewhere.
 *
 * For each size N, subs holds N subscriptions on per-user folders (/users/u<i>/files,
 * 10 % with a wildcard segment: /users/u<i>/ * /x), each user with an owner of their own,
 * plus a fixed set of 64 subscriptions on one department tree (a quarter with a wildcard
 * segment), and the benchmark matches events on that department tree with the reader
 * check (each event matches four of them). It prints events/s per N and the cost ratio to
 * the smallest N, measured in the same run.
 *
 *   build/bench/match_unrelated [max_subscriptions]   (default 1000000)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "clock.h"
#include "event.h"
#include "mem.h"
#include "path.h"
#include "subs.h"

#define RELEVANT_SUBS 64
#define EVENTS 2000000
#define EVENT_PATHS 256

struct event_text {
    char text[96];
    event_t event;
};

static bool count_match(sub_t *sub, void *ctx)
{
    (void)sub;
    (*(size_t *)ctx)++;
    return true;
}

static auth_principal_t *user_principal(size_t i, const char *group)
{
    auth_principal_t *p = xcalloc(1, sizeof(*p));
    char text[32];
    snprintf(text, sizeof(text), "u%zu", i);
    p->user = xstrdup(text);
    p->groups = xcalloc(2, sizeof(char *));
    p->groups[0] = xstrdup(group);
    p->group_count = 1;
    p->expires_at = INT64_MAX;
    return p;
}

static sub_t *add_or_die(subs_t *subs, const char *pattern, const auth_principal_t *owner)
{
    sub_t *sub;
    struct herr err;
    if (subs_add(subs, pattern, strlen(pattern), EVENT_CHANGE_ALL, owner, NULL, &sub, &err) != 0) {
        fprintf(stderr, "match_unrelated: %s: %s\n", pattern, err.message);
        exit(1);
    }
    return sub;
}

int main(int argc, char **argv)
{
    size_t max_subs = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    subs_t *subs = subs_new();
    auth_principal_t *bau = user_principal(0, "bau");
    sub_t **made = xmalloc((max_subs + RELEVANT_SUBS) * sizeof(*made));
    auth_principal_t **owners = xcalloc(max_subs, sizeof(*owners));
    static struct event_text events[EVENT_PATHS];
    static hstr_t readers[] = {HSTR_LIT("group:bau")};
    char text[96];
    size_t added = 0;

    printf("command: %s %zu\n", argv[0], max_subs);
    for (int i = 0; i < RELEVANT_SUBS; i++) {
        snprintf(text, sizeof(text),
                 i < 48 ? "/dms/cabinets/bau/folders/f%d" : "/dms/cabinets/*/folders/f%d", i % 16);
        made[added++] = add_or_die(subs, text, bau);
    }
    for (int i = 0; i < EVENT_PATHS; i++) {
        struct event_text *e = &events[i];
        int len = snprintf(e->text, sizeof(e->text), "/dms/cabinets/bau/folders/f%d/documents/d%d",
                           i % 16, i);
        e->event.type = EVENT_UPDATED;
        e->event.readers = readers;
        e->event.reader_count = 1;
        if (path_parse(e->text, (size_t)len, &e->event.resource_path, NULL) != 0) {
            return 1;
        }
    }

    double base_rate = 0;
    size_t unrelated = 0;
    for (size_t target = 1000; target <= max_subs; target *= 10) {
        for (; unrelated < target; unrelated++) {
            owners[unrelated] = user_principal(unrelated + 1, "staff");
            snprintf(text, sizeof(text),
                     unrelated % 10 == 0 ? "/users/u%zu/*/x" : "/users/u%zu/files", unrelated + 1);
            made[added++] = add_or_die(subs, text, owners[unrelated]);
        }
        size_t matched = 0;
        uint64_t seq = 1;
        double start = clock_monotonic_seconds();
        for (int i = 0; i < EVENTS; i++) {
            events[i % EVENT_PATHS].event.seq = seq++;
            subs_match_event(subs, &events[i % EVENT_PATHS].event, count_match, &matched);
        }
        double elapsed = clock_monotonic_seconds() - start;
        double rate = EVENTS / elapsed;
        if (base_rate == 0) {
            base_rate = rate;
        }
        printf("subscriptions %9zu  events/s %12.0f  matches/event %.2f  cost ratio to 1k %.2f\n",
               unrelated + RELEVANT_SUBS, rate, (double)matched / EVENTS, base_rate / rate);
        fflush(stdout);
    }
    for (size_t i = 0; i < added; i++) {
        subs_remove(subs, made[i]);
    }
    for (size_t i = 0; i < unrelated; i++) {
        auth_principal_free(owners[i]);
    }
    auth_principal_free(bau);
    subs_free(subs);
    free(made);
    free(owners);
    return 0;
}
