#!/usr/bin/python3
"""bench/subscription_changes.py: how many subscription changes a second the REST API takes
from clients at once.

    /usr/bin/python3 bench/subscription_changes.py [--herold BIN ...] [--clients 1,4,16]
        [--seconds 5] [--rounds 2] [--store URI]

Each client is a process of its own with one keep-alive connection, creating a `websocket:`
subscription and deleting it again, as fast as the answers come. Every create and delete
is a write of the store writer (broker/store_writer.h) that is answered once durable, so
this measures the writes: alone, and as clients wait together. Each --herold binary gets a
fresh broker (a temporary --data directory; --store for PostgreSQL) per measurement, and
the binaries take turns, round by round, so that two builds compared meet the machine's
changing speed alike. Prints changes/s (creates and deletes) and the median and p99 time
of one change per binary, client count and round.

Standard library only.
"""

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchutil  # noqa: E402

START_SECONDS = 10


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(t))


def client(port, token, index, seconds, results):
    """Creates and deletes until the time is up; puts (changes, [seconds per change])."""
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    end = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < end:
            body = json.dumps({"changeType": "created,updated", "notificationUrl": "websocket:",
                               "resource": "/bench/c%d/f%d" % (index, n),
                               "expirationDateTime": iso(time.time() + 3600)})
            t0 = time.monotonic()
            conn.request("POST", "/v1.0/subscriptions", body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            t1 = time.monotonic()
            if answer.status != 201:
                raise RuntimeError("create answered %d: %s" % (answer.status, data[:200]))
            conn.request("DELETE", "/v1.0/subscriptions/" + json.loads(data)["id"],
                         headers=headers)
            answer = conn.getresponse()
            answer.read()
            t2 = time.monotonic()
            if answer.status != 204:
                raise RuntimeError("delete answered %d" % answer.status)
            times += [t1 - t0, t2 - t1]
            n += 1
        results.put((2 * n, times))
    except Exception as e:  # reported by the parent, which then exits 1
        results.put((None, str(e)))


def measure(herold, store, clients, seconds):
    data = tempfile.mkdtemp(prefix="herold-changes-")
    http_port, ingest_port = benchutil.free_ports(2)
    command = [herold, "--data", data, "--http", "127.0.0.1:%d" % http_port, "--ingest",
               "tcp://127.0.0.1:%d" % ingest_port, "--log-level", "warn",
               "--max-subscriptions-per-user", "100000"] + benchutil.UNLIMITED_FLAGS
    if store:
        command += ["--store", store]
    broker = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if broker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("herold did not start")
            time.sleep(0.05)
        token = subprocess.run([herold, "token", "bench", "--data", data], check=True,
                               capture_output=True, text=True).stdout.strip()
        results = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=client,
                                         args=(http_port, token, i, seconds, results))
                 for i in range(clients)]
        for p in procs:
            p.start()
        changes = 0
        times = []
        for _ in procs:
            count, detail = results.get(timeout=seconds + 60)
            if count is None:
                raise RuntimeError(detail)
            changes += count
            times += detail
        for p in procs:
            p.join()
        times.sort()
        return changes / seconds, times[len(times) // 2], times[int(len(times) * 0.99)]
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()
        shutil.rmtree(data, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--herold", action="append", help="broker binary (repeat to compare)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--store", help="--store URI for the broker (default: embedded)")
    args = parser.parse_args()
    binaries = args.herold or ["build/herold"]
    print("%-28s %7s %5s %10s %9s %9s" % ("herold", "clients", "round", "changes/s",
                                           "p50 ms", "p99 ms"))
    for round_number in range(1, args.rounds + 1):
        for clients in [int(c) for c in args.clients.split(",")]:
            for herold in binaries:
                rate, p50, p99 = measure(herold, args.store, clients, args.seconds)
                print("%-28s %7d %5d %10.0f %9.2f %9.2f" % (herold[-28:], clients, round_number,
                                                             rate, 1000 * p50, 1000 * p99),
                      flush=True)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        print("subscription_changes: %s" % e, file=sys.stderr)
        sys.exit(1)
