#!/usr/bin/env bash
# bench/ws_idle.sh: idle WebSocket connections against a real broker: how many, how fast
# accepted, and the broker's RSS per connection (build/bench/ws_idle does the counting).
#
#   bench/ws_idle.sh [CONNECTIONS]      default 100000
#
# The connections come from 8 loopback source addresses (127.0.0.1-8: about 28,000
# ephemeral ports each); the broker and the client get their file limits raised.
set -u
cd "$(dirname "$0")/.."
BUILD=${HEROLD_BUILD:-build}
COUNT=${1:-100000}
. bench/broker_env.sh
work=$(mktemp -d)
broker=
trap '[ -n "$broker" ] && kill $broker 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
echo "command: $0 $COUNT"
echo "machine: $(nproc) cores, $(uname -sr); date: $(date -u +%Y-%m-%dT%H:%M:%SZ); build: $BUILD"
raise_file_limit "$COUNT" || exit 1
"$BUILD/herold" --data "$work/var" --http "127.0.0.1:$port" \
    --ingest "tcp://127.0.0.1:$(free_port)" --log-level warn --max-connections-per-user 0 \
    2>"$work/herold.log" &
broker=$!
wait_healthy "$port"
"$BUILD/herold" token bench --groups staff --ttl 3600 --data "$work/var" >"$work/token"
"$BUILD/bench/ws_idle" --port "$port" --token-file "$work/token" --count "$COUNT" --pid "$broker" \
    --sources 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8
status=$?
[ -s "$work/herold.log" ] && { echo "broker log:"; tail -5 "$work/herold.log"; }
exit $status
