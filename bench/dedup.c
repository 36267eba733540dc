/*
 * bench/dedup: the publisher deduplication table as the ingest thread uses it, and the
 * longest any one call holds that thread (and with it every publisher's ack).
 *
 *   build/bench/dedup [EVENTS] [RETAINED] [EXPIRE_EVERY]
 *
 * Defaults: 6,000,000 events, 3,000,000 retained (the default 1 GiB journal holds about
 * that many 300-byte events), retention applied every 200,000 events (a 64 MiB segment
 * of such events). Each event is looked up, then added, as ingest does; every
 * EXPIRE_EVERY events the oldest beyond RETAINED expire, as when the journal drops a
 * segment. Prints the events per second, the longest lookup-and-add, the longest expiry,
 * the entries held and the tables' size at the end, the tables' peak size, and the
 * candidates per million lookups that confirmation turned down (every event is new, so
 * each is a hash collision); then looks every retained event up, and as many expired
 * ones, and exits 1 unless exactly the retained ones are found.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "dedup.h"

static bool never_same(uint64_t seq, void *ctx)
{
    (void)seq;
    (*(uint64_t *)ctx)++;
    return false; /* every event of the run is new: a candidate is a collision */
}

static bool same_seq(uint64_t seq, void *ctx)
{
    return seq == *(const uint64_t *)ctx;
}

static uint64_t hash_of(uint64_t seq)
{
    char id[32];
    int len = snprintf(id, sizeof(id), "doc-%llu", (unsigned long long)seq);
    return dedup_hash("dms", 3, id, (size_t)len);
}

int main(int argc, char **argv)
{
    uint64_t events = argc > 1 ? strtoull(argv[1], NULL, 10) : 6000000;
    uint64_t retained = argc > 2 ? strtoull(argv[2], NULL, 10) : 3000000;
    uint64_t expire_every = argc > 3 ? strtoull(argv[3], NULL, 10) : 200000;
    if (events == 0 || retained == 0 || expire_every == 0) {
        fprintf(stderr, "usage: %s [EVENTS] [RETAINED] [EXPIRE_EVERY] (each above 0)\n", argv[0]);
        return 2;
    }
    printf("command: %s %llu %llu %llu\n", argv[0], (unsigned long long)events,
           (unsigned long long)retained, (unsigned long long)expire_every);
    dedup_t *dedup = dedup_new();
    uint64_t oldest = 1;
    double longest_event = 0.0;
    double longest_expiry = 0.0;
    uint64_t false_candidates = 0;
    size_t peak_table_bytes = 0;
    double start = clock_monotonic_seconds();
    for (uint64_t seq = 1; seq <= events; seq++) {
        uint64_t hash = hash_of(seq);
        double before = clock_monotonic_seconds();
        dedup_find(dedup, hash, oldest, never_same, &false_candidates);
        dedup_add(dedup, hash, seq);
        double took = clock_monotonic_seconds() - before;
        longest_event = took > longest_event ? took : longest_event;
        size_t table_bytes = dedup_table_bytes(dedup);
        peak_table_bytes = table_bytes > peak_table_bytes ? table_bytes : peak_table_bytes;
        if (seq % expire_every == 0 && seq > retained) {
            oldest = seq - retained + 1;
            before = clock_monotonic_seconds();
            dedup_expire(dedup, oldest);
            took = clock_monotonic_seconds() - before;
            longest_expiry = took > longest_expiry ? took : longest_expiry;
        }
    }
    double elapsed = clock_monotonic_seconds() - start;
    printf("%14s %18s %18s %14s %12s %12s %14s\n", "events/s", "longest event ms",
           "longest expiry ms", "entries held", "table MiB", "peak MiB", "collisions/M");
    printf("%14.0f %18.2f %18.2f %14zu %12.1f %12.1f %14.1f\n", (double)events / elapsed,
           longest_event * 1e3, longest_expiry * 1e3, dedup_count(dedup),
           (double)dedup_table_bytes(dedup) / (1 << 20), (double)peak_table_bytes / (1 << 20),
           (double)false_candidates * 1e6 / (double)events);
    uint64_t retained_found = 0;
    for (uint64_t seq = oldest; seq <= events; seq++) {
        retained_found += dedup_find(dedup, hash_of(seq), oldest, same_seq, &seq) == seq;
    }
    uint64_t expired = oldest - 1 < events - oldest + 1 ? oldest - 1 : events - oldest + 1;
    uint64_t expired_found = 0;
    for (uint64_t seq = 1; seq <= expired; seq++) {
        expired_found += dedup_find(dedup, hash_of(seq), oldest, same_seq, &seq) != 0;
    }
    printf("retained found: %llu of %llu; expired found: %llu of %llu\n",
           (unsigned long long)retained_found, (unsigned long long)(events - oldest + 1),
           (unsigned long long)expired_found, (unsigned long long)expired);
    dedup_free(dedup);
    return retained_found == events - oldest + 1 && expired_found == 0 ? 0 : 1;
}
