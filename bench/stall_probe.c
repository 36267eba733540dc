/*
 * bench/stall_probe: how long a thread that only sleeps waits for the CPU, while something
 * else runs on the machine.
 *
 *   build/bench/stall_probe [-s SECONDS] [-n MICROSECONDS] [-t MILLISECONDS]
 *   defaults: -s 6 -n 200 -t 2
 *
 * The probe naps for MICROSECONDS at a time and, on each wake-up, measures the time since
 * the last one. A gap above MILLISECONDS is a stall: the probe was runnable and did not
 * run, or the whole virtual machine did not. It prints the stalls (count, total, longest,
 * and the first ten with their time into the run) and uses next to no CPU itself.
 *
 * What it is for: a delivery that waits for nothing still waits for its thread to be
 * scheduled. Run it beside a workload (bench/scenarios/latency.conf against a broker, say)
 * and then beside the same workload changed in one respect; stalls that come and go with
 * the change are what the change does to every thread on the machine.
 */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"

#define SHOWN_STALLS 10

int main(int argc, char **argv)
{
    double seconds = 6;
    long nap_us = 200;
    double threshold_ms = 2;
    int opt;
    while ((opt = getopt(argc, argv, "s:n:t:")) != -1) {
        switch (opt) {
        case 's':
            seconds = atof(optarg);
            break;
        case 'n':
            nap_us = atol(optarg);
            break;
        case 't':
            threshold_ms = atof(optarg);
            break;
        default:
            fprintf(stderr, "usage: %s [-s SECONDS] [-n MICROSECONDS] [-t MILLISECONDS]\n",
                    argv[0]);
            return 2;
        }
    }
    if (seconds <= 0 || nap_us < 1 || threshold_ms * 1e3 <= (double)nap_us) {
        fprintf(stderr, "stall_probe: -s above 0, -n at least 1, -t above the nap\n");
        return 2;
    }
    printf("command: build/bench/stall_probe -s %g -n %ld -t %g\n", seconds, nap_us, threshold_ms);
    double start = clock_monotonic_seconds();
    double last = start;
    long stalls = 0;
    double total_ms = 0;
    double longest_ms = 0;
    for (;;) {
        usleep((useconds_t)nap_us);
        double now = clock_monotonic_seconds();
        double gap_ms = (now - last) * 1e3;
        last = now;
        if (gap_ms > threshold_ms) {
            stalls++;
            total_ms += gap_ms;
            longest_ms = gap_ms > longest_ms ? gap_ms : longest_ms;
            if (stalls <= SHOWN_STALLS) {
                printf("stall at %8.3f s: %6.2f ms\n", now - start, gap_ms);
            }
        }
        if (now - start >= seconds) {
            break;
        }
    }
    printf("stalls over %g ms: %ld in %.1f s, %.1f ms in all, the longest %.2f ms\n", threshold_ms,
           stalls, last - start, total_ms, longest_ms);
    return 0;
}
