#!/usr/bin/python3
"""bench/webhook_delivery.py: webhook delivery through a real herold on loopback.

    /usr/bin/python3 bench/webhook_delivery.py [--events N] [--paced-rate R] ...

Every run starts its own herold (free loopback ports, a temporary --data directory,
--webhook-allow-private), takes a token from `herold token`, creates its webhook
subscriptions through POST /v1.0/subscriptions and receives the POSTs on minimal HTTP/1.1
keep-alive receivers written with asyncio streams (http.server is too slow to measure
herold rather than itself). Runs, in this order:

1. throughput: one subscription, one fast receiver, --events events published pipelined by
   `herold-pub --repeat` (all copies carry one `time`, so no delays here). Reports items/s
   and POSTs/s between the first and the last item, mean items per POST, and whether every
   item id "<subscriptionId>-<seq>" arrived exactly once.
2. paced: the same at --paced-rate events/s for --paced-seconds, published by a child
   process of this script (pyzmq DEALER, pipelined) that stamps each event's `time` when
   it sends it. Per-item delay = the receiver's wall clock when the POST body was read
   minus the item's eventTime (millisecond resolution: the stamp is truncated, so delays
   read up to 1 ms high).
3. baseline and 4. with_slow: events alternating between two resources at --mixed-rate for
   --mixed-seconds. The healthy subscription covers the first resource in both runs; in
   with_slow a second subscription covers the other resource and its receiver waits
   --slow-seconds before answering each notification POST (validation is answered at once).
   Reports the healthy receiver's delays in both runs and p99(with_slow)/p99(baseline).

The publisher runs in a child process so that it does not share this process's GIL with
the receivers (which stamp the receive times). Everything started here is stopped in
`finally` blocks (receivers closed first, then SIGTERM to herold, SIGKILL after 20 s), and
every wait is bounded. Results go to stdout as a table and to --json (default
bench/results/webhook_delivery.json). Exit status 1 when a run lost or duplicated items,
a publish was refused, or herold exited badly; 2 when the benchmark itself could not run.

Standard library plus python3-zmq and python3-msgpack (Debian packages) only.
"""

import argparse
import asyncio
import calendar
import collections
import datetime
import hashlib
import json
import math
import os
import pathlib
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from benchutil import cpu_model, free_ports, process_cpu_seconds

REPO = pathlib.Path(__file__).resolve().parents[1]

START_TIMEOUT = 20.0     # herold's ready line
STOP_TIMEOUT = 20.0      # herold's exit after SIGTERM
HTTP_TIMEOUT = 15.0      # one REST call (creation includes herold's validation POST, 10 s)
ACK_IDLE_TIMEOUT = 10.0  # publisher: no ack for this long while some are outstanding
DELIVERY_IDLE_TIMEOUT = 15.0  # receiver: no new item for this long while some are missing
RECEIVER_CLOSE_TIMEOUT = 5.0

# One per item in a webhook body, in no other place: a cheap count while a run is going.
ITEM_MARK = b'"subscriptionExpirationDateTime"'
OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class BenchError(Exception):
    """The benchmark could not run (not a finding about herold)."""


# ---- small helpers ----------------------------------------------------------------------

def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


_second_cache = {}


def event_time_seconds(text):
    """Unix seconds of an eventTime "2026-11-27T10:00:00.123Z"."""
    head = text[:19]
    base = _second_cache.get(head)
    if base is None:
        base = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
        _second_cache[head] = base
    frac = text[20:-1] if len(text) > 20 and text[19] == "." else ""
    return base + (int(frac) / 10 ** len(frac) if frac else 0.0)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_facts():
    cpu = cpu_model()
    return {"nproc": os.cpu_count(), "kernel": "%s %s" % (platform.system(), platform.release()),
            "cpu": cpu, "python": platform.python_version(), "loadavg_start": loadavg()}


def git_head():
    """The commit HEAD names, read from the files (no git command): context only, the build
    may be older or newer than it."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        path = git / ref
        if path.exists():
            return "%s (%s)" % (path.read_text().strip(), ref)
        packed = git / "packed-refs"
        if packed.exists():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return "%s (%s)" % (line.split()[0], ref)
        return ref
    except OSError:
        return "?"


def build_facts(build):
    herold = build / "herold"
    st = herold.stat()
    digest = hashlib.sha256(herold.read_bytes()).hexdigest()
    mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
    return {"dir": str(build), "herold_sha256": digest[:16],
            "herold_mtime": mtime.strftime("%Y-%m-%dT%H:%M:%SZ"), "tree_head": git_head()}


# ---- the webhook receiver ---------------------------------------------------------------

class Receiver:
    """A minimal HTTP/1.1 keep-alive endpoint on 127.0.0.1: answers validation POSTs with the
    token, records every other POST (wall clock when its body had been read, raw body) and
    answers 200 with an empty body, after `delay` seconds when delay > 0. Bodies are parsed
    only after the run, so answering costs next to nothing. POSTs to .../lifecycle are
    recorded apart."""

    def __init__(self, name, delay=0.0):
        self.name = name
        self.delay = delay
        self.posts = []        # (wall seconds, body bytes)
        self.lifecycle = []    # (wall seconds, body bytes)
        self.validations = 0
        self.items_seen = 0    # ITEM_MARK count, for progress while a run is going
        self.protocol_errors = []
        self.connections = 0
        self._tasks = set()
        self._closing = False
        self.server = None
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def url(self, path="/hook"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    async def _read_chunked(self, reader):
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def _serve(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the peer closed between requests
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                length, chunked, expect, close = 0, False, False, False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name, value = name.strip().lower(), value.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "transfer-encoding":
                        chunked = "chunked" in value
                    elif name == "expect":
                        expect = value == "100-continue"
                    elif name == "connection":
                        close = value == "close"
                if expect:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if chunked:
                    body = await self._read_chunked(reader)
                else:
                    body = await reader.readexactly(length) if length else b""
                wall = time.time()
                path, _, query = target.partition("?")
                if method != "POST":
                    self.protocol_errors.append("%s %s" % (method, target))
                    writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                elif "validationToken=" in query:
                    token = urllib.parse.parse_qs(query).get("validationToken", [""])[0]
                    token = token.encode()
                    self.validations += 1
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(token), token))
                elif path.endswith("/lifecycle"):
                    self.lifecycle.append((wall, body))
                    writer.write(OK_EMPTY)
                else:
                    self.posts.append((wall, body))
                    self.items_seen += body.count(ITEM_MARK)
                    if self.delay > 0:
                        await asyncio.sleep(self.delay)
                    writer.write(OK_EMPTY)
                await writer.drain()
                if close:
                    return
        except asyncio.CancelledError:
            pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as e:
            if not self._closing:
                self.protocol_errors.append("%s: %s" % (type(e).__name__, e))
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def close(self):
        """Stops listening and drops every connection, also one whose answer is sleeping."""
        self._closing = True
        if self.server is None:
            return
        self.server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=RECEIVER_CLOSE_TIMEOUT)
        try:
            await asyncio.wait_for(self.server.wait_closed(), RECEIVER_CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            pass


def analyse_posts(posts, sub_id, with_delays):
    """Parses the recorded bodies: item count, duplicate and foreign ids, per-POST sizes,
    first/last arrival, and per-item delays (ms) when asked."""
    ids = collections.Counter()
    foreign = 0
    delays = []
    sizes = []
    bad_bodies = 0
    for wall, body in posts:
        try:
            items = json.loads(body)["value"]
        except (ValueError, KeyError, TypeError):
            bad_bodies += 1
            continue
        sizes.append(len(items))
        for item in items:
            item_id = item.get("id", "")
            ids[item_id] += 1
            if item.get("subscriptionId") != sub_id or not item_id.startswith(sub_id + "-"):
                foreign += 1
            if with_delays:
                delays.append((wall - event_time_seconds(item["eventTime"])) * 1000.0)
    total = sum(ids.values())
    first = posts[0][0] if posts else None
    last = posts[-1][0] if posts else None
    delays.sort()
    return {"items": total, "unique": len(ids),
            "duplicates": total - len(ids),
            "duplicate_ids_sample": [i for i, n in ids.items() if n > 1][:5],
            "foreign_items": foreign, "bad_bodies": bad_bodies,
            "posts": len(posts), "max_items_per_post": max(sizes) if sizes else 0,
            "first": first, "last": last, "delays_ms": delays}


def delay_summary(delays):
    return {"p50": percentile(delays, 50), "p99": percentile(delays, 99),
            "max": delays[-1] if delays else None, "min": delays[0] if delays else None,
            "n": len(delays)}


# ---- herold -----------------------------------------------------------------------------

_live_herolds = set()  # a last-resort stop in main() for any left running


class Herold:
    def __init__(self, build, workdir, name, extra_args):
        self.build = build
        self.dir = workdir / name
        self.dir.mkdir()
        self.data = self.dir / "var"
        self.log_path = self.dir / "herold.log"
        self.http_port, ingest_port = free_ports(2)
        self.ingest = "tcp://127.0.0.1:%d" % ingest_port
        self.base = "http://127.0.0.1:%d" % self.http_port
        self.args = [str(build / "herold"), "--http", "127.0.0.1:%d" % self.http_port,
                     "--ingest", self.ingest, "--data", str(self.data),
                     "--log-level", "info", "--webhook-allow-private"] + list(extra_args)
        self.proc = None
        self.returncode = None
        self._log = None

    async def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        _live_herolds.add(self)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("herold exited with %s at start:\n%s"
                                 % (self.proc.returncode, self.log_text()[-2000:]))
            if b" herold: ready " in self.log_path.read_bytes():
                return
            await asyncio.sleep(0.05)
        raise BenchError("herold printed no ready line within %ss:\n%s"
                         % (START_TIMEOUT, self.log_text()[-2000:]))

    def cpu_seconds(self):
        """utime + stime of the running broker, from /proc."""
        return process_cpu_seconds(self.proc.pid)

    async def stop(self):
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit code (or a text)."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            try:
                while self.proc.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                self.stop_now()
                raise
        self.stop_now()
        return self.returncode

    def stop_now(self):
        """The blocking form of stop(), for cancellation and the last resort in main()."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.returncode = "killed: no exit within %ss of SIGTERM" % STOP_TIMEOUT
        if self.returncode is None:
            self.returncode = self.proc.returncode
        self._log.close()
        _live_herolds.discard(self)
        return self.returncode

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_problems(self):
        return [line for line in self.log_text().splitlines()
                if re.match(r"^\S+ (warn|error)\b", line)]

    def token(self):
        r = subprocess.run([str(self.build / "herold"), "token", "bench", "--groups", "staff",
                            "--data", str(self.data)], capture_output=True, timeout=10,
                           text=True)
        if r.returncode != 0 or not r.stdout.strip():
            raise BenchError("herold token failed (%d): %s" % (r.returncode, r.stderr))
        return r.stdout.strip()


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_json(method, url, token, body):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with _opener.open(req, timeout=HTTP_TIMEOUT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def create_subscription(herold, token, resource, receiver):
    """POST /v1.0/subscriptions (run in a thread: herold validates against our receiver,
    which answers on this event loop)."""
    expiration = (datetime.datetime.now(datetime.timezone.utc)
                  + datetime.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"changeType": "created,updated,deleted", "resource": resource,
            "notificationUrl": receiver.url("/hook"),
            "lifecycleNotificationUrl": receiver.url("/lifecycle"),
            "expirationDateTime": expiration}
    loop = asyncio.get_running_loop()
    status, text = await asyncio.wait_for(
        loop.run_in_executor(None, _http_json, "POST", herold.base + "/v1.0/subscriptions",
                             token, body), HTTP_TIMEOUT + 5)
    if status != 201:
        raise BenchError("creating a subscription on %s: HTTP %d %s" % (resource, status, text))
    return json.loads(text)["id"]


# ---- publishers -------------------------------------------------------------------------

async def run_process(args, timeout):
    """Runs a command, returns (rc, stdout, stderr); killed after timeout (BenchError)."""
    proc = await asyncio.create_subprocess_exec(*args, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError("%s did not finish within %ss" % (args[:2], timeout))
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def publish_with_herold_pub(build, herold, count, resource):
    args = [str(build / "herold-pub"), "--ingest", herold.ingest, "--source", "bench",
            "--id", "tp", "--resource", resource, "--readers", "group:staff",
            "--repeat", str(count), "--quiet"]
    rc, _out, err = await run_process(args, timeout=60 + count / 500.0)
    m = re.search(r"(\d+) events acked in ([0-9.]+) s \((\d+) events/s\)(?:, (\d+) refused)?",
                  err)
    return {"tool": "herold-pub --repeat", "rc": rc, "requested": count,
            "acked": int(m.group(1)) if m else None,
            "refused": int(m.group(4) or 0) if m else None,
            "seconds": float(m.group(2)) if m else None,
            "acked_per_s": int(m.group(3)) if m else None, "stderr": err.strip()[-500:]}


async def publish_paced(herold, count, rate, resources, prefix):
    """Runs this script as a publisher child (see publish_child)."""
    spec = {"ingest": herold.ingest, "count": count, "rate": rate, "resources": resources,
            "prefix": prefix, "readers": ["group:staff"]}
    args = [sys.executable, str(pathlib.Path(__file__).resolve()), "--publish-child",
            json.dumps(spec)]
    rc, out, err = await run_process(args, timeout=count / rate + 60)
    try:
        result = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError("publisher child (rc %d) printed no summary: %s %s" % (rc, out, err))
    if "error" in result:
        raise BenchError("publisher child: %s" % result["error"])
    result["tool"] = "pyzmq DEALER child, paced"
    result["rc"] = rc
    return result


def publish_child(spec):
    """Publisher process: `count` events over one DEALER, event i due i/rate seconds after
    the first; each event's `time` is the wall clock when it is sent. Acks are read while
    sending. Prints one JSON summary line."""
    import msgpack
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(spec["ingest"])
    count, rate, resources = spec["count"], float(spec["rate"]), spec["resources"]
    state = {"ok": 0, "refused": 0, "first_error": None}

    def take_reply(message):
        reply = msgpack.unpackb(message, raw=False)
        if reply.get("ok") is True:
            state["ok"] += 1
        else:
            state["refused"] += 1
            if state["first_error"] is None:
                state["first_error"] = reply

    def drain():
        while True:
            try:
                take_reply(sock.recv(zmq.NOBLOCK))
            except zmq.Again:
                return

    # One event that no subscription covers, so that the connection is up before the clock
    # starts (otherwise the first events' delays include the TCP and ZMTP handshakes).
    sock.send(msgpack.packb({"id": spec["prefix"] + "-warmup", "source": "bench",
                             "type": "updated", "resource": "/bench/warmup/doc",
                             "time": int(time.time() * 1000), "readers": spec["readers"]},
                            use_bin_type=True))
    if not sock.poll(ACK_IDLE_TIMEOUT * 1000, zmq.POLLIN):
        print(json.dumps({"error": "no ack for the warm-up event within %ss" % ACK_IDLE_TIMEOUT}))
        return 1
    warmup = msgpack.unpackb(sock.recv(), raw=False)
    if warmup.get("ok") is not True:
        print(json.dumps({"error": "warm-up event refused: %r" % (warmup,)}))
        return 1

    sent = 0
    max_behind = 0.0
    t0 = time.monotonic()
    wall0 = time.time()
    while sent < count:
        now = time.monotonic()
        due = t0 + sent / rate
        if now < due:
            drain()
            time.sleep(min(due - now, 0.01))
            continue
        max_behind = max(max_behind, now - due)
        event = {"id": "%s-%d" % (spec["prefix"], sent + 1), "source": "bench",
                 "type": "updated", "resource": resources[sent % len(resources)],
                 "time": int(time.time() * 1000), "readers": spec["readers"]}
        sock.send(msgpack.packb(event, use_bin_type=True))
        sent += 1
        if sent % 32 == 0:
            drain()
    send_seconds = time.monotonic() - t0
    last_reply = time.monotonic()
    while state["ok"] + state["refused"] < sent:
        if sock.poll(100, zmq.POLLIN):
            drain()
            last_reply = time.monotonic()
        elif time.monotonic() - last_reply > ACK_IDLE_TIMEOUT:
            break
    sock.close()
    ctx.term()
    print(json.dumps({"requested": count, "sent": sent, "acked": state["ok"],
                      "refused": state["refused"], "first_error": state["first_error"],
                      "unanswered": sent - state["ok"] - state["refused"],
                      "rate_asked": rate, "send_seconds": round(send_seconds, 3),
                      "sent_per_s": round(sent / send_seconds) if send_seconds > 0 else None,
                      "max_behind_schedule_ms": round(max_behind * 1000, 1),
                      "first_send_wall": wall0}))
    return 0


# ---- waiting ----------------------------------------------------------------------------

async def wait_items(receiver, expected, total_timeout):
    """Until the receiver has seen `expected` items, or no new item came for
    DELIVERY_IDLE_TIMEOUT, or total_timeout passed. Returns a reason."""
    start = last_change = time.monotonic()
    seen = receiver.items_seen
    while receiver.items_seen < expected:
        now = time.monotonic()
        if receiver.items_seen != seen:
            seen, last_change = receiver.items_seen, now
        if now - last_change > DELIVERY_IDLE_TIMEOUT:
            return "no new item for %.0f s" % DELIVERY_IDLE_TIMEOUT
        if now - start > total_timeout:
            return "not all within %.0f s" % total_timeout
        await asyncio.sleep(0.05)
    return "complete"


# ---- runs -------------------------------------------------------------------------------

class Run:
    """One herold, its receivers, and everything to stop afterwards."""

    def __init__(self, opts, workdir, name):
        self.opts = opts
        self.name = name
        self.herold = Herold(opts.build, workdir, name, opts.herold_args)
        self.receivers = []
        self.result = {"run": name, "loadavg_before": loadavg()}

    async def __aenter__(self):
        try:
            await self.herold.start()
            self.token = self.herold.token()
        except BaseException:
            await self.herold.stop()
            raise
        return self

    async def receiver(self, name, delay=0.0):
        r = Receiver(name, delay)
        self.receivers.append(r)
        await r.start()
        return r

    async def __aexit__(self, *exc):
        # Receivers first, so that no request of herold's waits on a sleeping answer.
        cpu = self.herold.cpu_seconds()
        try:
            for r in self.receivers:
                await r.close()
        finally:
            rc = await self.herold.stop()
        self.result["herold_cpu_s"] = cpu
        self.result["herold_exit"] = rc
        self.result["herold_log_problems"] = self.herold.log_problems()[:20]
        self.result["loadavg_after"] = loadavg()
        return False


def lifecycle_events(receiver):
    out = []
    for _wall, body in receiver.lifecycle:
        try:
            out += [v.get("lifecycleEvent") for v in json.loads(body)["value"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            out.append("unparsable")
    return out


def delivery_check(analysis, expected):
    problems = []
    if analysis["unique"] != expected:
        problems.append("%d of %d distinct items arrived (%d missing)"
                        % (analysis["unique"], expected, expected - analysis["unique"]))
    if analysis["duplicates"]:
        problems.append("%d duplicate items, e.g. %s"
                        % (analysis["duplicates"], analysis["duplicate_ids_sample"]))
    if analysis["foreign_items"]:
        problems.append("%d items of another subscription" % analysis["foreign_items"])
    if analysis["bad_bodies"]:
        problems.append("%d bodies not {\"value\":[...]} JSON" % analysis["bad_bodies"])
    return problems


async def run_throughput(opts, workdir):
    async with Run(opts, workdir, "throughput") as run:
        rx = await run.receiver("fast")
        sub = await create_subscription(run.herold, run.token, "/bench/tp", rx)
        cpu0 = run.herold.cpu_seconds()
        pub_task = asyncio.ensure_future(
            publish_with_herold_pub(opts.build, run.herold, opts.events, "/bench/tp/doc"))
        try:
            outcome = await wait_items(rx, opts.events, 120 + opts.events / 200.0)
            pub = await pub_task
        finally:
            if not pub_task.done():
                pub_task.cancel()
        await asyncio.sleep(opts.settle)  # late duplicates would arrive now
        run.result["herold_cpu_run_s"] = (run.herold.cpu_seconds() or 0) - (cpu0 or 0)
        a = analyse_posts(rx.posts, sub, with_delays=False)
        span = (a["last"] - a["first"]) if a["posts"] > 1 else None
        run.result.update({
            "events": opts.events, "publisher": pub, "wait": outcome,
            "items": a["items"], "unique": a["unique"], "duplicates": a["duplicates"],
            "posts": a["posts"], "seconds_first_to_last": span,
            "items_per_s": a["items"] / span if span else None,
            "posts_per_s": a["posts"] / span if span else None,
            "mean_items_per_post": a["items"] / a["posts"] if a["posts"] else None,
            "max_items_per_post": a["max_items_per_post"],
            "lifecycle": lifecycle_events(rx), "receiver_errors": rx.protocol_errors[:5],
            "receiver_connections": rx.connections,
            "problems": delivery_check(a, opts.events) + publisher_problems(pub, opts.events)})
    return run.result


def publisher_problems(pub, count):
    problems = []
    if pub.get("rc") != 0:
        problems.append("publisher exit %s: %s" % (pub.get("rc"), pub.get("stderr", "")))
    if pub.get("acked") != count:
        problems.append("publisher: %s of %d acked" % (pub.get("acked"), count))
    if pub.get("refused"):
        problems.append("publisher: %s refused, first %s" % (pub["refused"],
                                                             pub.get("first_error")))
    return problems


async def run_paced(opts, workdir):
    count = int(opts.paced_rate * opts.paced_seconds)
    async with Run(opts, workdir, "paced") as run:
        rx = await run.receiver("fast")
        sub = await create_subscription(run.herold, run.token, "/bench/paced", rx)
        cpu0 = run.herold.cpu_seconds()
        pub_task = asyncio.ensure_future(
            publish_paced(run.herold, count, opts.paced_rate, ["/bench/paced/doc"], "paced"))
        try:
            outcome = await wait_items(rx, count, opts.paced_seconds + 120)
            pub = await pub_task
        finally:
            if not pub_task.done():
                pub_task.cancel()
        await asyncio.sleep(opts.settle)
        run.result["herold_cpu_run_s"] = (run.herold.cpu_seconds() or 0) - (cpu0 or 0)
        a = analyse_posts(rx.posts, sub, with_delays=True)
        run.result.update({
            "events": count, "rate": opts.paced_rate, "publisher": pub, "wait": outcome,
            "items": a["items"], "unique": a["unique"], "duplicates": a["duplicates"],
            "posts": a["posts"],
            "mean_items_per_post": a["items"] / a["posts"] if a["posts"] else None,
            "delay_ms": delay_summary(a["delays_ms"]),
            "lifecycle": lifecycle_events(rx), "receiver_errors": rx.protocol_errors[:5],
            "problems": delivery_check(a, count) + publisher_problems(pub, count)})
    return run.result


async def run_mixed(opts, workdir, with_slow):
    count = int(opts.mixed_rate * opts.mixed_seconds)
    healthy_expected = (count + 1) // 2  # events 1, 3, 5, ... go to the healthy resource
    name = "with_slow" if with_slow else "baseline"
    async with Run(opts, workdir, name) as run:
        healthy = await run.receiver("healthy")
        sub = await create_subscription(run.herold, run.token, "/bench/mix/healthy", healthy)
        slow = None
        if with_slow:
            slow = await run.receiver("slow", delay=opts.slow_seconds)
            slow_sub = await create_subscription(run.herold, run.token, "/bench/mix/slow", slow)
        cpu0 = run.herold.cpu_seconds()
        pub_task = asyncio.ensure_future(publish_paced(
            run.herold, count, opts.mixed_rate,
            ["/bench/mix/healthy/doc", "/bench/mix/slow/doc"], name))
        try:
            outcome = await wait_items(healthy, healthy_expected, opts.mixed_seconds + 120)
            pub = await pub_task
        finally:
            if not pub_task.done():
                pub_task.cancel()
        await asyncio.sleep(opts.settle)
        run.result["herold_cpu_run_s"] = (run.herold.cpu_seconds() or 0) - (cpu0 or 0)
        a = analyse_posts(healthy.posts, sub, with_delays=True)
        run.result.update({
            "events": count, "rate": opts.mixed_rate, "healthy_expected": healthy_expected,
            "publisher": pub, "wait": outcome, "items": a["items"], "unique": a["unique"],
            "duplicates": a["duplicates"], "posts": a["posts"],
            "mean_items_per_post": a["items"] / a["posts"] if a["posts"] else None,
            "delay_ms": delay_summary(a["delays_ms"]),
            "lifecycle": lifecycle_events(healthy), "receiver_errors": healthy.protocol_errors[:5],
            "problems": delivery_check(a, healthy_expected) + publisher_problems(pub, count)})
        if slow is not None:
            s = analyse_posts(slow.posts, slow_sub, with_delays=False)
            run.result["slow"] = {
                "delay_s": opts.slow_seconds, "posts_received": s["posts"],
                "items_received": s["items"], "duplicates": s["duplicates"],
                "items_published": count - healthy_expected,
                "max_items_per_post": s["max_items_per_post"],
                "lifecycle": lifecycle_events(slow), "receiver_errors": slow.protocol_errors[:5]}
            if s["duplicates"]:
                run.result["problems"].append("slow receiver got %d duplicates" % s["duplicates"])
    return run.result


# ---- report -----------------------------------------------------------------------------

def fmt(value, spec="%.1f"):
    return "-" if value is None else spec % value


def print_report(results, opts):
    tp, paced = results.get("throughput"), results.get("paced")
    base, slow = results.get("baseline"), results.get("with_slow")
    print()
    if tp:
        print("throughput (%d events, herold-pub --repeat, unpaced)" % tp["events"])
        print("  %-22s %s" % ("publisher acked/s", fmt(tp["publisher"].get("acked_per_s"), "%d")))
        print("  %-22s %s" % ("items delivered/s", fmt(tp["items_per_s"], "%.0f")))
        print("  %-22s %s" % ("POSTs/s", fmt(tp["posts_per_s"], "%.0f")))
        print("  %-22s %s (max %d)" % ("mean items/POST", fmt(tp["mean_items_per_post"]),
                                        tp["max_items_per_post"]))
        print("  %-22s %s" % ("first->last item s", fmt(tp["seconds_first_to_last"], "%.2f")))
        print("  %-22s %d received, %d distinct, %d duplicates -> %s"
              % ("exactly once", tp["items"], tp["unique"], tp["duplicates"],
                 "yes" if not tp["problems"] else "NO"))
        print("  %-22s %s" % ("herold CPU s", fmt(tp["herold_cpu_run_s"], "%.2f")))
    rows = [r for r in (paced, base, slow) if r]
    if rows:
        print()
        print("%-11s %7s %8s %7s %9s %8s %8s %8s %8s %9s %s"
              % ("run", "rate/s", "events", "items", "items/POST", "p50 ms", "p99 ms",
                 "max ms", "pub lag", "herold s", "delivered"))
        for r in rows:
            d = r["delay_ms"]
            print("%-11s %7.0f %8d %7d %9s %8s %8s %8s %8s %9s %s"
                  % (r["run"], r["rate"], r["events"], r["items"],
                     fmt(r["mean_items_per_post"]), fmt(d["p50"]), fmt(d["p99"]),
                     fmt(d["max"]), fmt(r["publisher"].get("max_behind_schedule_ms")),
                     fmt(r["herold_cpu_run_s"], "%.2f"),
                     "exactly once" if not r["problems"] else "PROBLEM"))
        print("  (items = healthy receiver's items in baseline/with_slow; pub lag = publisher's"
              " max ms behind schedule;\n   herold s = broker CPU seconds during the run)")
    if slow and "slow" in slow:
        s = slow["slow"]
        print("  slow receiver (answers after %.1f s): %d POSTs, %d of %d items received"
              " before the end (rest still queued, by design)"
              % (s["delay_s"], s["posts_received"], s["items_received"], s["items_published"]))
    if base and slow:
        b99, s99 = base["delay_ms"]["p99"], slow["delay_ms"]["p99"]
        if b99 and s99 is not None:
            print("  healthy p99 with slow / baseline: %.2f  (difference %+.1f ms; p50 %+.1f ms,"
                  " max %+.1f ms)" % (s99 / b99, s99 - b99,
                                      slow["delay_ms"]["p50"] - base["delay_ms"]["p50"],
                                      slow["delay_ms"]["max"] - base["delay_ms"]["max"]))
    print()
    any_problem = False
    for name, r in results.items():
        for p in r.get("problems", []):
            print("PROBLEM %s: %s" % (name, p))
            any_problem = True
        if r.get("herold_exit") != 0:
            print("PROBLEM %s: herold exit %s after SIGTERM" % (name, r.get("herold_exit")))
            any_problem = True
        for line in r.get("herold_log_problems", []):
            print("herold log %s: %s" % (name, line))
        lc = r.get("lifecycle")
        if lc:
            print("lifecycle %s (healthy/fast receiver): %s" % (name, collections.Counter(lc)))
        if r.get("receiver_errors"):
            print("receiver errors %s: %s" % (name, r["receiver_errors"]))
        if r.get("wait") != "complete":
            print("wait %s: %s" % (name, r.get("wait")))
    print("loadavg per run (before -> after): " + ", ".join(
        "%s %s -> %s" % (n, r["loadavg_before"], r["loadavg_after"]) for n, r in results.items()))
    return any_problem


# ---- main -------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=50000, help="throughput run (default 50000)")
    p.add_argument("--paced-rate", type=float, default=5000, help="events/s (default 5000)")
    p.add_argument("--paced-seconds", type=float, default=5, help="(default 5)")
    p.add_argument("--mixed-rate", type=float, default=500,
                   help="events/s alternating healthy/slow (default 500)")
    p.add_argument("--mixed-seconds", type=float, default=10, help="(default 10)")
    p.add_argument("--slow-seconds", type=float, default=2.0,
                   help="the slow receiver's answer delay (default 2)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="seconds to wait after the last expected item, for duplicates")
    p.add_argument("--runs", default="throughput,paced,baseline,with_slow",
                   help="comma-separated subset of throughput,paced,baseline,with_slow")
    p.add_argument("--build", type=pathlib.Path,
                   default=pathlib.Path(os.environ.get("HEROLD_BUILD", "build")))
    p.add_argument("--herold-arg", dest="herold_args", action="append", default=[],
                   help="extra herold flag (repeatable), "
                        "e.g. --herold-arg=--webhook-batch-items=500")
    p.add_argument("--json", type=pathlib.Path,
                   default=REPO / "bench/results/webhook_delivery.json")
    p.add_argument("--publish-child", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if not opts.build.is_absolute():
        opts.build = REPO / opts.build
    opts.runs = [r.strip() for r in opts.runs.split(",") if r.strip()]
    unknown = set(opts.runs) - {"throughput", "paced", "baseline", "with_slow"}
    if unknown:
        p.error("unknown runs: %s" % ", ".join(sorted(unknown)))
    return opts


async def bench(opts):
    # SIGTERM and SIGHUP cancel the run like Ctrl-C does, so the finally blocks stop herold.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, asyncio.current_task().cancel)
    results = {}
    with tempfile.TemporaryDirectory(prefix="herold-webhook-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        for name in opts.runs:
            print("running %s ..." % name, flush=True)
            if name == "throughput":
                results[name] = await run_throughput(opts, workdir)
            elif name == "paced":
                results[name] = await run_paced(opts, workdir)
            else:
                results[name] = await run_mixed(opts, workdir, with_slow=(name == "with_slow"))
    return results


def main(argv):
    opts = parse_args(argv)
    if opts.publish_child:
        return publish_child(json.loads(opts.publish_child))
    command = " ".join(shlex.quote(a) for a in [sys.executable, sys.argv[0]] + argv)
    facts = machine_facts()
    print("command: %s" % command)
    print("machine: %d cores, %s, %s; loadavg %s (shared machine: other work may run)"
          % (facts["nproc"], facts["kernel"], facts["cpu"], facts["loadavg_start"]))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    print("date: %s" % date)
    try:
        build = build_facts(opts.build)
    except OSError as e:
        print("cannot read the build: %s" % e, file=sys.stderr)
        return 2
    print("build: %s/herold sha256 %s mtime %s; tree HEAD %s; herold extra args: %s"
          % (build["dir"], build["herold_sha256"], build["herold_mtime"], build["tree_head"],
             " ".join(opts.herold_args) or "none"), flush=True)
    # A shell starts background jobs with SIGINT ignored; Ctrl-C should always stop a run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        results = asyncio.run(bench(opts))
    except BenchError as e:
        print("benchmark failed: %s" % e, file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for herold in list(_live_herolds):
            herold.stop_now()
    any_problem = print_report(results, opts)
    ratio = None
    if "baseline" in results and "with_slow" in results:
        b99 = results["baseline"]["delay_ms"]["p99"]
        s99 = results["with_slow"]["delay_ms"]["p99"]
        if b99 and s99 is not None:
            ratio = {"p99_ratio": s99 / b99, "p99_difference_ms": s99 - b99}
    doc = {"command": command, "date": date, "machine": facts, "build": build,
           "options": {k: (str(v) if isinstance(v, pathlib.Path) else v)
                       for k, v in vars(opts).items() if k != "publish_child"},
           "results": results, "slow_vs_baseline": ratio}
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print("json: %s" % opts.json)
    return 1 if any_problem else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
