#!/usr/bin/python3
"""bench/soak: herold under a mixed load for minutes, with churn, flapping webhooks and one
restart, checking that nothing acknowledged is lost.

    /usr/bin/python3 bench/soak.py [--build build] [--seconds 120] [--rate 200]
                                   [--churn-clients 8] [--out FILE] [--work DIR]

One broker (embedded store, limits lifted for the load generator's users) gets:
  - publishers: events at --rate per second in total from two ZeroMQ DEALERs, each event
    on a resource of its own under /soak/f<k>/; an event not acked within two seconds is
    sent again with the same id (the broker's dedup absorbs repeats), so every event is
    eventually acked;
  - a watcher: a persistent `websocket:` subscription to /soak, read by a WebSocket that
    resumes from its last cursor after every drop;
  - a webhook: a persistent subscription to /soak whose endpoint flaps, answering 503 for
    three seconds out of every ten;
  - churn: --churn-clients WebSockets that connect, subscribe to a few folders, read for a
    moment and vanish, over and over (connections per second are reported);
  - one restart: SIGTERM half-way, then the broker is started again on the same data.

At the end it waits (up to 60 s) for the watcher and the webhook to receive every acked
event, and reports: events acked, deliveries per path, losses (acked events a path never
received: must be zero), duplicates, errors, connections per second during churn, and the
broker's RSS sampled every second (start, middle, end, before and after the restart).
Exit status 0 when nothing acked was lost, 1 otherwise.
"""

import argparse
import asyncio
import http.server
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

import msgpack
import websockets
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import UNLIMITED_FLAGS, free_ports  # noqa: E402

FOLDERS = 16


def now_ms():
    return int(time.time() * 1000)


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Broker:
    def __init__(self, build, work):
        self.build = build
        self.data = os.path.join(work, "data")
        self.http_port, self.ingest_port = free_ports(2)
        self.ingest = "tcp://127.0.0.1:%d" % self.ingest_port
        self.log = open(os.path.join(work, "herold.log"), "ab")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [os.path.join(self.build, "herold"), "--data", self.data,
             "--http", "127.0.0.1:%d" % self.http_port, "--ingest", self.ingest,
             "--webhook-allow-private", "--webhook-first-retry-ms", "200",
             "--webhook-max-retry-ms", "1000"] + UNLIMITED_FLAGS,
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.http_port, timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("soak: the broker did not come up")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        if code != 0:
            raise SystemExit("soak: herold exited with %d after SIGTERM" % code)

    def token(self, user, groups):
        out = subprocess.run([os.path.join(self.build, "herold"), "token", user, "--groups",
                              ",".join(groups), "--ttl", "86400", "--data", self.data],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def rest(self, method, path, token, body=None):
        req = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.http_port, path), method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = set()      # resources of acked events
        self.acked_seq = {}     # resource -> seq, for reports of losses
        self.reconnects = []    # the cursor the watcher resumed from each time
        self.published = 0
        self.resent = 0
        self.refused = 0
        self.watcher = set()
        self.watcher_items = 0
        self.webhook = set()
        self.webhook_items = 0
        self.webhook_503 = 0
        self.churn_connections = 0
        self.errors = []
        self.rss = []           # (seconds since start, KiB)

    def error(self, text):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(text)


def publisher(broker, stats, rate, stop, index):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.ingest)
    pending = {}  # id -> (payload, resource, sent at)
    interval = 1.0 / rate
    next_send = time.monotonic()
    while not stop.is_set() or pending:
        now = time.monotonic()
        if not stop.is_set() and now >= next_send and len(pending) < 5000:
            event_id = "%d-%s" % (index, uuid.uuid4())
            resource = "/soak/f%d/%s" % (random.randrange(FOLDERS), event_id)
            payload = msgpack.packb({"id": event_id, "source": "soak", "type": "created",
                                     "resource": resource, "time": now_ms(),
                                     "readers": ["group:soak"]}, use_bin_type=True)
            pending[event_id] = (payload, resource, now)
            sock.send(payload)
            with stats.lock:
                stats.published += 1
            next_send += interval
        for event_id, (payload, resource, sent) in list(pending.items()):
            if now - sent > 2.0:  # no answer: the broker may be restarting; send again
                pending[event_id] = (payload, resource, now)
                sock.send(payload)
                with stats.lock:
                    stats.resent += 1
        if sock.poll(5, zmq.POLLIN):
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                reply = msgpack.unpackb(frames[-1], raw=False)
                entry = pending.pop(reply.get("id"), None)
                if entry is None:
                    continue  # the answer to a resend already counted
                if reply.get("ok") is True:
                    with stats.lock:
                        stats.acked.add(entry[1])
                        stats.acked_seq[entry[1]] = reply.get("seq")
                else:
                    with stats.lock:
                        stats.refused += 1
                    stats.error("event refused: %r" % reply)
        if stop.is_set() and pending and time.monotonic() - stop.stopped_at > 60:
            stats.error("%d events never acked" % len(pending))
            break
    sock.close()


class Hook(http.server.BaseHTTPRequestHandler):
    stats = None
    started = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        if query.startswith("validationToken="):
            token = urllib.request.unquote(query.split("=", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(token.encode())
            return
        if (time.monotonic() - Hook.started) % 10 < 3:  # flapping: down 3 s of every 10
            with Hook.stats.lock:
                Hook.stats.webhook_503 += 1
            self.send_response(503)
            self.end_headers()
            return
        items = json.loads(body).get("value", [])
        with Hook.stats.lock:
            Hook.stats.webhook_items += len(items)
            for item in items:
                Hook.stats.webhook.add(item["resource"])
        self.send_response(202)
        self.end_headers()


async def watcher(broker, token, stats, stop):
    cursor = "0"  # from the first retained event: the load may start before this connects
    url = "ws://127.0.0.1:%d/v1.0/ws" % broker.http_port
    while not stop.is_set():
        try:
            query = "?since=%s" % cursor
            with stats.lock:
                stats.reconnects.append(cursor)
            async with websockets.connect(url + query, extra_headers={
                    "Authorization": "Bearer " + token}, max_size=None) as ws:
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    frame = json.loads(raw)
                    if frame.get("op") == "lifecycle":
                        stats.error("watcher: %s" % raw[:200])
                    if frame.get("op") == "notify":
                        cursor = frame["cursor"]
                        with stats.lock:
                            stats.watcher_items += len(frame["value"])
                            for item in frame["value"]:
                                stats.watcher.add(item["resource"])
        except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
            await asyncio.sleep(0.2)  # the broker restarts: resume from the cursor


async def churner(broker, token, stats, stop):
    url = "ws://127.0.0.1:%d/v1.0/ws" % broker.http_port
    while not stop.is_set():
        try:
            ws = await asyncio.wait_for(websockets.connect(url, extra_headers={
                "Authorization": "Bearer " + token}), 5)
            for i in range(random.randrange(1, 4)):
                await ws.send(json.dumps({"op": "subscribe", "ref": str(i),
                                          "resource": "/soak/f%d" % random.randrange(FOLDERS)}))
            deadline = time.monotonic() + random.uniform(0.05, 0.5)
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
            ws.transport.abort()  # vanish without a closing handshake
            with stats.lock:
                stats.churn_connections += 1
        except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
            await asyncio.sleep(0.2)


def run_async(coros_factory):
    async def main():
        await asyncio.gather(*coros_factory())
    asyncio.run(main())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--churn-clients", type=int, default=8)
    parser.add_argument("--out")
    parser.add_argument("--work", help="directory for the broker's data and log (default: new)")
    args = parser.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="herold-soak-")
    os.makedirs(work, exist_ok=True)
    broker = Broker(os.path.abspath(args.build), work)
    broker.start()
    stats = Stats()
    started = time.monotonic()
    watcher_token = broker.token("watcher", ["soak"])
    owner_token = broker.token("owner", ["soak"])
    churn_token = broker.token("churn", ["soak"])

    hook_port = free_ports(1)[0]
    Hook.stats = stats
    Hook.started = started
    server = http.server.ThreadingHTTPServer(("127.0.0.1", hook_port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 36000))
    broker.rest("POST", "/v1.0/subscriptions", watcher_token, {
        "changeType": "created", "notificationUrl": "websocket:", "resource": "/soak",
        "expirationDateTime": expiration})
    broker.rest("POST", "/v1.0/subscriptions", owner_token, {
        "changeType": "created", "notificationUrl": "http://127.0.0.1:%d/hook" % hook_port,
        "resource": "/soak", "expirationDateTime": expiration})

    stop_load = threading.Event()
    stop_load.stopped_at = None
    stop_readers = threading.Event()
    pubs = [threading.Thread(target=publisher,
                             args=(broker, stats, args.rate / 2, stop_load, i))
            for i in range(2)]
    for t in pubs:
        t.start()
    readers = threading.Thread(target=run_async, args=(
        lambda: [watcher(broker, watcher_token, stats, stop_readers)] +
        [churner(broker, churn_token, stats, stop_load) for _ in range(args.churn_clients)],))
    readers.start()

    restarted = False
    restart_at = args.seconds / 2
    churn_window = []  # (seconds, connections) samples while churning
    while time.monotonic() - started < args.seconds:
        elapsed = time.monotonic() - started
        kib = rss_kib(broker.proc.pid)
        if kib is not None:
            stats.rss.append((round(elapsed, 1), kib))
        with stats.lock:
            churn_window.append((elapsed, stats.churn_connections))
        if not restarted and elapsed >= restart_at:
            broker.stop()
            broker.start()
            restarted = True
            restart_rss_index = len(stats.rss)
        time.sleep(1.0)
    stop_load.stopped_at = time.monotonic()
    stop_load.set()
    for t in pubs:
        t.join()

    # Let the paths catch up with everything acked.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with stats.lock:
            done = stats.acked <= stats.watcher and stats.acked <= stats.webhook
        if done:
            break
        time.sleep(0.5)
    stop_readers.set()
    readers.join()
    server.shutdown()
    end_kib = rss_kib(broker.proc.pid)
    broker.stop()

    with stats.lock:
        lost_watcher = len(stats.acked - stats.watcher)
        lost_webhook = len(stats.acked - stats.webhook)
        seconds = [s for s, _ in churn_window]
        rate = ((churn_window[-1][1] - churn_window[0][1]) / (seconds[-1] - seconds[0])
                if len(churn_window) > 1 and seconds[-1] > seconds[0] else 0.0)
        before = stats.rss[:restart_rss_index] if restarted else stats.rss
        after = stats.rss[restart_rss_index:] if restarted else []
        result = {
            "command": " ".join(sys.argv),
            "seconds": args.seconds,
            "events_published": stats.published,
            "events_resent": stats.resent,
            "events_acked": len(stats.acked),
            "events_refused": stats.refused,
            "watcher_items": stats.watcher_items,
            "watcher_lost": lost_watcher,
            "watcher_duplicates": stats.watcher_items - len(stats.watcher),
            "webhook_items": stats.webhook_items,
            "webhook_lost": lost_webhook,
            "webhook_duplicates": stats.webhook_items - len(stats.webhook),
            "webhook_503_answers": stats.webhook_503,
            "churn_connections": stats.churn_connections,
            "churn_connections_per_second": round(rate, 1),
            "rss_kib_first_run": {"start": before[0][1] if before else None,
                                  "end": before[-1][1] if before else None,
                                  "max": max((k for _, k in before), default=None)},
            "rss_kib_second_run": {"start": after[0][1] if after else None,
                                   "end": end_kib,
                                   "max": max((k for _, k in after), default=None)},
            "rss_samples": stats.rss,
            "errors": stats.errors,
            "watcher_missing_seqs": sorted(stats.acked_seq[r]
                                           for r in stats.acked - stats.watcher)[:20],
            "watcher_resumed_from": stats.reconnects[:20],
            "webhook_missing_sample": sorted(stats.acked - stats.webhook)[:5],
        }
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    summary = {k: v for k, v in result.items() if k != "rss_samples"}
    print(json.dumps(summary, indent=1))
    ok = lost_watcher == 0 and lost_webhook == 0 and not stats.errors and len(stats.acked) > 0
    print("soak: %s" % ("nothing acked was lost" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
