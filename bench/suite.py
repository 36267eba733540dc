#!/usr/bin/python3
"""bench/suite.py: herold against mosquitto (MQTT, MQTT over WebSocket), nats-server (NATS,
NATS over WebSocket) and redis-server (pub/sub), all driven by build/bench/herold-bench.

    /usr/bin/python3 bench/suite.py [--quick] [--rounds N] [--targets herold,mqtt,...]
                                    [--build build] [--no-results-md]

Each round runs every target in turn (rounds interleave the targets, so that the machine's
noise falls on all alike), each round starting a further share of the list along
(round_order). For each target a fresh system starts on free loopback ports in a
temporary directory: herold with its embedded store (acks after fdatasync), or the peer with
the configuration in bench/peers/ (QoS 0 / core NATS / plain pub/sub, nothing on disk).
herold-bench then runs the throughput scenario (bench/scenarios/w1.conf: 100 connections x
100 subscriptions, one publisher as fast as it is let) and the latency scenario
(bench/scenarios/latency.conf: the same subscriptions at a fixed 20,000 events/s), and the
system is stopped. --quick: one round of w1-quick and latency-quick (sized to finish the
six targets within a minute on two cores; its files go to bench/results/quick/, and it is
not meant for RESULTS.md, so `make bench-quick`
should pass --no-results-md). Peers' configurations: bench/peers/*.conf.in (@PORT@, @WS_PORT@, @DIR@
are filled in per run).

Results: bench/results/suite/ (herold-bench's JSON and CSV files per round, target and
scenario, and summary.json with the medians), bench/results/w1-throughput.png and
bench/results/latency-cdf.png (gnuplot, from the median round), and unless --no-results-md
the part of bench/RESULTS.md between `<!-- suite:begin -->` and `<!-- suite:end -->`.
Without --quick the suite then measures what the peers are not compared on
(measure_scale): the matching core on one core (build/bench/match 10000,1000000, then
build/bench/match 10000000 for the index at ten million) and idle WebSocket connections
(bench/ws_idle.sh, as many as the file limit allows, up to 100,000), and prints, and
writes into RESULTS.md, a table of issue 5's targets against what this run measured.

The last line printed is `W1 herold/best-peer delivered ratio: R`: herold's median
deliveries per second in the throughput scenario over those of the fastest peer target.
Exit status 0 when every run completed, 1 when the ratio cannot be computed, 2 when some
run failed but the ratio could still be computed.
"""

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from benchutil import UNLIMITED_FLAGS, cpu_model, free_ports, process_cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
RESULTS = os.path.join(BENCH, "results")
SUITE_DIR = os.path.join(RESULTS, "suite")
RESULTS_MD = os.path.join(BENCH, "RESULTS.md")
BEGIN_MARK = "<!-- suite:begin -->"
END_MARK = "<!-- suite:end -->"
ALL_TARGETS = ["herold", "mqtt", "mqtt-ws", "nats", "nats-ws", "redis"]
# Which server each target runs against.
SYSTEM_OF = {"herold": "herold", "mqtt": "mosquitto", "mqtt-ws": "mosquitto",
             "nats": "nats", "nats-ws": "nats", "redis": "redis"}
SCENARIO_DEFAULTS = {"name": "", "connections": 100, "subs_per_conn": 100, "followers": 2,
                     "event_bytes": 200, "events": 0, "rate": 0, "window": 1000, "sources": 4,
                     "drain_seconds": 5, "publishers": 1, "seconds": 0}

# Targets whose latency run was skipped: their throughput was below what it asks for.
SKIPPED_LATENCY = set()

# Every process this script started and has not yet reaped; cleanup() ends them.
CHILDREN = []


class SetupError(Exception):
    """A system did not start, or herold-bench could not run: that run is lost, the suite
    goes on with the next."""


def log(text):
    print(text, file=sys.stderr, flush=True)


def spawn(args, **kwargs):
    """Starts a child in its own process group, so that a Ctrl-C on the terminal reaches only
    this script, which then ends the children in order. Not in its own session: with the
    kernel's scheduler autogroups (sched_autogroup_enabled) every session gets an equal
    share of the CPU as one group, so a server in its own session competed with
    herold-bench group against group rather than thread against thread, and a server with
    more busy threads than the other lost out (herold's p99 at 20k events/s went from about
    10 ms to 150 ms)."""
    proc = subprocess.Popen(args, process_group=0, **kwargs)
    CHILDREN.append(proc)
    return proc


def stop(proc, grace=5.0):
    """SIGTERM, then SIGKILL after grace seconds; reaps the child."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
    if proc in CHILDREN:
        CHILDREN.remove(proc)


def cleanup():
    for proc in list(CHILDREN):
        stop(proc, 3.0)


def on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads included (0 once gone)."""
    return process_cpu_seconds(pid) or 0.0


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no %s)\n" % path


def read_scenario(path):
    """The scenario's keys with herold-bench's defaults filled in (numbers as numbers)."""
    scenario = dict(SCENARIO_DEFAULTS)
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                sys.exit("%s:%d: expected key = value" % (path, number))
            key, value = (part.strip() for part in line.split("=", 1))
            try:
                scenario[key] = int(value)
            except ValueError:
                try:
                    scenario[key] = float(value)
                except ValueError:
                    scenario[key] = value
    if not scenario["name"]:
        scenario["name"] = os.path.splitext(os.path.basename(path))[0]
    return scenario


class System:
    """One server on fresh loopback ports in its own directory under work."""

    def __init__(self, kind, build, work):
        self.kind = kind
        self.build = build
        self.dir = tempfile.mkdtemp(prefix=kind + "-", dir=work)
        self.proc = None
        self.log_path = os.path.join(self.dir, kind + ".log")
        self.token_file = None
        self.port, self.ws_port = free_ports(2)

    def _config(self, name):
        with open(os.path.join(BENCH, "peers", name + ".conf.in")) as f:
            text = f.read()
        text = (text.replace("@PORT@", str(self.port)).replace("@WS_PORT@", str(self.ws_port))
                .replace("@DIR@", self.dir))
        path = os.path.join(self.dir, name + ".conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start(self):
        herold = os.path.join(self.build, "herold")
        if self.kind == "herold":
            # port: HTTP and WebSocket; ws_port: the ZeroMQ ingest.
            args = [herold, "--data", os.path.join(self.dir, "var"),
                    "--http", "127.0.0.1:%d" % self.port,
                    "--ingest", "tcp://127.0.0.1:%d" % self.ws_port,
                    "--log-level", "info"] + UNLIMITED_FLAGS
            ports = [self.port, self.ws_port]
        elif self.kind == "mosquitto":
            args = ["mosquitto", "-c", self._config("mosquitto")]
            ports = [self.port, self.ws_port]
        elif self.kind == "nats":
            args = ["nats-server", "-c", self._config("nats")]
            ports = [self.port, self.ws_port]
        else:
            args = ["redis-server", self._config("redis")]
            ports = [self.port]
        # The peers log into their own file (set in their configuration); their stderr goes
        # to a second file for what they print before that is open.
        stderr_path = self.log_path if self.kind == "herold" else self.log_path + ".stderr"
        with open(stderr_path, "w") as err:
            try:
                self.proc = spawn(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                  cwd=self.dir)
            except OSError as e:
                raise SetupError("cannot run %s: %s" % (args[0], e))
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise SetupError("%s exited with status %d:\n%s%s" % (
                    self.kind, self.proc.returncode, tail(stderr_path), tail(self.log_path)))
            ready = all(listening(p) for p in ports)
            if ready and self.kind == "herold":
                with open(self.log_path, errors="replace") as f:
                    ready = " ready " in f.read()
            if ready:
                break
            if time.monotonic() > deadline:
                raise SetupError("%s did not listen within 15 s:\n%s" % (
                    self.kind, tail(self.log_path)))
            time.sleep(0.05)
        if self.kind == "herold":
            # The token is signed with the secret the broker created in its data directory.
            out = subprocess.run([herold, "token", "bench", "--groups", "bench", "--data",
                                  os.path.join(self.dir, "var")], capture_output=True,
                                 text=True)
            if out.returncode != 0 or not out.stdout.strip():
                raise SetupError("herold token failed: %s" % out.stderr.strip())
            self.token_file = os.path.join(self.dir, "token")
            with open(self.token_file, "w") as f:
                f.write(out.stdout.strip() + "\n")

    def endpoints(self, target):
        """herold-bench's --pub and --sub (and --token-file) for target."""
        tcp = "127.0.0.1:%d" % self.port
        if target == "herold":
            return ["--pub", "tcp://127.0.0.1:%d" % self.ws_port, "--sub", tcp,
                    "--token-file", self.token_file]
        if target in ("mqtt-ws", "nats-ws"):
            return ["--pub", tcp, "--sub", "127.0.0.1:%d" % self.ws_port]
        return ["--pub", tcp, "--sub", tcp]

    def stop(self):
        if self.proc is not None:
            stop(self.proc)


def latency_skip_reason(throughput_runs, rnd, scenario):
    """Why the latency run of this round is skipped, or None. A system whose throughput run
    of the same round delivered less than the latency scenario asks for cannot keep up with
    it: its latencies would measure a growing backlog (and take minutes to drain)."""
    same_round = [r for r in throughput_runs if r["suite"].get("round") == rnd]
    if not same_round or not scenario.get("rate"):
        return None
    needed = scenario["rate"] * scenario["followers"]
    delivered = same_round[-1]["delivered_per_s"]
    if delivered < needed:
        return "its throughput run delivered %s/s, below the %s/s this scenario needs" % (
            fmt_int(delivered), fmt_int(needed))
    return None


def run_bench(opts, system, target, scenario_path, scenario, prefix):
    """Runs herold-bench once; returns its JSON (plus the server's and the bench's CPU) or
    raises SetupError."""
    # Paths relative to ROOT (herold-bench runs there): shorter in its log and JSON.
    args = ([opts.bench, "--target", target, "--scenario", os.path.relpath(scenario_path, ROOT)]
            + system.endpoints(target)
            + ["--out", os.path.relpath(prefix, ROOT), "--label", target])
    # Generous (as if a rate-0 run managed only 2,500 events/s): a run that takes this long is
    # broken, not slow.
    publishing = 3 * scenario["events"] / (scenario["rate"] or 7500)
    if scenario.get("seconds"):
        publishing = min(publishing, scenario["seconds"])
    timeout = 120 + publishing + 2 * scenario["drain_seconds"]
    out_path = prefix + ".log"
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = cpu_seconds(system.proc.pid)
    start = time.monotonic()
    with open(out_path, "w") as out:
        out.write("$ %s\n" % " ".join(args))
        out.flush()
        proc = spawn(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=ROOT)
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise SetupError("herold-bench did not finish within %.0f s (log: %s)" % (
                timeout, os.path.relpath(out_path, ROOT)))
        finally:
            if proc.poll() is not None and proc in CHILDREN:
                CHILDREN.remove(proc)
    wall = time.monotonic() - start
    server_cpu = cpu_seconds(system.proc.pid) - server_before
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    bench_cpu = (children_after.ru_utime + children_after.ru_stime
                 - children_before.ru_utime - children_before.ru_stime)
    if status != 0:
        raise SetupError("herold-bench exited with status %d:\n%s" % (status, tail(out_path)))
    try:
        with open(prefix + ".json") as f:
            result = json.load(f)
        for key in ("delivered_per_s", "published_per_s", "lost", "expected", "delivered"):
            float(result[key])
        for key in ("p50", "p90", "p99", "p999", "max"):
            float(result["latency_us"][key])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SetupError("herold-bench wrote no usable %s.json: %s" % (
            os.path.relpath(prefix, ROOT), e))
    result["suite"] = {"wall_seconds": round(wall, 2),
                       "server_cpu_cores": round(server_cpu / wall, 2) if wall else 0,
                       "bench_cpu_cores": round(bench_cpu / wall, 2) if wall else 0}
    with open(prefix + ".json", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return result


def first_of(error):
    """The first line of an error's text, for the list of failed runs."""
    lines = str(error).splitlines()
    return lines[0].rstrip(":") if lines else "?"


def median_run(runs, key):
    """The run whose key is the median (the lower one of the middle two for an even count)."""
    ordered = sorted(runs, key=key)
    return ordered[(len(ordered) - 1) // 2]


def summarize(runs):
    """Medians over the rounds of one target and scenario (each figure on its own)."""
    def med(get):
        return statistics.median(get(r) for r in runs)
    return {"rounds": len(runs),
            "delivered_per_s": med(lambda r: r["delivered_per_s"]),
            "published_per_s": med(lambda r: r["published_per_s"]),
            "lost": med(lambda r: r["lost"]),
            "duplicates": med(lambda r: r.get("duplicates", 0)),
            "expected": med(lambda r: r["expected"]),
            "server_cpu_cores": med(lambda r: r["suite"]["server_cpu_cores"]),
            "bench_cpu_cores": med(lambda r: r["suite"]["bench_cpu_cores"]),
            "latency_us": {k: med(lambda r, k=k: r["latency_us"][k])
                           for k in ("p50", "p90", "p99", "p999", "max")}}


def git_commit():
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        # --no-optional-locks: do not refresh the index (others work in this tree).
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", ROOT, "status",
                                "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def first_line(args):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"


def redis_version():
    found = re.search(r"v=(\S+)", first_line(["redis-server", "--version"]))
    return found.group(1) if found else "?"


def filesystem_of(path):
    """The type of the file system holding path (the longest mount point above it)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                mount = fields[1].replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and \
                        len(mount) >= len(best):
                    best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def machine_facts(work):
    model = cpu_model()
    try:
        with open("/etc/debian_version") as f:
            debian = "Debian " + f.read().strip()
    except OSError:
        debian = "not Debian"
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        mem = "%.0f GiB" % (kib / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return {"cores": os.cpu_count(), "model": model, "memory": mem,
            "kernel": "%s %s" % (platform.system(), platform.release()), "os": debian,
            "commit": git_commit(), "data_fs": filesystem_of(work),
            "mosquitto": re.sub(r"^mosquitto version ", "", first_line(["mosquitto", "-h"])),
            "nats-server": re.sub(r"^nats-server: v?", "", first_line(["nats-server",
                                                                     "--version"])),
            "redis-server": redis_version()}


def fmt_int(x):
    return "{:,}".format(int(round(x)))


def fmt_ms(us):
    ms = us / 1000.0
    if ms >= 100:
        return "%.0f" % ms
    if ms >= 10:
        return "%.1f" % ms
    return "%.2f" % ms


def plot(targets, medians_files, scenarios, quick):
    """Runs bench/plot.gp on the median rounds' CSV files; a missing gnuplot is a warning."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        log("warning: gnuplot not found (Debian: gnuplot-nox), no plots")
        return []
    titles = [t for t in targets if t in medians_files]
    rate_files = [medians_files[t].get("throughput") for t in titles]
    latency_files = [medians_files[t].get("latency") for t in titles]
    rate_pairs = [(t, f) for t, f in zip(titles, rate_files) if f]
    latency_pairs = [(t, f) for t, f in zip(titles, latency_files) if f]

    def words(items):
        return " ".join(items)
    # Two calls, so that each plot has its own list of titles.
    made = []
    thr, lat = scenarios["throughput"], scenarios["latency"]
    jobs = [(rate_pairs, "rate_files", "rate_title",
             "%s: deliveries per second (median round; %s, %d x %d subscriptions)" % (
                 thr["name"], amount(thr), thr["connections"],
                 thr["subs_per_conn"]), "w1-throughput.png"),
            (latency_pairs, "latency_files", "latency_title",
             "%s: publish-to-delivery latency at %s events/s (median round)" % (
                 lat["name"], fmt_int(lat["rate"])), "latency-cdf.png")]
    for pairs, files_var, title_var, title, png in jobs:
        if not pairs:
            continue
        # Relative names from bench/results: free of spaces whatever ROOT is.
        expr = "titles='%s'; %s='%s'; %s='%s'; out_dir='.'" % (
            words(t for t, _ in pairs), files_var,
            words(os.path.relpath(f, RESULTS) for _, f in pairs), title_var, title)
        out = subprocess.run([gnuplot, "-e", expr, os.path.join(BENCH, "plot.gp")],
                             cwd=RESULTS, capture_output=True, text=True)
        if out.returncode != 0:
            log("warning: gnuplot failed for %s:\n%s" % (png, out.stderr.strip()))
        else:
            made.append(png)
    return made


def table_lines(targets, summary, failures, herold_rate):
    """The printed table."""
    head = ("%-8s %12s %12s %9s %6s %6s | %8s %8s %8s %8s %9s | %7s" % (
        "target", "delivered/s", "published/s", "lost", "srvCPU", "bchCPU", "p50 ms", "p99 ms",
        "p99.9 ms", "max ms", "lat.lost", "herold/"))
    lines = [head, "-" * len(head)]
    for t in targets:
        thr = summary.get(t, {}).get("throughput")
        lat = summary.get(t, {}).get("latency")
        if thr:
            ratio = ("%.2f" % (herold_rate / thr["delivered_per_s"])
                     if herold_rate and thr["delivered_per_s"] else "-")
            left = "%-8s %12s %12s %9s %6.2f %6.2f" % (
                t, fmt_int(thr["delivered_per_s"]), fmt_int(thr["published_per_s"]),
                fmt_int(thr["lost"]), thr["server_cpu_cores"], thr["bench_cpu_cores"])
        else:
            ratio = "-"
            left = "%-8s %12s %12s %9s %6s %6s" % (t, "failed", "", "", "", "")
        if lat:
            q = lat["latency_us"]
            right = "%8s %8s %8s %8s %9s" % (fmt_ms(q["p50"]), fmt_ms(q["p99"]),
                                            fmt_ms(q["p999"]), fmt_ms(q["max"]),
                                            fmt_int(lat["lost"]))
        else:
            right = "%8s %8s %8s %8s %9s" % (
                "too slow" if t in SKIPPED_LATENCY else "failed", "", "", "", "")
        lines.append("%s | %s | %7s" % (left, right, ratio))
    for f in failures:
        lines.append("failed: %s" % f)
    return lines


def round_order(targets, rnd, rounds):
    """The order of the targets in round rnd (1-based) of rounds: each round starts a
    further share of the list along, so that no target always runs first or last while
    the machine's speed drifts over the minutes a suite takes."""
    shift = (rnd - 1) * len(targets) // rounds % len(targets) if targets else 0
    return targets[shift:] + targets[:shift]


def amount(scenario):
    """How much a scenario publishes: '10 s' (at most N events) or 'N events'."""
    if scenario.get("seconds"):
        return "%d s (at most %s events)" % (scenario["seconds"], fmt_int(scenario["events"]))
    return "%s events" % fmt_int(scenario["events"])


MATCH_SIZES = "10000,1000000"
# bench/match matches the smallest size's city beside the largest size's count in all.
MATCH_RELATED = min(int(n) for n in MATCH_SIZES.split(","))
MATCH_UNRELATED = max(int(n) for n in MATCH_SIZES.split(",")) - MATCH_RELATED
# The index holds ten million: measured alone, since beside the other sizes it would
# also bring another city of ten million for the unrelated comparison (about 2.5 minutes
# alone here, most of it building).
MATCH_LARGE = 10000000
IDLE_CONNECTIONS_GOAL = 100000


def parse_match_output(text):
    """build/bench/match's output: ({subscriptions: row}, the row beside unrelated
    subscriptions or None), rows as dicts of floats."""
    columns = ["subscriptions", "bytes_per_sub", "bytes_per_owner", "events_per_s",
               "deliveries_per_event", "cost_ratio", "adds_per_s", "longest_add_ms",
               "longest_owner_ms", "events_per_s_all_cpus"]
    unrelated_columns = ["related", "unrelated", "events_per_s_alone", "events_per_s_beside",
                         "deliveries_per_event", "cost_ratio"]
    sizes, unrelated = {}, None
    for line in text.splitlines():
        fields = line.split()
        if not fields or not all(re.fullmatch(r"[0-9.]+", f) for f in fields):
            continue
        if len(fields) == len(columns):
            row = dict(zip(columns, (float(f) for f in fields)))
            sizes[int(row["subscriptions"])] = row
        elif len(fields) == len(unrelated_columns):
            unrelated = dict(zip(unrelated_columns, (float(f) for f in fields)))
    return sizes, unrelated


def run_match(build, sizes, out):
    """build/bench/match over sizes (text, comma-separated): its rows go into out["match"]
    and out["unrelated"], a failure into out["errors"]."""
    try:
        done = subprocess.run([os.path.join(build, "bench", "match"), sizes],
                              capture_output=True, text=True, timeout=900, cwd=ROOT)
        rows, unrelated = parse_match_output(done.stdout)
        out["match"].update(rows)
        if unrelated:
            out["unrelated"] = unrelated
        if done.returncode != 0 or not rows:
            out["errors"].append("bench/match %s exited with status %d: %s" % (
                sizes, done.returncode, done.stderr.strip()[-300:]))
    except (OSError, subprocess.TimeoutExpired) as e:
        out["errors"].append("bench/match %s: %s" % (sizes, e))


def measure_scale(build):
    """The matcher at 10k, 1M and 10M subscriptions (build/bench/match) and idle WebSocket
    connections (bench/ws_idle.sh with as many as the hard file limit leaves room for, up to
    IDLE_CONNECTIONS_GOAL). Returns {"match": {size: row}, "unrelated": row or None,
    "idle": {...}, "errors": [...]}; a measure that did not run is missing, and errors says
    why."""
    out = {"match": {}, "unrelated": None, "idle": None, "errors": []}
    run_match(build, MATCH_SIZES, out)
    run_match(build, str(MATCH_LARGE), out)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    count = IDLE_CONNECTIONS_GOAL
    if hard != resource.RLIM_INFINITY:
        # ws_idle.sh needs the count plus 1024 descriptors; 1000 more for the client's own.
        count = min(count, (hard - 1024 - 1000) // 1000 * 1000)
    if count < 1000:
        out["errors"].append("bench/ws_idle.sh not run: the hard file limit (%d) leaves room "
                             "for fewer than 1,000 connections" % hard)
        return out
    env = dict(os.environ, HEROLD_BUILD=build)
    try:
        done = subprocess.run(["bash", os.path.join(BENCH, "ws_idle.sh"), str(count)],
                              capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
        accepted = re.search(r"connections: (\d+) accepted, (\d+) failed, in ([0-9.]+) s",
                             done.stdout)
        rss = re.search(r"([0-9.]+) KiB per connection", done.stdout)
        if done.returncode == 0 and accepted and rss:
            out["idle"] = {"asked": count, "accepted": int(accepted.group(1)),
                           "failed": int(accepted.group(2)),
                           "seconds": float(accepted.group(3)),
                           "kib_per_connection": float(rss.group(1)), "file_limit": hard}
        else:
            out["errors"].append("bench/ws_idle.sh %d exited with status %d: %s" % (
                count, done.returncode, (done.stdout + done.stderr).strip()[-300:]))
    except (OSError, subprocess.TimeoutExpired) as e:
        out["errors"].append("bench/ws_idle.sh: %s" % e)
    return out


def target_rows(summary, scale, best):
    """Issue 5's targets: (what, goal, measured, met), met being "yes", "no" or "—" when
    this run could not measure it or the row has no goal of its own."""
    missing = "not measured in this run"
    matcher = ("matcher, one core, 1 M subscriptions (realistic mix)", "≥ 3 M events/s")
    unrelated = scale.get("unrelated") if scale else None
    cost = ("matcher cost per event as unrelated subscriptions grow: %s beside %s unrelated, "
            "against the %s alone" % (fmt_int(MATCH_RELATED), fmt_int(MATCH_UNRELATED),
                                      fmt_int(MATCH_RELATED)), "≤ 1.5×")
    growth = ("matcher cost per event, realistic mix at 1 M against at 10 k (the events' own "
              "subscriptions, readers and owners grow too)", "no goal: what a bigger city costs")
    memory = ("memory per subscription at 1 M", "≤ 128 bytes")
    large = ("the index at %s subscriptions: memory per subscription" % fmt_int(MATCH_LARGE),
             "≤ 128 bytes")
    w1 = ("W1 over WebSocket, durable acks", "≥ 500 k deliveries/s, above every peer")
    latency = ("publish to receive at 20 k events/s", "p99 ≤ 2 ms")
    rss = ("broker RSS per idle WebSocket connection", "≤ 2 KiB")
    idle_goal = ("idle WebSocket connections", "100 k")
    rows = []
    big = scale["match"].get(1000000) if scale else None
    if big:
        rows.append(matcher + ("%s events/s" % fmt_int(big["events_per_s"]),
                               "yes" if big["events_per_s"] >= 3e6 else "no"))
        if unrelated:
            rows.append(cost + ("%.2f× (%s against %s events/s)" % (
                unrelated["cost_ratio"], fmt_int(unrelated["events_per_s_beside"]),
                fmt_int(unrelated["events_per_s_alone"])),
                "yes" if unrelated["cost_ratio"] <= 1.5 else "no"))
        else:
            rows.append(cost + (missing, "—"))
        rows.append(growth + ("%.2f×" % big["cost_ratio"], "—"))
        rows.append(memory + ("%d bytes" % big["bytes_per_sub"],
                              "yes" if big["bytes_per_sub"] <= 128 else "no"))
    else:
        rows += [matcher + (missing, "—"), cost + (missing, "—"), growth + (missing, "—"),
                 memory + (missing, "—")]
    ten = scale["match"].get(MATCH_LARGE) if scale else None
    if ten:
        rows.append(large + ("%d bytes (%s events/s on one core; longest add %.1f ms)" % (
            ten["bytes_per_sub"], fmt_int(ten["events_per_s"]), ten["longest_add_ms"]),
            "yes" if ten["bytes_per_sub"] <= 128 else "no"))
    else:
        rows.append(large + (missing, "—"))
    thr = summary.get("herold", {}).get("throughput")
    if thr:
        rate = thr["delivered_per_s"]
        above = best is not None and rate > best[0]
        rows.append(w1 + ("%s/s; best peer %s %s/s" % (fmt_int(rate), best[1], fmt_int(best[0]))
                          if best else "%s/s" % fmt_int(rate),
                          "yes" if rate >= 500000 and above else
                          "above every peer, below 500 k" if above else "no"))
    else:
        rows.append(w1 + (missing, "—"))
    lat = summary.get("herold", {}).get("latency")
    if lat:
        p99 = lat["latency_us"]["p99"]
        rows.append(latency + ("p99 %s ms" % fmt_ms(p99), "yes" if p99 <= 2000 else "no"))
    else:
        rows.append(latency + (missing, "—"))
    idle = scale.get("idle") if scale else None
    if idle:
        rows.append(rss + ("%.2f KiB" % idle["kib_per_connection"],
                           "yes" if idle["kib_per_connection"] <= 2.0 else "no"))
        limited = idle["asked"] < IDLE_CONNECTIONS_GOAL
        rows.append(idle_goal + ("%s accepted in %.2f s%s" % (
            fmt_int(idle["accepted"]), idle["seconds"],
            "; the hard file limit here is %s" % fmt_int(idle["file_limit"]) if limited else ""),
            "yes" if idle["accepted"] >= IDLE_CONNECTIONS_GOAL else
            "not here: file limit" if limited else "no"))
    else:
        rows += [rss + (missing, "—"), idle_goal + (missing, "—")]
    return rows


def results_section(opts, facts, date, targets, summary, scenarios, plots, failures, ratio_line,
                    herold_rate, target_table):
    thr, lat = scenarios["throughput"], scenarios["latency"]
    rounds = "%d round%s" % (opts.rounds, "" if opts.rounds == 1 else "s")
    out = [BEGIN_MARK, "## herold against MQTT, NATS and Redis on one machine", "",
           "`%s`, %s." % (opts.command, date), "",
           "Machine: %d cores (%s), %s, %s, %s; herold %s (embedded store on %s); "
           "mosquitto %s, nats-server %s, redis-server %s (configurations in `bench/peers/`). "
           "Every system runs alone on loopback, fresh for each run, with herold-bench on the "
           "same two cores, all in one scheduling group (the kernel shares the CPU thread by "
           "thread). herold acks each event after the journal's fdatasync; the peers "
           "keep nothing (MQTT QoS 0, core NATS, Redis pub/sub) and are set not to drop or "
           "cut a reader that is merely slow." % (
               facts["cores"], facts["model"], facts["memory"], facts["kernel"], facts["os"],
               facts["commit"], facts["data_fs"], facts["mosquitto"], facts["nats-server"],
               facts["redis-server"]), "",
           "### Throughput: `bench/scenarios/%s.conf`" % thr["name"], "",
           "%d connections x %d subscriptions, %d followers per folder, %d-byte events, "
           "%s %s, for %s; medians of %s. CPU: cores used per wall second by the server "
           "and by herold-bench during the run." % (
               thr["connections"], thr["subs_per_conn"], thr["followers"], thr["event_bytes"],
               "one publisher" if thr["publishers"] == 1 else
               "%d publishers" % thr["publishers"],
               "as fast as it is let (herold: up to %d events awaiting their ack)" %
               thr["window"] if thr["rate"] == 0 else "at %s events/s" % fmt_int(thr["rate"]),
               amount(thr), rounds), "",
           "| target | delivered/s | published/s | lost | server CPU | bench CPU | herold/target |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for t in targets:
        s = summary.get(t, {}).get("throughput")
        if not s:
            out.append("| %s | failed | | | | | |" % t)
            continue
        ratio = ("%.2f" % (herold_rate / s["delivered_per_s"])
                 if herold_rate and s["delivered_per_s"] else "—")
        out.append("| %s | %s | %s | %s | %.2f | %.2f | %s |" % (
            t, fmt_int(s["delivered_per_s"]), fmt_int(s["published_per_s"]),
            fmt_int(s["lost"]), s["server_cpu_cores"], s["bench_cpu_cores"], ratio))
    out += ["", "### Latency: `bench/scenarios/%s.conf`" % lat["name"], "",
            "The same subscriptions at a fixed %s events/s, %s events; publish to delivery, "
            "in milliseconds; medians of %s." % (fmt_int(lat["rate"]), fmt_int(lat["events"]),
                                                 rounds), "",
            "| target | p50 | p99 | p99.9 | max | lost |", "|---|---:|---:|---:|---:|---:|"]
    for t in targets:
        s = summary.get(t, {}).get("latency")
        if not s and t in SKIPPED_LATENCY:
            out.append("| %s | not run: its throughput is below this rate | | | | |" % t)
            continue
        if not s:
            out.append("| %s | failed | | | | |" % t)
            continue
        q = s["latency_us"]
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            t, fmt_ms(q["p50"]), fmt_ms(q["p99"]), fmt_ms(q["p999"]), fmt_ms(q["max"]),
            fmt_int(s["lost"])))
    out.append("")
    if failures:
        out += ["Failed runs: " + "; ".join(failures), ""]
    for png, alt in (("w1-throughput.png", "deliveries per second over time"),
                     ("latency-cdf.png", "latency CDF")):
        if png in plots:
            out.append("![%s](results/%s)" % (alt, png))
    if plots:
        out.append("")
    if target_table:
        out += ["### Issue 5's targets in this run", "",
                "The matcher: `build/bench/match %s` (one core; the mix, and the city of %s "
                "beside another city's %s, at the top of `bench/match.c`; the indexes take "
                "turns pass by pass, so the ratios are measured alike), and `build/bench/match "
                "%d` for the index at %s. Connections: `bench/ws_idle.sh N`, N as large as the "
                "file limit allows. W1 and latency: the tables above." % (
                    MATCH_SIZES, fmt_int(MATCH_RELATED), fmt_int(MATCH_UNRELATED),
                    MATCH_LARGE, fmt_int(MATCH_LARGE)), "",
                "| target | goal | measured | met |", "|---|---|---|---|"]
        out += ["| %s | %s | %s | %s |" % row for row in target_table]
        out.append("")
    out += [ratio_line, END_MARK]
    # RESULTS.md keeps to 100 columns like the code: wrap the prose, not tables or images.
    wrapped = []
    for line in out:
        if len(line) > 100 and not line.startswith(("|", "!", "<")):
            wrapped += textwrap.wrap(line, 100, break_on_hyphens=False, break_long_words=False)
        else:
            wrapped.append(line)
    return wrapped


def rewrite_results_md(path, section):
    """Replaces the lines between the markers (inclusive) with section; without markers,
    inserts the section after the intro paragraph (the first paragraph after the title)."""
    with open(path) as f:
        lines = f.read().split("\n")
    if BEGIN_MARK in lines and END_MARK in lines and \
            lines.index(BEGIN_MARK) < lines.index(END_MARK):
        begin, end = lines.index(BEGIN_MARK), lines.index(END_MARK)
        lines[begin:end + 1] = section
    else:
        i = 0
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("# ")):
            i += 1
        while i < len(lines) and lines[i].strip():
            i += 1
        # i: the blank line after the intro paragraph (or the end of the file).
        lines[i:i] = [""] + section
    text = "\n".join(lines)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(
        description="herold against mosquitto, nats-server and redis-server, driven by "
        "herold-bench (see the top of bench/suite.py)")
    parser.add_argument("--quick", action="store_true",
                        help="one round of w1-quick and latency-quick (under a minute)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, with --quick 1)")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS),
                        help="comma-separated subset of " + ",".join(ALL_TARGETS))
    parser.add_argument("--build", default="build", help="build directory (default build)")
    parser.add_argument("--no-results-md", action="store_true",
                        help="leave bench/RESULTS.md alone")
    opts = parser.parse_args()
    if opts.quick:
        # A quick run leaves the committed results of the full suite alone.
        global RESULTS, SUITE_DIR
        RESULTS = os.path.join(BENCH, "results", "quick")
        SUITE_DIR = os.path.join(RESULTS, "suite")
    opts.command = " ".join(["bench/suite.py"] + sys.argv[1:])
    if opts.rounds is None:
        opts.rounds = 1 if opts.quick else 3
    if opts.rounds < 1:
        parser.error("--rounds must be at least 1")
    targets = [t.strip() for t in opts.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown or not targets:
        parser.error("unknown target(s) %s; known: %s" % (",".join(unknown),
                                                          ",".join(ALL_TARGETS)))
    # Keep the canonical order, herold first: the ratio column is against herold.
    targets = [t for t in ALL_TARGETS if t in targets]
    build = opts.build if os.path.isabs(opts.build) else os.path.join(ROOT, opts.build)
    opts.bench = os.path.join(build, "bench", "herold-bench")
    need = [opts.bench] + ([os.path.join(build, "herold")] if "herold" in targets else [])
    for path in need:
        if not os.access(path, os.X_OK):
            sys.exit("suite: %s is missing: build it first (make bench builds it)" % path)
    programs = {"mosquitto": "mosquitto", "nats": "nats-server", "redis": "redis-server"}
    for t in targets:
        program = programs.get(SYSTEM_OF[t])
        if program and not shutil.which(program):
            sys.exit("suite: %s is not installed (Debian: apt-get install mosquitto "
                     "nats-server redis-server gnuplot-nox)" % program)

    names = {"throughput": "w1-quick" if opts.quick else "w1",
             "latency": "latency-quick" if opts.quick else "latency"}
    scenario_paths = {k: os.path.join(BENCH, "scenarios", v + ".conf") for k, v in names.items()}
    scenarios = {k: read_scenario(p) for k, p in scenario_paths.items()}

    # Also SIGINT: a shell starts background jobs with it ignored, and kill -INT must still
    # end the suite with its cleanup.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    work = tempfile.mkdtemp(prefix="herold-suite-")
    facts = machine_facts(work)
    print("command: %s" % opts.command)
    print("date: %s; machine: %d cores (%s), %s, %s, %s; herold %s; data on %s" % (
        date, facts["cores"], facts["model"], facts["memory"], facts["kernel"], facts["os"],
        facts["commit"], facts["data_fs"]))
    print("scenarios: %s, %s; %d round(s); targets: %s" % (
        os.path.relpath(scenario_paths["throughput"], ROOT),
        os.path.relpath(scenario_paths["latency"], ROOT), opts.rounds, ",".join(targets)),
        flush=True)

    runs = {t: {"throughput": [], "latency": []} for t in targets}
    failures = []
    interrupted = False
    suite_start = time.monotonic()
    try:
        shutil.rmtree(SUITE_DIR, ignore_errors=True)
        os.makedirs(SUITE_DIR)
        for rnd in range(1, opts.rounds + 1):
            for t in round_order(targets, rnd, opts.rounds):
                t0 = time.monotonic()
                for kind in ("throughput", "latency"):
                    skip = latency_skip_reason(runs[t]["throughput"], rnd, scenarios[kind]) \
                        if kind == "latency" else None
                    if skip is not None:
                        SKIPPED_LATENCY.add(t)
                        log("round %d %s %s skipped: %s" % (rnd, t, scenarios[kind]["name"],
                                                            skip))
                        continue
                    # A fresh system per scenario: what one run left behind (a backlog, a
                    # journal's dirty pages being written back) does not land on the next.
                    system = System(SYSTEM_OF[t], build, work)
                    try:
                        system.start()
                        prefix = os.path.join(SUITE_DIR, "r%d-%s-%s" % (
                            rnd, t, scenarios[kind]["name"]))
                        result = run_bench(opts, system, t, scenario_paths[kind],
                                           scenarios[kind], prefix)
                        result["suite"]["prefix"] = prefix
                        result["suite"]["round"] = rnd
                        runs[t][kind].append(result)
                        print("round %d %-8s %-13s delivered/s %10s  lost %9s  p99 %8s ms  "
                              "(%.1f s)" % (rnd, t, scenarios[kind]["name"],
                                            fmt_int(result["delivered_per_s"]),
                                            fmt_int(result["lost"]),
                                            fmt_ms(result["latency_us"]["p99"]),
                                            result["suite"]["wall_seconds"]), flush=True)
                    except SetupError as e:
                        failures.append("round %d %s %s: %s" % (
                            rnd, t, scenarios[kind]["name"], first_of(e)))
                        log("round %d %s %s failed: %s" % (rnd, t, scenarios[kind]["name"], e))
                        if os.path.exists(system.log_path):
                            shutil.copy(system.log_path, os.path.join(
                                SUITE_DIR, "r%d-%s-%s.server.log" % (
                                    rnd, t, scenarios[kind]["name"])))
                    finally:
                        system.stop()
                        shutil.rmtree(system.dir, ignore_errors=True)
                log("round %d %s: %.1f s" % (rnd, t, time.monotonic() - t0))
    except KeyboardInterrupt as e:
        log("suite: interrupted (%s), stopping everything it started" % (e or "Ctrl-C"))
        interrupted = True
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup()
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if interrupted:
        return 130

    summary = {}
    median_files = {}
    for t in targets:
        for kind in ("throughput", "latency"):
            if not runs[t][kind]:
                continue
            summary.setdefault(t, {})[kind] = summarize(runs[t][kind])
            key = ((lambda r: r["delivered_per_s"]) if kind == "throughput"
                   else (lambda r: r["latency_us"]["p99"]))
            chosen = median_run(runs[t][kind], key)
            suffix = "-rate.csv" if kind == "throughput" else "-latency.csv"
            path = chosen["suite"]["prefix"] + suffix
            if os.path.exists(path):
                median_files.setdefault(t, {})[kind] = path
            summary[t][kind]["median_round_prefix"] = os.path.relpath(chosen["suite"]["prefix"],
                                                                      ROOT)

    herold_rate = summary.get("herold", {}).get("throughput", {}).get("delivered_per_s")
    peers = [(summary[t]["throughput"]["delivered_per_s"], t) for t in targets
             if t != "herold" and "throughput" in summary.get(t, {})]
    best = max(peers) if peers else None
    if herold_rate is not None and best and best[0] > 0:
        ratio = herold_rate / best[0]
        ratio_line = "W1 herold/best-peer delivered ratio: %.2f" % ratio
        best_note = "best peer: %s, %s delivered/s" % (best[1], fmt_int(best[0]))
    else:
        ratio = None
        ratio_line = "W1 herold/best-peer delivered ratio: n/a"
        best_note = "needs herold and at least one peer target"

    scale = None
    if not opts.quick and "herold" in targets:
        log("measuring the matcher and idle connections (bench/match, bench/ws_idle.sh)")
        scale = measure_scale(build)
        for error in scale["errors"]:
            log("warning: %s" % error)
    target_table = target_rows(summary, scale, best) if scale else []

    plots = plot(targets, median_files, scenarios, opts.quick)
    with open(os.path.join(SUITE_DIR, "summary.json"), "w") as f:
        json.dump({"command": opts.command, "date": date, "machine": facts,
                   "scenarios": scenarios, "rounds": opts.rounds, "targets": targets,
                   "medians": summary, "failures": failures,
                   "herold_over_best_peer": round(ratio, 3) if ratio is not None else None,
                   "best_peer": best[1] if best else None,
                   "scale": scale,
                   "issue_targets": [dict(zip(("target", "goal", "measured", "met"), row))
                                     for row in target_table],
                   "suite_seconds": round(time.monotonic() - suite_start, 1)}, f, indent=1)
        f.write("\n")

    print()
    print("medians of %d round(s); throughput: %s; latency: %s at %s events/s" % (
        opts.rounds, scenarios["throughput"]["name"], scenarios["latency"]["name"],
        fmt_int(scenarios["latency"]["rate"])))
    for line in table_lines(targets, summary, failures, herold_rate):
        print(line)
    print("herold/: herold's delivered/s over the target's; CPU in cores; %s" % best_note)
    if plots:
        print("plots: %s" % ", ".join(os.path.relpath(os.path.join(RESULTS, p), ROOT)
                                       for p in plots))
    if target_table:
        print()
        print("issue 5's targets in this run:")
        for row in target_table:
            print("  %-56s %-40s %-50s %s" % row)
    if not opts.no_results_md:
        if os.path.exists(RESULTS_MD):
            rewrite_results_md(RESULTS_MD, results_section(
                opts, facts, date, targets, summary, scenarios, plots, failures, ratio_line,
                herold_rate, target_table))
            print("rewrote the suite section of bench/RESULTS.md")
        else:
            log("warning: %s missing, not written" % RESULTS_MD)
    print("suite took %.1f s" % (time.monotonic() - suite_start))
    print(ratio_line, flush=True)
    if ratio is None:
        return 1
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
