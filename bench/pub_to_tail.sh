#!/usr/bin/env bash
# bench/pub_to_tail.sh: end-to-end throughput from one herold-pub to one herold-tail
# through a real broker on loopback: every event matches the tail's one subscription.
#
#   bench/pub_to_tail.sh [EVENTS] [RATE...]
#
# For each RATE (events/s, or "max" for as fast as acks allow) it publishes EVENTS events
# and reports the publisher's acked events/s, the tail's received items/s, and whether
# every event arrived (a tail that falls behind its bounded queue is cut off with
# `missed`, which is reported as such). Defaults: 50000 events at 10000, 20000, 40000, max.
set -u
cd "$(dirname "$0")/.."
BUILD=${HEROLD_BUILD:-build}
EVENTS=${1:-50000}
shift || true
RATES=${*:-10000 20000 40000 max}

. bench/broker_env.sh
work=$(mktemp -d)
trap 'kill $broker 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
http_port=$(free_port)
ingest="tcp://127.0.0.1:$(free_port)"

echo "command: $0 $EVENTS $RATES"
echo "machine: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  build: $BUILD"

"$BUILD/herold" --data "$work/var" --http "127.0.0.1:$http_port" --ingest "$ingest" \
    --log-level warn 2>"$work/herold.log" &
broker=$!
wait_healthy "$http_port"
token=$("$BUILD/herold" token bench --groups staff --data "$work/var")

printf '%-8s %14s %14s %10s\n' rate pub_acked/s tail_items/s delivered
for rate in $RATES; do
    rate_flag=()
    [ "$rate" != max ] && rate_flag=(--rate "$rate")
    "$BUILD/herold-tail" --url "ws://127.0.0.1:$http_port/v1.0/ws" --token "$token" \
        --resource /bench/folder --count "$EVENTS" --quiet >"$work/tail.out" 2>"$work/tail.err" &
    tail_pid=$!
    for _ in $(seq 100); do
        grep -q subscribed "$work/tail.err" && break
        sleep 0.05
    done
    "$BUILD/herold-pub" --ingest "$ingest" --source bench --id "r$rate" \
        --resource /bench/folder/doc --readers group:staff --repeat "$EVENTS" "${rate_flag[@]}" \
        --quiet 2>"$work/pub.err"
    wait "$tail_pid"
    pub_rate=$(sed -n 's/.*(\([0-9]*\) events\/s).*/\1/p' "$work/pub.err")
    tail_rate=$(sed -n 's/.*(\([0-9]*\) items\/s).*/\1/p' "$work/tail.err")
    if grep -q "items in" "$work/tail.err"; then
        delivered="all"
    else
        delivered="cut:$(grep -o '"cursor":"[0-9]*"' "$work/tail.out" | tail -1)"
        tail_rate="-"
    fi
    printf '%-8s %14s %14s %10s\n' "$rate" "${pub_rate:--}" "${tail_rate:--}" "$delivered"
done
