"""End-to-end helpers: a real herold on free loopback ports, and clients for it.

Every binary comes from $HEROLD_BUILD (default build/, relative to the repository root), so
the same tests run against the optimised and the sanitizer build. Each test gets its own
broker with its own --data directory. Nothing here sleeps to synchronise: tests wait for
answers (the `subscribed` answer, the ingest ack, a control event) with timeouts, so that a
bug fails a test instead of hanging it.
"""

import asyncio
import base64
import calendar
import collections
import http.client
import json
import re
import os
import pathlib
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid

import msgpack
import pytest
import websockets
import zmq

REPO = pathlib.Path(__file__).resolve().parents[2]
_build = pathlib.Path(os.environ.get("HEROLD_BUILD", "build"))
BUILD = _build if _build.is_absolute() else REPO / _build
HEROLD = BUILD / "herold"
HEROLD_PUB = BUILD / "herold-pub"
HEROLD_TAIL = BUILD / "herold-tail"
SLOW_FDATASYNC = BUILD / "e2e" / "slow_fdatasync.so"
SEND_GATE = BUILD / "e2e" / "send_gate.so"


def _preload_env(library, **variables):
    """The environment of a broker with library preloaded. Under AddressSanitizer the
    preloaded library comes first, which the runtime allows once told."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    return dict(variables, LD_PRELOAD=str(library),
                ASAN_OPTIONS=(asan + ":" if asan else "") + "verify_asan_link_order=0")


def slow_disk_env(extra_ms=50):
    """The environment of a broker whose every fdatasync takes extra_ms longer
    (tests/e2e/slow_fdatasync.c)."""
    return _preload_env(SLOW_FDATASYNC, HEROLD_TEST_FDATASYNC_EXTRA_MS=str(extra_ms))


def send_gate_env(gate_path):
    """The environment of a broker whose service thread stops at its next send() while
    gate_path exists (tests/e2e/send_gate.c)."""
    return _preload_env(SEND_GATE, HEROLD_TEST_SEND_GATE=str(gate_path))

# The benchmarks' helpers (bench/benchutil.py): free ports, the flags that lift the
# per-user limits for a load generator, and HS256 tokens signed in Python.
import sys as _sys  # noqa: E402
_sys.path.insert(0, str(REPO / "bench"))
from benchutil import UNLIMITED_FLAGS, b64url, free_ports, make_jwt  # noqa: E402,F401

# How much longer a wait may take in a slower build: `make tsan-test` sets 3 (every thread
# runs several times slower under ThreadSanitizer). Bounds on waits only, never on speed.
TIME_SCALE = float(os.environ.get("HEROLD_TEST_TIME_SCALE", "1"))
# Seconds any single wait may take before the test fails (answers, acks, items).
TIMEOUT = 10.0 * TIME_SCALE
# The sanitizer build starts and stops more slowly.
START_TIMEOUT = 20.0 * TIME_SCALE
STOP_TIMEOUT = 20.0 * TIME_SCALE

# ws-protocol.md: a notify frame holds 1 to 64 items.
MAX_BATCH_ITEMS = 1024

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def free_port():
    """A loopback TCP port that was free a moment ago."""
    return free_ports(1)[0]


def sanitizer_problems(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_claims(token):
    return json.loads(b64url_decode(token.split(".")[1]))


def graph_time(seconds):
    """Graph's expirationDateTime format, as the broker formats a token's exp."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".0000000Z"


def ms_time(ms):
    """ISO 8601 UTC with milliseconds, as the broker formats eventTime."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def now_ms():
    return int(time.time() * 1000)


# ---- REST helpers ----

SUBSCRIPTIONS = "/v1.0/subscriptions"
JSON_TYPE = "application/json"
# A POST may wait for a webhook validation (10 s in the broker) before it answers.
REST_TIMEOUT = 20.0 * TIME_SCALE

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
GRAPH_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")
ERROR_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


def iso_z(seconds):
    """An expirationDateTime to send: whole seconds, three fractional digits, Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".000Z"


def parse_graph_time(text):
    """Seconds since the epoch of a Graph time `YYYY-MM-DDTHH:MM:SS.fffffffZ`."""
    assert GRAPH_TIME_RE.match(text), "not Graph's time format: %r" % text
    whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    return whole + float("0." + text[20:-1])


def sub_body(notification_url="websocket:", resource="/dms/cabinets/bau",
             change_type="created,updated", seconds=3600, **extra):
    """A valid creation body expiring `seconds` from now (whole seconds); extra members
    are added, and a member given as None is left out."""
    body = {
        "changeType": change_type,
        "notificationUrl": notification_url,
        "resource": resource,
        "expirationDateTime": iso_z(int(time.time()) + seconds),
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


class RestResponse:
    """Status, headers (case-insensitive) and body of one REST exchange."""

    def __init__(self, method, path, sent, status, headers, body):
        self.method = method
        self.path = path
        self.sent = sent
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError("body of %s is not JSON (%s)" % (self, e))

    def __str__(self):
        return "%s %s %.300r -> %d %r %.600r" % (
            self.method, self.path, self.sent, self.status, dict(self.headers.items()),
            self.body)

    __repr__ = __str__


def expect_error(resp, status, code):
    """Asserts that resp is a Graph-shaped error (schemas/subscriptions.md) with this status
    and code (or one of a tuple of codes), checks innerError and the request-id header, and
    returns the error object."""
    assert resp.status == status, "expected %d %s, got %s" % (status, code, resp)
    ctype = resp.header("Content-Type") or ""
    assert ctype.split(";")[0].strip().lower() == JSON_TYPE, "Content-Type of %s" % resp
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, "error body of %s" % resp
    err = body["error"]
    codes = (code,) if isinstance(code, str) else tuple(code)
    assert err.get("code") in codes, "expected code %s: %s" % ("/".join(codes), resp)
    assert isinstance(err.get("message"), str) and err["message"], "no message: %s" % resp
    inner = err.get("innerError")
    assert isinstance(inner, dict), "no innerError: %s" % resp
    assert isinstance(inner.get("date"), str) and ERROR_DATE_RE.match(inner["date"]), \
        "innerError.date of %s" % resp
    date = calendar.timegm(time.strptime(inner["date"], "%Y-%m-%dT%H:%M:%S"))
    assert abs(date - time.time()) < 120, "innerError.date is not now (UTC): %s" % resp
    rid = inner.get("request-id")
    assert isinstance(rid, str) and UUID_RE.match(rid), "innerError.request-id of %s" % resp
    assert resp.header("request-id") == rid, \
        "request-id header differs from innerError.request-id: %s" % resp
    return err


class LinePump(threading.Thread):
    """Drains a process's pipe line by line so that it never blocks on a full pipe, keeps
    the text, optionally copies it to a file, and lets a test wait for a line."""

    def __init__(self, pipe, path=None, append=False):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.path = path
        self.append = append
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        self.start()

    def run(self):
        out = (open(self.path, "a" if self.append else "w", encoding="utf-8", errors="replace")
               if self.path else None)
        try:
            for raw in iter(self.pipe.readline, b""):
                line = raw.decode("utf-8", errors="replace")
                if out:
                    out.write(line)
                    out.flush()
                with self.cond:
                    self.lines.append(line)
                    self.cond.notify_all()
        finally:
            if out:
                out.close()
            with self.cond:
                self.eof = True
                self.cond.notify_all()

    def wait_for(self, needle, timeout):
        """The first line containing needle, or None at EOF or timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def wait_count(self, needle, count, timeout):
        """The first count lines containing needle, or None at EOF or timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [line for line in self.lines if needle in line]
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def finish(self, timeout=STOP_TIMEOUT):
        self.join(timeout)
        return self.text()

    def text(self):
        with self.cond:
            return "".join(self.lines)


RECOVERED_RE = re.compile(r"(embedded|postgresql) store holds events (\d+)\.\.(\d+)")


class Broker:
    """A herold process on free loopback ports with helpers to talk to it.

    store_uri (a `--store` value, e.g. pg.Database.uri) selects the store; without it the
    embedded store under the data directory. env: variables added to the broker's
    environment (slow_disk_env). restart() runs a new process on the same
    data directory, store and ports; the stderr of every run goes to the same file."""

    def __init__(self, tmp_path, extra_args=(), store_uri=None, env=None):
        self.tmp_path = tmp_path
        self.env = dict(os.environ, **(env or {}))
        self.extra_args = [str(a) for a in extra_args]
        self.store_uri = store_uri
        self.data = tmp_path / "data"
        self.http_port, self.ingest_port = free_ports(2)
        self.ingest = "tcp://127.0.0.1:%d" % self.ingest_port
        self.ws_url = "ws://127.0.0.1:%d/v1.0/ws" % self.http_port
        self.stderr_path = tmp_path / "herold.stderr"
        self.proc = None
        self.pump = None
        self.earlier_stderr = []  # the stderr of every earlier run of this broker
        self.returncode = None
        self.zctx = zmq.Context()
        self._dealer = None
        self._tokens = {}
        self.client_problems = []

    # ---- lifecycle ----

    def start(self):
        assert HEROLD.exists(), "%s does not exist: build first (HEROLD_BUILD=%s)" % (HEROLD, BUILD)
        store = ["--store", self.store_uri] if self.store_uri is not None else []
        if self.pump is not None:
            self.earlier_stderr.append(self.pump.finish())
        self.proc = subprocess.Popen(
            [str(HEROLD), "--http", "127.0.0.1:%d" % self.http_port, "--ingest", self.ingest,
             "--data", str(self.data)] + store + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=self.env)
        self.pump = LinePump(self.proc.stderr, self.stderr_path,
                             append=bool(self.earlier_stderr))
        line = self.pump.wait_for("ready", START_TIMEOUT)
        if line is None:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("herold %s did not print its ready line within %ss; stderr:\n%s"
                        % (" ".join(self.extra_args), START_TIMEOUT, self.pump.finish()))

    def stop(self):
        """SIGTERM and wait. Returns the exit code; safe to call twice."""
        if self.returncode is None and self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.returncode = self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = "did not exit within %ss of SIGTERM" % STOP_TIMEOUT
        return self.returncode

    def kill_hard(self):
        """SIGKILL (a crash) and wait for the process to be gone."""
        self.proc.kill()
        self.proc.wait()
        self.returncode = "killed"

    def restart(self):
        """Starts a new process on the same data directory, store and ports (after stop()
        or kill_hard()); returns the (first, last) seq range the store reported at start."""
        assert self.proc is None or self.proc.poll() is not None, "restart of a running broker"
        if self._dealer is not None:
            # A fresh DEALER: replies the old process owed will never come.
            self._dealer.close(linger=0)
            self._dealer = None
        self.returncode = None
        self.start()
        return self.recovered_range()

    def recovered_range(self):
        """(first, last): the events the store held at the start of this run."""
        line = self.pump.wait_for("store holds events", START_TIMEOUT)
        assert line is not None, "no 'store holds events' line:\n" + self.stderr_text()
        match = RECOVERED_RE.search(line)
        assert match, line
        return int(match.group(2)), int(match.group(3))

    def all_stderr_text(self):
        """The stderr of every run of this broker, oldest first."""
        return "".join(self.earlier_stderr) + self.stderr_text()

    def close_zmq(self):
        if self._dealer is not None:
            self._dealer.close(linger=0)
            self._dealer = None
        self.zctx.destroy(linger=0)

    def stderr_text(self):
        return self.pump.text() if self.pump else ""

    # ---- tokens ----

    def token(self, user, groups=(), ttl=None):
        """A token made by `herold token`, signed with this broker's secret."""
        args = [str(HEROLD), "token", user, "--data", str(self.data)]
        if groups:
            args += ["--groups", ",".join(groups)]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        done = subprocess.run(args, capture_output=True, timeout=TIMEOUT)
        self._note_client_stderr("herold token", done.stderr)
        assert done.returncode == 0, "herold token failed: %r" % done.stderr
        token = done.stdout.decode().strip()
        assert token.count(".") == 2, "not a JWT: %r" % token
        return token

    def secret(self):
        """The broker's HS256 secret: DATA/jwt.secret without trailing newlines."""
        return (self.data / "jwt.secret").read_bytes().rstrip(b"\n")

    def python_token(self, user, groups=(), exp_offset=3600, header=None, secret=None):
        now = int(time.time())
        claims = {"sub": user, "iat": now, "exp": now + exp_offset}
        if groups:
            claims["groups"] = list(groups)
        return make_jwt(self.secret() if secret is None else secret, claims, header)

    # ---- ingest ----

    def event(self, **fields):
        """An event map with sensible defaults; a field given as None is left out."""
        ev = {
            "id": str(uuid.uuid4()),
            "source": "e2e",
            "type": "updated",
            "time": now_ms(),
            "readers": ["*"],
        }
        ev.update(fields)
        return {k: v for k, v in ev.items() if v is not None}

    def dealer(self):
        if self._dealer is None:
            self._dealer = self.zctx.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.LINGER, 0)
            self._dealer.connect(self.ingest)
        return self._dealer

    def recv_reply(self, sock):
        assert sock.poll(TIMEOUT * 1000, zmq.POLLIN), "no ingest reply within %ss" % TIMEOUT
        frames = sock.recv_multipart()
        return msgpack.unpackb(frames[-1], raw=False)

    def publish_raw(self, payload):
        """Sends one message (bytes) on the shared DEALER; returns the reply map."""
        sock = self.dealer()
        sock.send(payload)
        return self.recv_reply(sock)

    def publish_event(self, ev):
        return self.publish_raw(msgpack.packb(ev, use_bin_type=True))

    def publish(self, **fields):
        """Publishes event(**fields); returns the reply map."""
        return self.publish_event(self.event(**fields))

    def publish_ok(self, **fields):
        reply = self.publish(**fields)
        assert reply.get("ok") is True, "event refused: %r" % reply
        return reply

    def publish_many(self, payloads):
        """Pipelines many messages (bytes, or event maps) and returns the replies in order."""
        sock = self.dealer()
        for p in payloads:
            sock.send(p if isinstance(p, bytes) else msgpack.packb(p, use_bin_type=True))
        return [self.recv_reply(sock) for _ in payloads]

    # ---- command-line clients ----

    def _note_client_stderr(self, what, stderr):
        text = stderr.decode("utf-8", errors="replace") if isinstance(stderr, bytes) else stderr
        if sanitizer_problems(text):
            self.client_problems.append("%s:\n%s" % (what, text))

    def pub_cli(self, args, stdin=None, timeout=30):
        """Runs herold-pub against this broker; returns the CompletedProcess (text)."""
        assert HEROLD_PUB.exists(), "%s does not exist: build first" % HEROLD_PUB
        done = subprocess.run([str(HEROLD_PUB), "--ingest", self.ingest] + list(args),
                              input=stdin, capture_output=True, text=True, timeout=timeout)
        self._note_client_stderr("herold-pub", done.stderr)
        return done

    # ---- HTTP ----

    def http_get(self, path):
        """(status, body bytes) of GET path."""
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.http_port, path),
                                        timeout=TIMEOUT) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    # ---- REST (/v1.0/subscriptions, schemas/subscriptions.md) ----

    def rest_token(self, user, groups=()):
        """A `herold token` for user, made once per (user, groups) and reused."""
        key = (user, tuple(groups))
        if key not in self._tokens:
            self._tokens[key] = self.token(user, groups)
        return self._tokens[key]

    def rest(self, method, path, body=None, *, user="anna", groups=(), token=None,
             auth=True, content_type=JSON_TYPE, headers=None, timeout=REST_TIMEOUT):
        """One HTTP request on a fresh connection; returns a RestResponse.

        body: a dict or list (sent as JSON), bytes or str (sent as is), or None (no body).
        token: the bearer token; default a token of user (with groups); auth=False sends no
        Authorization header. content_type=None sends no Content-Type."""
        if isinstance(body, (dict, list)):
            data = json.dumps(body, ensure_ascii=False).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        hdrs = {}
        if auth:
            hdrs["Authorization"] = "Bearer " + (
                token if token is not None else self.rest_token(user, groups))
        if data is not None and content_type is not None:
            hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return RestResponse(method, path, data, resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    @property
    def origin(self):
        """http://<host> as the broker sees it in our Host header."""
        return "http://127.0.0.1:%d" % self.http_port

    def create(self, body, expect=201, **kwargs):
        """POST /v1.0/subscriptions; asserts the status and returns the response."""
        resp = self.rest("POST", SUBSCRIPTIONS, body, **kwargs)
        assert resp.status == expect, "create %r: expected %d, %s" % (body, expect, resp)
        return resp

    def get_sub(self, sub_id, **kwargs):
        return self.rest("GET", SUBSCRIPTIONS + "/" + sub_id, **kwargs)

    def list_all(self, top=None, **kwargs):
        """Every subscription of the caller, following @odata.nextLink; returns the list
        of pages (each the parsed body)."""
        path = SUBSCRIPTIONS + ("" if top is None else "?$top=%d" % top)
        pages = []
        while path is not None:
            resp = self.rest("GET", path, **kwargs)
            assert resp.status == 200, "list: %s" % resp
            page = resp.json()
            pages.append(page)
            assert len(pages) <= 1000, "nextLink never ends"
            link = page.get("@odata.nextLink")
            if link is None:
                path = None
            else:
                prefix = self.origin + "/v1.0/subscriptions?"
                assert link.startswith(prefix), "nextLink %r is not below %s" % (link, prefix)
                path = link[len(self.origin):]
        return pages

    # ---- WebSocket ----

    async def connect(self, user="anna", groups=(), token=None, query="", **kwargs):
        """An open Client; the token goes in the Authorization header. query (e.g.
        "since=42") is appended to the URL."""
        if token is None:
            token = self.token(user, groups)
        url = self.ws_url + ("?" + query if query else "")
        ws = await asyncio.wait_for(
            websockets.connect(url, extra_headers={"Authorization": "Bearer " + token},
                               **kwargs),
            TIMEOUT)
        client = Client(ws, token)
        _open_clients.append(client)
        return client


class Client:
    """A WebSocket client that separates answers from notification items.

    Answers come in op order and share one queue with notifications, so request() reads
    frames until the answer, keeping any notification items it passes for next_item()."""

    def __init__(self, ws, token=None):
        self.ws = ws
        self.token = token
        self.items = collections.deque()
        self.cursors = []
        self._refs = 0

    def next_ref(self):
        self._refs += 1
        return "r%d" % self._refs

    async def send(self, message):
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def recv_frame(self):
        raw = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        assert isinstance(raw, str), "binary frame from the broker: %r" % raw[:100]
        frame = json.loads(raw)
        assert isinstance(frame, dict), "frame is not an object: %r" % raw[:200]
        return frame

    def _take_notify(self, frame):
        assert isinstance(frame.get("cursor"), str), "notify without string cursor: %r" % frame
        value = frame.get("value")
        assert isinstance(value, list), "notify without a value array: %.300r" % frame
        assert 1 <= len(value) <= MAX_BATCH_ITEMS, "batch of %d items (cursor %s)" % (
            len(value), frame["cursor"])
        self.cursors.append(frame["cursor"])
        self.items.extend(value)

    async def answer(self):
        """The next frame that is not a notification (notifications are kept)."""
        while True:
            frame = await self.recv_frame()
            if frame.get("op") == "notify":
                self._take_notify(frame)
                continue
            return frame

    async def request(self, message):
        """Sends message and returns its answer; checks that the ref is echoed."""
        await self.send(message)
        answer = await self.answer()
        assert answer.get("ref") == message.get("ref"), \
            "answer %r does not echo the ref of %r" % (answer, message)
        return answer

    async def subscribe(self, resource, change_type=None, expect_ok=True):
        msg = {"op": "subscribe", "ref": self.next_ref(), "resource": resource}
        if change_type is not None:
            msg["changeType"] = change_type
        answer = await self.request(msg)
        if expect_ok:
            assert answer.get("op") == "subscribed", "subscribe %r refused: %r" % (msg, answer)
        return answer

    async def ping(self, ref=None):
        ref = ref or self.next_ref()
        answer = await self.request({"op": "ping", "ref": ref})
        assert answer == {"op": "pong", "ref": ref}, "ping answered %r" % answer
        return answer

    async def next_item(self):
        while not self.items:
            frame = await self.recv_frame()
            assert frame.get("op") == "notify", "expected a notification, got %.500r" % frame
            self._take_notify(frame)
        return self.items.popleft()

    async def items_until(self, predicate):
        """Items up to and including the first one for which predicate is true."""
        got = []
        while True:
            item = await self.next_item()
            got.append(item)
            if predicate(item):
                return got

    async def items_until_actor(self, actor):
        return await self.items_until(lambda it: it.get("actor") == actor)

    async def close(self):
        await asyncio.wait_for(self.ws.close(), TIMEOUT)


# Clients opened by Broker.connect in the running test, aborted when the test ends so that
# a failed test does not wait for closing handshakes.
_open_clients = []


async def _guarded(coro):
    try:
        return await asyncio.wait_for(coro, 60 * TIME_SCALE)
    finally:
        for c in _open_clients:
            if c.ws.transport is not None and not c.ws.closed:
                c.ws.transport.abort()
        _open_clients.clear()


def run(coro):
    """Runs a test coroutine with an overall bound, so nothing can hang the suite."""
    return asyncio.run(_guarded(coro))
