#!/usr/bin/env bash
# bench/ws_idle.sh: idle WebSocket connections against a real broker: how many, how fast
# accepted, and the broker's RSS per connection (build/bench/ws_idle does the counting).
#
#   bench/ws_idle.sh [CONNECTIONS] [USERS] [SUBSCRIBE]      defaults 100000, 1 and 0
#
# USERS 1: every connection presents the same token, as the tabs of one browser do (the
# broker keeps one copy of its claims for them all). USERS N: N users' tokens, connection i
# presenting token i modulo N; with N = CONNECTIONS each connection is a user of its own, and
# the broker's per-user records count too. SUBSCRIBE 1: each connection subscribes once
# before it idles, as a page waiting for its alerts does.
#
# The connections come from 8 loopback source addresses (127.0.0.1-8: about 28,000
# ephemeral ports each); the broker and the client get their file limits raised.
set -u
cd "$(dirname "$0")/.."
BUILD=${HEROLD_BUILD:-build}
COUNT=${1:-100000}
USERS=${2:-1}
SUBSCRIBE=${3:-0}
. bench/broker_env.sh
work=$(mktemp -d)
broker=
trap '[ -n "$broker" ] && kill $broker 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port=$(free_port)
echo "command: $0 $COUNT $USERS $SUBSCRIBE"
echo "machine: $(nproc) cores, $(uname -sr); date: $(date -u +%Y-%m-%dT%H:%M:%SZ); build: $BUILD"
raise_file_limit "$COUNT" || exit 1
"$BUILD/herold" --data "$work/var" --http "127.0.0.1:$port" \
    --ingest "tcp://127.0.0.1:$(free_port)" --log-level warn "${UNLIMITED_FLAGS[@]}" \
    2>"$work/herold.log" &
broker=$!
wait_healthy "$port"
"$BUILD/herold" token bench --groups staff --ttl 3600 --data "$work/var" >"$work/token"
if [ "$USERS" -gt 1 ]; then
    # The same claims for users bench-1..N, signed here with the broker's secret: N runs of
    # `herold token` would take longer than the benchmark.
    /usr/bin/python3 - "$work/var/jwt.secret" "$USERS" >"$work/token" <<'PY'
import sys, time
sys.path.insert(0, "bench")
from benchutil import make_jwt
secret = open(sys.argv[1], "rb").read().rstrip(b"\n")
now = int(time.time())
for k in range(1, int(sys.argv[2]) + 1):
    print(make_jwt(secret, {"sub": "bench-%d" % k, "groups": ["staff"], "iat": now, "nbf": now,
                            "exp": now + 3600}))
PY
fi
"$BUILD/bench/ws_idle" --port "$port" --token-file "$work/token" --count "$COUNT" --pid "$broker" \
    --sources 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8 \
    --subscribe "$SUBSCRIBE"
status=$?
[ -s "$work/herold.log" ] && { echo "broker log:"; tail -5 "$work/herold.log"; }
exit $status
