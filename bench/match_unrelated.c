/*
 * bench/match_unrelated: the matching core's cost per event as unrelated subscriptions
 * grow. The claim under test (index.h): a match walks the resource's own segments, so its
 * cost does not grow with subscriptions elsewhere in the tree.
 *
 * For each size N the index holds N subscriptions on per-user folders
 * (/users/u<i>/files, 10 % with a wildcard segment: /users/u<i>/ * /x) plus a fixed set of
 * 64 subscriptions on one department tree, and the benchmark matches events on that
 * department tree (each event matches a handful of them). It prints events/s per N and
 * the ratio to the smallest N, measured in the same run.
 *
 *   build/bench/match_unrelated [max_subscriptions]   (default 1000000)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "index.h"
#include "path.h"

#define RELEVANT_SUBS 64
#define EVENTS 2000000

struct pattern_text {
    char text[96];
    path_t path;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool count_match(void *value, void *ctx)
{
    (void)value;
    (*(size_t *)ctx)++;
    return true;
}

static void parse_or_die(struct pattern_text *p)
{
    if (path_parse_pattern(p->text, strlen(p->text), &p->path, NULL) != 0) {
        fprintf(stderr, "bad pattern %s\n", p->text);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    size_t max_subs = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    static struct pattern_text relevant[RELEVANT_SUBS];
    struct pattern_text *unrelated = calloc(max_subs, sizeof(*unrelated));
    enum { EVENT_PATHS = 256 };
    static struct pattern_text events[EVENT_PATHS];
    index_t *idx = index_new();
    int value_token;

    printf("command: %s %zu\n", argv[0], max_subs);
    for (int i = 0; i < RELEVANT_SUBS; i++) {
        snprintf(relevant[i].text, sizeof(relevant[i].text), "/dms/cabinets/bau/folders/f%d",
                 i % 16);
        if (i >= 48) {
            snprintf(relevant[i].text, sizeof(relevant[i].text), "/dms/cabinets/*/folders/f%d",
                     i % 16);
        }
        parse_or_die(&relevant[i]);
        index_add(idx, &relevant[i].path, EVENT_CHANGE_ALL, &relevant[i]);
    }
    for (int i = 0; i < EVENT_PATHS; i++) {
        snprintf(events[i].text, sizeof(events[i].text),
                 "/dms/cabinets/bau/folders/f%d/documents/d%d", i % 16, i);
        if (path_parse(events[i].text, strlen(events[i].text), &events[i].path, NULL) != 0) {
            return 1;
        }
    }

    double base_rate = 0;
    size_t added = 0;
    for (size_t target = 1000; target <= max_subs; target *= 10) {
        for (; added < target; added++) {
            struct pattern_text *p = &unrelated[added];
            if (added % 10 == 0) {
                snprintf(p->text, sizeof(p->text), "/users/u%zu/*/x", added);
            } else {
                snprintf(p->text, sizeof(p->text), "/users/u%zu/files", added);
            }
            parse_or_die(p);
            index_add(idx, &p->path, EVENT_CHANGE_ALL, &value_token);
        }
        size_t matched = 0;
        double start = now_seconds();
        for (int i = 0; i < EVENTS; i++) {
            index_match(idx, &events[i % EVENT_PATHS].path, EVENT_UPDATED, count_match, &matched);
        }
        double elapsed = now_seconds() - start;
        double rate = EVENTS / elapsed;
        if (base_rate == 0) {
            base_rate = rate;
        }
        printf("subscriptions %9zu  events/s %12.0f  matches/event %.2f  cost ratio to 1k %.2f\n",
               added + RELEVANT_SUBS, rate, (double)matched / EVENTS, base_rate / rate);
    }
    index_free(idx);
    free(unrelated);
    return 0;
}
