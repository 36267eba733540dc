#!/usr/bin/env bash
# bench/idle_company.sh: the latency scenario (bench/scenarios/latency.conf unless
# given) with IDLE idle WebSocket connections held open beside its 100 busy ones. What a
# quiet connection costs the busy ones: a loop that polls every descriptor on every turn
# pays for each idle one on every delivery.
#
#   bench/idle_company.sh [IDLE] [SCENARIO]      default 10000 idle connections
#
# HEROLD_BUILD picks the build (default build); HEROLD_BROKER another broker binary to
# measure with the same tools (e.g. an older commit's build/herold).
set -u
cd "$(dirname "$0")/.."
BUILD=${HEROLD_BUILD:-build}
BROKER=${HEROLD_BROKER:-$BUILD/herold}
IDLE=${1:-10000}
SCENARIO=${2:-bench/scenarios/latency.conf}
. bench/broker_env.sh
work=$(mktemp -d)
broker=
idle=
trap '[ -n "$idle" ] && kill $idle 2>/dev/null; [ -n "$broker" ] && kill $broker 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
raise_file_limit "$IDLE" || exit 1
http_port=$(free_port)
ingest_port=$(free_port)
echo "command: $0 $IDLE $SCENARIO"
echo "machine: $(nproc) cores, $(uname -sr); date: $(date -u +%Y-%m-%dT%H:%M:%SZ); broker: $BROKER"
"$BROKER" --data "$work/var" --http "127.0.0.1:$http_port" --ingest "tcp://127.0.0.1:$ingest_port" \
    --log-level warn "${UNLIMITED_FLAGS[@]}" 2>"$work/herold.log" &
broker=$!
wait_healthy "$http_port"
"$BROKER" token bench --groups bench --ttl 3600 --data "$work/var" >"$work/token"
if [ "$IDLE" -gt 0 ]; then
    "$BUILD/bench/ws_idle" --port "$http_port" --token-file "$work/token" --count "$IDLE" \
        --pid "$broker" --hold 100000 --sources 127.0.0.2,127.0.0.3,127.0.0.4 >"$work/idle.log" 2>&1 &
    idle=$!
    for _ in $(seq 600); do
        grep -q "^broker RSS" "$work/idle.log" && break
        if ! kill -0 "$idle" 2>/dev/null; then
            cat "$work/idle.log"
            exit 1
        fi
        sleep 0.1
    done
    cat "$work/idle.log"
fi
cpu_before=$(awk '{print $14 + $15}' "/proc/$broker/stat")
"$BUILD/bench/herold-bench" --target herold --scenario "$SCENARIO" \
    --pub "tcp://127.0.0.1:$ingest_port" --sub "127.0.0.1:$http_port" --token-file "$work/token" \
    --out "$work/run" 2>&1 | grep -v '^\['
status=${PIPESTATUS[0]}
cpu_after=$(awk '{print $14 + $15}' "/proc/$broker/stat")
echo "broker CPU during the run: $(( (cpu_after - cpu_before) * 10 )) ms"
exit $status
