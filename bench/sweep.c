/*
 * bench/sweep: what the once-a-second sweep of persistent (Graph) subscriptions costs the
 * service thread, during which no delivery goes out.
 *
 *   build/bench/sweep [N]      N persistent subscriptions, default 100000
 *
 * The subscriptions expire evenly over three days (Graph's longest lifetime for most
 * resources); 1 % of them have a webhook cursor that moved since the last second. For each
 * second's work it prints the time of a walk of every persistent subscription (what the
 * sweep and the cursor flush each did before) and of asking subs for what is due (the
 * expirations and reauthorization notices within the next 10 minutes, and the moved
 * cursors), in the same run, and the ratio.
 *
 * Then what creating a subscription costs to check for an identical one and count the
 * user's (5,000 users share them): a walk of every persistent subscription, as before,
 * against the user's own list.
 *
 * First it prints the longest any one of the N adds took: what a subscription created
 * through the REST API can hold the service thread for (the table of subscriptions by id
 * doubling, above all). Then how long restoring them all from their documents takes, in a
 * random order as the embedded store hands them over at startup, up to the first read
 * of the list of all; it exits 1 unless that list holds them all in creation order.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "mem.h"
#include "subs.h"

#define LIFETIME_S (3 * 24 * 3600)
#define LEAD_S 600
#define ROUNDS 5

/* Restores every persistent subscription of subs into a fresh index in a random order,
 * timed up to the first read of the list of all, which must hold them all in creation
 * order. */
static int restore_shuffled(subs_t *subs, size_t n)
{
    char **ids = xmalloc(n * sizeof(*ids));
    char **docs = xmalloc(n * sizeof(*docs));
    size_t k = 0;
    for (sub_t *sub = subs_first_persistent(subs); sub != NULL; sub = subs_next_persistent(sub)) {
        ids[k] = xstrdup(SUBS_ID_TEXT(sub));
        docs[k++] = subs_to_json(sub);
    }
    uint64_t state = 2026;
    for (size_t i = n - 1; i > 0; i--) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t j = (size_t)(state >> 33) % (i + 1);
        char *t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
        t = docs[i];
        docs[i] = docs[j];
        docs[j] = t;
    }
    subs_t *back = subs_new();
    double start = clock_monotonic_seconds();
    for (size_t i = 0; i < n; i++) {
        sub_t *sub;
        struct herr err;
        if (subs_restore(back, ids[i], docs[i], &sub, &err) != 0) {
            fprintf(stderr, "sweep: restore: %s\n", err.message);
            return 1;
        }
    }
    size_t listed = 0;
    uint64_t last = 0;
    for (sub_t *sub = subs_first_persistent(back); sub != NULL; sub = subs_next_persistent(sub)) {
        if (sub->rest->created_order <= last) {
            fprintf(stderr, "sweep: restored list out of creation order at %zu\n", listed);
            return 1;
        }
        last = sub->rest->created_order;
        listed++;
    }
    double took = clock_monotonic_seconds() - start;
    if (listed != n) {
        fprintf(stderr, "sweep: %zu restored, %zu listed\n", n, listed);
        return 1;
    }
    printf("restored in a random order: %zu in %.3f s\n", n, took);
    subs_free(back);
    for (size_t i = 0; i < n; i++) {
        free(ids[i]);
        free(docs[i]);
    }
    free(ids);
    free(docs);
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    if (n == 0) {
        fprintf(stderr, "usage: %s [N] (N above 0)\n", argv[0]);
        return 2;
    }
    printf("command: %s %zu\n", argv[0], n);
    subs_t *subs = subs_new();
    int64_t now = 1800000000;
    char pattern[64];
    double longest_add = 0.0;
    for (size_t i = 0; i < n; i++) {
        auth_principal_t *owner = xcalloc(1, sizeof(*owner));
        char user[32];
        snprintf(user, sizeof(user), "u%zu", i % 5000);
        owner->user = xstrdup(user);
        owner->expires_at = INT64_MAX;
        sub_rest_t rest;
        memset(&rest, 0, sizeof(rest));
        rest.notification_url = xstrdup("https://svc.example/hook");
        rest.resource_given = xstrdup("/dms/a");
        snprintf(pattern, sizeof(pattern), "/users/u%zu/files", i);
        sub_t *sub;
        struct herr err;
        int64_t expires_at = now + 1 + (int64_t)((i * 7919) % LIFETIME_S);
        double add_start = clock_monotonic_seconds();
        if (subs_add_persistent(subs, SUB_WEBHOOK, pattern, strlen(pattern), EVENT_CHANGE_ALL,
                                &owner, &rest, expires_at, &sub, &err) != 0) {
            fprintf(stderr, "sweep: %s\n", err.message);
            return 1;
        }
        double took = clock_monotonic_seconds() - add_start;
        longest_add = took > longest_add ? took : longest_add;
        free(xmalloc(200)); /* other allocations between, as in a broker that runs */
    }
    printf("longest add ms: %.2f\n", longest_add * 1e3);
    if (restore_shuffled(subs, n) != 0) {
        return 1;
    }
    printf("%10s %14s %14s %10s %10s\n", "round", "walk ms", "due ms", "ratio", "due");
    for (int round = 1; round <= ROUNDS; round++) {
        size_t moved = 0;
        for (sub_t *sub = subs_first_persistent(subs); sub != NULL;
             sub = subs_next_persistent(sub)) {
            if (moved++ % 100 == 0) {
                subs_cursor_moved(subs, sub);
            }
        }
        double start = clock_monotonic_seconds();
        size_t walked_due = 0;
        size_t walked_moved = 0;
        for (sub_t *sub = subs_first_persistent(subs); sub != NULL;
             sub = subs_next_persistent(sub)) {
            walked_due += subs_expires_at(sub) <= now + LEAD_S;
        }
        for (sub_t *sub = subs_first_persistent(subs); sub != NULL;
             sub = subs_next_persistent(sub)) {
            walked_moved += sub->rest->is_cursor_dirty;
        }
        double walk = clock_monotonic_seconds() - start;
        start = clock_monotonic_seconds();
        size_t due_count;
        size_t moved_count;
        sub_t **due = subs_expiring_by(subs, now + LEAD_S, &due_count);
        sub_t **taken = subs_take_moved_cursors(subs, &moved_count);
        double asked = clock_monotonic_seconds() - start;
        if (due_count != walked_due || moved_count != walked_moved) {
            fprintf(stderr, "sweep: %zu due and %zu moved, the walk found %zu and %zu\n", due_count,
                    moved_count, walked_due, walked_moved);
            return 1;
        }
        free(due);
        free(taken);
        printf("%10d %14.3f %14.3f %10.1f %10zu\n", round, walk * 1e3, asked * 1e3, walk / asked,
               due_count);
    }
    printf("%10s %14s %14s %10s %10s\n", "round", "walk ms", "by user ms", "ratio", "owned");
    for (int round = 1; round <= ROUNDS; round++) {
        char user[32];
        snprintf(user, sizeof(user), "u%d", round * 997 % 5000);
        double start = clock_monotonic_seconds();
        size_t walked = 0;
        for (sub_t *sub = subs_first_persistent(subs); sub != NULL;
             sub = subs_next_persistent(sub)) {
            walked += strcmp(sub->owner->user, user) == 0 &&
                      strcmp(sub->rest->notification_url, "https://other.example/") == 0;
        }
        for (sub_t *sub = subs_first_persistent(subs); sub != NULL;
             sub = subs_next_persistent(sub)) {
            walked += strcmp(sub->owner->user, user) == 0;
        }
        double walk = clock_monotonic_seconds() - start;
        start = clock_monotonic_seconds();
        size_t owned = 0;
        for (sub_t *sub = subs_first_owned(subs, user); sub != NULL; sub = subs_next_owned(sub)) {
            owned += strcmp(sub->rest->notification_url, "https://other.example/") == 0;
        }
        owned += subs_count_owned(subs, user);
        double asked = clock_monotonic_seconds() - start;
        if (owned != walked) {
            fprintf(stderr, "sweep: %s holds %zu by the list, %zu by the walk\n", user, owned,
                    walked);
            return 1;
        }
        printf("%10d %14.3f %14.4f %10.0f %10zu\n", round, walk * 1e3, asked * 1e3, walk / asked,
               subs_count_owned(subs, user));
    }
    subs_free(subs);
    return 0;
}
