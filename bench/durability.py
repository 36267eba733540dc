#!/usr/bin/python3
"""bench/durability.py: acked events/s per store, and what durability costs.

    /usr/bin/python3 bench/durability.py [--events N] [--publishers 1,4] [--rounds 3]

For each publisher count P and each store — memory (acks after an in-memory commit: the
baseline), embedded (acks after the journal's fdatasync, group commit) and postgresql
(acks after COMMIT of one multi-row INSERT per ingest batch, a throwaway server with fsync
and synchronous_commit on) — it starts a fresh broker, runs P herold-pub processes in
parallel (each pipelining up to 1000 unanswered events of ~300 bytes), and reports the
acked events/s over all of them. Rounds interleave the stores, so that the machine's noise
falls on all alike; the medians are compared as ratios to the memory store of the same P.
It also reports the CPU each broker (and the PostgreSQL server) used per wall second, which
tells what limits each: a store that waits on fsync or round trips leaves the CPU idle; and
the events each commit carried (from the broker's exit log): the larger, the better group
commit amortises an fsync or a round trip.

Results go to bench/results/durability.json as well.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchutil import free_ports, process_cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("HEROLD_BUILD", "build")
HEROLD = os.path.join(ROOT, BUILD, "herold")
PUB = os.path.join(ROOT, BUILD, "herold-pub")
PG_SERVER = os.path.join(ROOT, "tests", "pg-server")


def cpu_seconds(pids):
    """User + system CPU seconds of the given processes (and their threads)."""
    return sum(process_cpu_seconds(pid) or 0.0 for pid in pids)


def postgres_pids(data_dir):
    """The postmaster and its children serving data_dir."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            master = int(f.readline())
    except (OSError, ValueError):
        return []
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True,
                         text=True).stdout.split()
    return [master] + [int(p) for p in out]


def wait_ready(proc, log_path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with open(log_path) as f:
            if " ready " in f.read():
                return
        time.sleep(0.05)
    with open(log_path) as f:
        sys.exit("herold did not start:\n" + f.read())


def run_once(store_flag, work, publishers, events, pg_dir):
    data = tempfile.mkdtemp(dir=work)
    http_port, ingest_port = free_ports(2)
    ingest = "tcp://127.0.0.1:%d" % ingest_port
    log_path = os.path.join(data, "herold.log")
    args = [HEROLD, "--data", data, "--http", "127.0.0.1:%d" % http_port, "--ingest", ingest,
            "--log-level", "info"] + store_flag
    with open(log_path, "w") as log:
        broker = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_ready(broker, log_path)
        pg_pids = postgres_pids(os.path.join(pg_dir, "data")) if pg_dir else []
        cpu_before = cpu_seconds([broker.pid])
        pg_before = cpu_seconds(pg_pids)
        start = time.monotonic()
        pubs = [subprocess.Popen([PUB, "--ingest", ingest, "--resource", "/bench/docs/%d" % i,
                                  "--id", "p%d-%d" % (i, int(start * 1000)), "--repeat",
                                  str(events), "--readers", "group:staff", "--actor", "bench",
                                  "--data", json.dumps({"title": "x" * 120}), "--quiet"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for i in range(publishers)]
        errors = []
        for p in pubs:
            _, err = p.communicate()
            if p.returncode != 0:
                errors.append(err.strip())
        wall = time.monotonic() - start
        cpu = cpu_seconds([broker.pid]) - cpu_before
        pg_cpu = cpu_seconds(pg_pids) - pg_before
    finally:
        broker.terminate()
        broker.wait(30)
        with open(log_path) as f:
            found = re.search(r"\(([0-9.]+) per commit\)", f.read())
        shutil.rmtree(data, ignore_errors=True)
    if errors:
        sys.exit("a publisher failed: %s" % errors[0])
    return (publishers * events / wall, cpu / wall, pg_cpu / wall,
            float(found.group(1)) if found else 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--events", type=int, default=100000, help="events per publisher")
    parser.add_argument("--publishers", default="1,4", help="publisher counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    counts = [int(c) for c in opts.publishers.split(",")]

    print("command: %s" % " ".join(sys.argv))
    print("machine: %d cores, %s %s; date: %s; build: %s" % (
        os.cpu_count(), platform.system(), platform.release(),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), BUILD))
    work = tempfile.mkdtemp(prefix="herold-durability-")
    os.chmod(work, 0o755)  # the PostgreSQL server runs as another user when we are root
    pg_dir = os.path.join(work, "pg")
    try:
        conninfo = subprocess.run([PG_SERVER, "start", pg_dir], capture_output=True, text=True,
                                  check=True).stdout.strip()
        parts = dict(kv.split("=", 1) for kv in conninfo.split())
        pg_uri = "postgresql://%s@/%s?host=%s&port=%s" % (parts["user"], parts["dbname"],
                                                         parts["host"], parts["port"])
        stores = [("memory", ["--store", "memory:"], None),
                  ("embedded", [], None),
                  ("postgresql", ["--store", pg_uri], pg_dir)]
        results = []
        for publishers in counts:
            rates = {name: [] for name, _, _ in stores}
            cpus = {name: [] for name, _, _ in stores}
            batches = {name: [] for name, _, _ in stores}
            pg_cpus = {name: [] for name, _, _ in stores}
            for _ in range(opts.rounds):
                for name, flag, watch in stores:
                    rate, cpu, pg_cpu, per_commit = run_once(flag, work, publishers, opts.events,
                                                             watch)
                    pg_cpus[name].append(pg_cpu)
                    rates[name].append(rate)
                    cpus[name].append(cpu)
                    batches[name].append(per_commit)
            base = statistics.median(rates["memory"])
            for name, _, _ in stores:
                median = statistics.median(rates[name])
                results.append({"store": name, "publishers": publishers,
                                "events": publishers * opts.events,
                                "acked_per_s": [round(r) for r in rates[name]],
                                "median_acked_per_s": round(median),
                                "ratio_to_memory": round(median / base, 3),
                                "herold_cpu_cores": round(statistics.median(cpus[name]), 2),
                                "postgres_cpu_cores": round(statistics.median(pg_cpus[name]), 2),
                                "events_per_commit": round(statistics.median(batches[name]),
                                                           1)})
        print("%-11s %10s %16s %9s %11s %13s %14s" % (
            "store", "publishers", "acked events/s", "vs memory", "herold cpu", "postgres cpu",
            "events/commit"))
        for r in results:
            print("%-11s %10d %16s %9.2f %11.2f %13.2f %14.1f" % (
                r["store"], r["publishers"], "{:,}".format(r["median_acked_per_s"]),
                r["ratio_to_memory"], r["herold_cpu_cores"], r["postgres_cpu_cores"],
                r["events_per_commit"]))
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        with open(os.path.join(ROOT, "bench", "results", "durability.json"), "w") as f:
            json.dump({"command": " ".join(sys.argv), "date": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
                "results": results}, f, indent=1)
            f.write("\n")
    finally:
        subprocess.run([PG_SERVER, "stop", pg_dir, "--remove"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
