"""A scriptable webhook receiver for the end-to-end tests, and the checks every webhook
request must pass.

A Receiver is a real HTTP/1.1 server (http.server.ThreadingHTTPServer) on 127.0.0.1 with
a free port. It plays both roles the broker expects of a webhook endpoint:

- validation: a POST whose query string carries `validationToken` is answered according to
  `receiver.validation` ("echo": 200 text/plain with the token, the correct answer;
  "wrong": 200 with another body; "newline": the token and a newline; an int: that
  status; ("redirect", url): 307 to url with the same token), after `validation_delay`
  seconds (for timeout tests);
- notifications: every other POST is recorded and answered with the next entry of the
  scripted replies (`receiver.script(...)`), or with `receiver.default` once the script is
  exhausted. A reply can carry headers (Retry-After) and a delay.

Every request is recorded (path, query, headers, body, monotonic and wall-clock arrival
time) under a threading.Condition, so tests wait for what they expect with
`receiver.wait_for(predicate, timeout)` instead of sleeping.

Delays wait on an Event that close() sets, so closing a receiver never waits for a sleeping
handler; close() also cuts kept-alive connections, so a closed receiver is unreachable.
"""

import base64
import collections
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
import urllib.parse

from helpers import TIMEOUT


class Reply:
    """One scripted answer to a notification POST."""

    def __init__(self, status=200, headers=None, body=b"", delay=0.0):
        self.status = status
        self.headers = dict(headers or {})
        self.body = body if isinstance(body, bytes) else body.encode()
        self.delay = delay

    def __repr__(self):
        return "Reply(%r, %r, delay=%r)" % (self.status, self.headers, self.delay)


def as_reply(spec):
    """Reply from a Reply, an int status, or a (status, headers) tuple."""
    if isinstance(spec, Reply):
        return spec
    if isinstance(spec, int):
        return Reply(spec)
    status, headers = spec
    return Reply(status, headers)


class Request:
    """A request the receiver got."""

    def __init__(self, method, path, query, headers, body, arrived, wall, index):
        self.method = method
        self.path = path              # without the query
        self.query = query            # dict of lists, as parse_qs gives it
        self.headers = headers        # http.client.HTTPMessage: case-insensitive get()
        self.body = body              # bytes
        self.arrived = arrived        # time.monotonic() when the body had been read
        self.wall = wall              # time.time() at the same moment
        self.index = index            # position among all requests of this receiver
        self.finished = None          # time.monotonic() when our answer was written
        self.status = None            # the status we answered a notification POST with

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError("webhook body is not JSON (%s): %.300r" % (e, self.body))

    @property
    def is_validation(self):
        return "validationToken" in self.query

    def __repr__(self):
        return "<%s %s?%s %.200r>" % (self.method, self.path,
                                       urllib.parse.urlencode(self.query, doseq=True),
                                       self.body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A broker that gave up on a slow answer closes the connection; writing to it then
        # fails. That is expected in timeout tests and not worth a traceback.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint; libcurl reuses it

    def log_message(self, format, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.receiver.cond:
            self.server.receiver._connections.add(self.connection)

    def finish(self):
        with self.server.receiver.cond:
            self.server.receiver._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status, body=b"", content_type="text/plain", headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        self.wfile.flush()

    def _handle(self):
        receiver = self.server.receiver
        body = self._read_body()
        split = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        req = receiver._record(self.command, split.path, query, self.headers, body)
        if req.is_validation:
            mode, delay = receiver.validation, receiver.validation_delay
            if delay:
                receiver._closing.wait(delay)
            token = query["validationToken"][0]
            if mode == "echo":
                self._answer(200, token.encode())
            elif mode == "wrong":
                self._answer(200, (token + "x").encode())
            elif mode == "newline":
                self._answer(200, (token + "\n").encode())
            elif isinstance(mode, tuple) and mode[0] == "redirect":
                location = mode[1] + "?" + urllib.parse.urlencode({"validationToken": token})
                self._answer(307, headers={"Location": location})
            else:
                self._answer(int(mode), b"no validation here")
        else:
            reply = receiver._next_reply()
            if reply.delay:
                receiver._closing.wait(reply.delay)
            req.status = reply.status
            self._answer(reply.status, reply.body, headers=reply.headers)
        with receiver.cond:
            req.finished = time.monotonic()
            receiver.cond.notify_all()

    def do_POST(self):
        self._handle()

    def do_GET(self):
        self._handle()

    def do_PUT(self):
        self._handle()


class Receiver:
    """A webhook endpoint on http://127.0.0.1:<free port>/; see the module docstring."""

    def __init__(self, name="receiver"):
        self.name = name
        self.cond = threading.Condition()
        self.requests = []
        self.validation = "echo"
        self.validation_delay = 0.0
        self.default = Reply(200)
        self._script = collections.deque()
        self._closing = threading.Event()
        self._connections = set()  # accepted connections still open (keep-alive)
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.receiver = self
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path="/hook"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    # ---- scripting ----

    def script(self, *replies):
        """Answers for the next notification POSTs, in order (Reply, status, or
        (status, headers)); afterwards `default` answers."""
        with self.cond:
            self._script.extend(as_reply(r) for r in replies)

    def _next_reply(self):
        with self.cond:
            return self._script.popleft() if self._script else self.default

    def _record(self, method, path, query, headers, body):
        with self.cond:
            req = Request(method, path, query, headers, body, time.monotonic(), time.time(),
                          len(self.requests))
            self.requests.append(req)
            self.cond.notify_all()
            return req

    # ---- reading what arrived ----

    def validations(self):
        with self.cond:
            return [r for r in self.requests if r.is_validation]

    def posts(self, path=None):
        """Notification (non-validation) requests, optionally only those to path."""
        with self.cond:
            return [r for r in self.requests
                    if not r.is_validation and (path is None or r.path == path)]

    def items(self, path=None):
        """Every item of every notification POST, in arrival order."""
        out = []
        for req in self.posts(path):
            out.extend(req.json()["value"])
        return out

    def delivered_items(self, path=None):
        """The items of the POSTs answered with a 2xx, in arrival order."""
        out = []
        for req in self.posts(path):
            if req.status is not None and 200 <= req.status < 300:
                out.extend(req.json()["value"])
        return out

    def wait_for(self, predicate, timeout=TIMEOUT, what=None):
        """Waits until predicate() is truthy (re-checked whenever a request arrives or is
        answered) and returns its value; fails the test after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("%s: %s not seen within %ss; requests: %r" % (
                        self.name, what or getattr(predicate, "__name__", "condition"),
                        timeout, self.requests))
                self.cond.wait(remaining)

    def wait_posts(self, count, path=None, timeout=TIMEOUT):
        return self.wait_for(lambda: (lambda p: p if len(p) >= count else None)(
            self.posts(path)), timeout, "%d notification POSTs" % count)

    def wait_items(self, count, path=None, timeout=TIMEOUT):
        return self.wait_for(lambda: (lambda i: i if len(i) >= count else None)(
            self.items(path)), timeout, "%d items" % count)

    def close(self):
        """Stops serving and frees the port (after which connections are refused). Sleeping
        handlers wake up and answer at once. Safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        # Kept-alive connections outlive the listening socket: cut them too, so that a
        # closed receiver is really unreachable.
        with self.cond:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def wait_for(predicate, timeout=TIMEOUT, interval=0.05, what=None):
    """Polls predicate (something outside any receiver, e.g. a REST GET) until it returns a
    truthy value, which is returned; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("%s not reached within %ss" % (
                what or getattr(predicate, "__name__", "condition"), timeout))
        time.sleep(interval)


# ---- Standard Webhooks signatures (schemas/subscriptions.md) ----

def secret_key(signing_secret):
    """The HMAC key behind a `whsec_<base64>` signing secret."""
    assert signing_secret.startswith("whsec_"), signing_secret
    return base64.b64decode(signing_secret[len("whsec_"):], validate=True)


def expected_signature(signing_secret, msg_id, timestamp, body):
    message = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    mac = hmac.new(secret_key(signing_secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def check_signed(req, signing_secret, max_skew=300):
    """Asserts that req carries valid Standard Webhooks headers for signing_secret and
    returns (webhook-id, timestamp)."""
    msg_id = req.headers.get("webhook-id")
    timestamp = req.headers.get("webhook-timestamp")
    signature = req.headers.get("webhook-signature")
    assert msg_id and msg_id.startswith("msg_"), "webhook-id %r" % msg_id
    assert timestamp and timestamp.isdigit(), "webhook-timestamp %r" % timestamp
    assert abs(int(timestamp) - req.wall) <= max_skew, \
        "webhook-timestamp %s is far from the arrival time %.0f" % (timestamp, req.wall)
    assert signature, "no webhook-signature header: %r" % dict(req.headers)
    want = expected_signature(signing_secret, msg_id, timestamp, req.body)
    # The header may list several space-separated signatures (key rotation); one must match.
    assert any(hmac.compare_digest(s, want) for s in signature.split(" ")), \
        "webhook-signature %r does not match %r (id %s, timestamp %s, body %.200r)" % (
            signature, want, msg_id, timestamp, req.body)
    return msg_id, int(timestamp)
