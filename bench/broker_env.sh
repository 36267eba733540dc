# bench/broker_env.sh: helpers the shell benchmarks source (ws_idle.sh, idle_company.sh,
# pub_to_tail.sh): a free loopback port, room for many descriptors, a broker that is up.

# Broker flags for a load generator that is one user holding every connection and
# subscription (bench/benchutil.py's UNLIMITED_FLAGS, for the Python ones).
UNLIMITED_FLAGS=(--max-connections-per-user 0 --max-subscriptions-per-minute 1000000
                 --max-ops-per-second 1000000)

# A loopback TCP port that was free a moment ago.
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Raises this shell's file limit to WANT + 1024 descriptors (the broker inherits it), or
# says why it cannot and returns 1.
raise_file_limit() {
    local want=$1 hard
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ $((want + 1024)) -gt "$hard" ]; then
        echo "the hard file limit here is $hard: $want connections need $((want + 1024))" \
             "descriptors in the broker (raise it with CAP_SYS_RESOURCE or limits.conf)"
        return 1
    fi
    ulimit -n $((want + 1024))
}

# Waits up to 10 s for the broker's /healthz on HTTP_PORT.
wait_healthy() {
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
