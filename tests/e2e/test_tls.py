"""herold serving https and wss itself (--tls-cert FILE --tls-key FILE): the health check, the
REST API and WebSocket delivery over TLS with a throwaway self-signed certificate for IP
127.0.0.1 (made with the openssl command line tool); the TLS 1.2 floor and HTTP/1.1-only
ALPN; what a plain-http client and a client that does not trust the certificate get;
refused start-ups; and X-Forwarded-Proto: https making a plain-http broker's links https.

Every test gets a fresh certificate in tmp_path/tls. The autouse fixture `tls` also gives the
test's broker fixture (conftest.py) the TLS flags, unless the test carries its own
broker_args marker: @PLAIN asks for a plain-http broker."""

import os
import http.client
import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
import warnings

import pytest

from helpers import (HEROLD, JSON_TYPE, START_TIMEOUT, SUBSCRIPTIONS, TIMEOUT, RestResponse,
                     expect_error, free_ports, run, sanitizer_problems, sub_body)

# No TLS flags: the broker fixture starts a plain-http herold.
PLAIN = pytest.mark.broker_args()


class Tls:
    """A self-signed certificate and its key (PEM files)."""

    def __init__(self, directory, stem="tls", common_name="herold e2e"):
        directory.mkdir(parents=True, exist_ok=True)
        self.cert = directory / (stem + ".crt")
        self.key = directory / (stem + ".key")
        done = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", "/CN=" + common_name,
             "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(self.key), "-out", str(self.cert)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
        assert done.returncode == 0, "openssl req failed: %r" % done.stderr

    def context(self):
        """A client context that trusts this certificate only and checks the name."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(autouse=True)
def tls(request, tmp_path):
    """A fresh certificate; the broker fixture, which runs later, serves it unless the test
    has its own broker_args marker. (Autouse fixtures run before the others of their scope.)"""
    made = Tls(tmp_path / "tls")
    if request.node.get_closest_marker("broker_args") is None:
        request.node.add_marker(
            pytest.mark.broker_args("--tls-cert", made.cert, "--tls-key", made.key))
    return made


def origin(broker):
    return "https://127.0.0.1:%d" % broker.http_port


def https_rest(broker, ctx, method, path, body=None, headers=None, user="anna"):
    """Broker.rest over https: one request on a fresh TLS connection, as user."""
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Authorization": "Bearer " + broker.rest_token(user)}
    if data is not None:
        hdrs["Content-Type"] = JSON_TYPE
    hdrs.update(headers or {})
    conn = http.client.HTTPSConnection("127.0.0.1", broker.http_port, timeout=TIMEOUT,
                                       context=ctx)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return RestResponse(method, path, data, resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def https_get(broker, ctx, path):
    """(status, body) of an unauthenticated GET over https."""
    url = origin(broker) + path
    with urllib.request.urlopen(url, timeout=TIMEOUT, context=ctx) as resp:
        return resp.status, resp.read()


def handshake(broker, ctx, alpn=None):
    """(TLS version, selected ALPN protocol) of a completed handshake with the broker."""
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", broker.http_port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            return conn.version(), conn.selected_alpn_protocol()


def versions_context(tls, minimum, maximum):
    """A client that trusts tls and offers exactly TLS versions minimum..maximum. Security
    level 0, so that this OpenSSL 3 client really offers TLS 1.0/1.1 when asked to and the
    refusal, if any, comes from the server."""
    ctx = tls.context()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1, TLSv1_1
        ctx.minimum_version = minimum
        ctx.maximum_version = maximum
    return ctx


# ---- https ----

def test_https_healthz_with_the_certificate_as_ca(broker, tls):
    line = broker.pump.wait_for("ready", 0)
    assert "http=https://127.0.0.1:%d" % broker.http_port in line, line
    assert https_get(broker, tls.context(), "/healthz") == (200, b"ok\n")


def test_handshake_offers_http11_only_over_alpn(broker, tls):
    version, alpn = handshake(broker, tls.context(), ["h2", "http/1.1"])
    assert version in ("TLSv1.2", "TLSv1.3"), version
    assert alpn == "http/1.1", "a client offering h2 first must get http/1.1, got %r" % alpn
    # A client that offers only h2 never gets h2: no protocol is chosen, or the handshake is
    # refused with no_application_protocol (RFC 7301 allows both).
    try:
        assert handshake(broker, tls.context(), ["h2"])[1] is None
    except ssl.SSLError as refused:
        assert refused.reason == "TLSV1_ALERT_NO_APPLICATION_PROTOCOL", refused


def test_rest_api_over_https_creates_lists_and_links_with_https(broker, tls):
    ctx = tls.context()
    created = https_rest(broker, ctx, "POST", SUBSCRIPTIONS,
                         sub_body("websocket:", resource="/dms/cabinets/bau"))
    assert created.status == 201, created
    sub = created.json()
    assert sub["@odata.context"] == origin(broker) + "/v1.0/$metadata#subscriptions/$entity", sub
    assert sub["notificationUrl"] == "websocket:"
    assert sub["creatorId"] == "anna"

    second = https_rest(broker, ctx, "POST", SUBSCRIPTIONS,
                        sub_body("websocket:", resource="/dms/cabinets/plan"))
    assert second.status == 201, second
    second_id = second.json()["id"]

    listed = https_rest(broker, ctx, "GET", SUBSCRIPTIONS)
    assert listed.status == 200, listed
    page = listed.json()
    assert page["@odata.context"] == origin(broker) + "/v1.0/$metadata#subscriptions", page
    assert sorted(s["id"] for s in page["value"]) == sorted([sub["id"], second_id]), page
    assert "@odata.nextLink" not in page, page

    # Paging: the nextLink is https too, and following it over https gives the other one.
    first = https_rest(broker, ctx, "GET", SUBSCRIPTIONS + "?$top=1")
    assert first.status == 200, first
    link = first.json().get("@odata.nextLink")
    prefix = origin(broker) + SUBSCRIPTIONS + "?"
    assert link is not None and link.startswith(prefix), first
    rest_of_list = https_rest(broker, ctx, "GET", link[len(origin(broker)):])
    assert rest_of_list.status == 200, rest_of_list
    ids = [s["id"] for s in first.json()["value"] + rest_of_list.json()["value"]]
    assert sorted(ids) == sorted([sub["id"], second_id]), (first, rest_of_list)
    assert "@odata.nextLink" not in rest_of_list.json(), rest_of_list

    one = https_rest(broker, ctx, "GET", SUBSCRIPTIONS + "/" + sub["id"])
    assert one.status == 200 and one.json()["id"] == sub["id"], one
    # Errors keep the Graph shape over TLS, also for a path no route knows.
    expect_error(https_rest(broker, ctx, "GET", "/v1.0/no-such-thing"), 404, "not_found")


def test_wss_with_the_token_delivers_a_notification(broker, tls):
    async def body():
        broker.ws_url = "wss://127.0.0.1:%d/v1.0/ws" % broker.http_port
        c = await broker.connect("anna", ssl=tls.context())
        tls_object = c.ws.transport.get_extra_info("ssl_object")
        assert tls_object is not None and tls_object.version() in ("TLSv1.2", "TLSv1.3")
        answer = await c.subscribe("/dms/cabinets/bau", "created,updated")
        reply = broker.publish_ok(type="created", resource="/dms/cabinets/bau/documents/4711",
                                  readers=["user:anna"], actor="over-tls")
        item = await c.next_item()
        assert item["id"] == "%s-%d" % (answer["subscriptionId"], reply["seq"]), item
        assert item["subscriptionId"] == answer["subscriptionId"], item
        assert item["resource"] == "/dms/cabinets/bau/documents/4711", item
        assert item["changeType"] == "created", item
        assert item["actor"] == "over-tls", item
        await c.ping()
        await c.close()

    run(body())


# ---- what is refused ----

def test_tls11_client_is_refused_and_tls12_client_accepted(broker, tls):
    ctx = versions_context(tls, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ssl.SSLError) as refused:
        handshake(broker, ctx)
    # The server's protocol_version alert: the client did send its hello.
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value
    # Just inside the floor: a client that speaks nothing newer than TLS 1.2.
    ctx = versions_context(tls, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
    assert handshake(broker, ctx)[0] == "TLSv1.2"


def test_plain_http_request_to_the_tls_port_gets_no_http_response(broker, tls):
    received = b""
    with socket.create_connection(("127.0.0.1", broker.http_port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n"
                  % broker.http_port)
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail("herold neither answered nor closed within %ss; got %r"
                        % (TIMEOUT, received))
    assert not received.startswith(b"HTTP/"), received
    assert b"ok" not in received, received
    # The listener is unharmed.
    assert https_get(broker, tls.context(), "/healthz") == (200, b"ok\n")


def test_client_that_does_not_trust_the_certificate_fails_verification(broker, tls, tmp_path):
    stranger = Tls(tmp_path / "other", "other", common_name="someone else")
    with pytest.raises(ssl.SSLCertVerificationError) as failed:
        handshake(broker, stranger.context())
    assert failed.value.reason == "CERTIFICATE_VERIFY_FAILED", failed.value
    # No token leaves a client that refuses the handshake; urllib fails the same way.
    with pytest.raises(urllib.error.URLError) as failed:
        https_get(broker, stranger.context(), "/healthz")
    assert isinstance(failed.value.reason, ssl.SSLCertVerificationError), failed.value
    # Trusting the right certificate still works afterwards.
    assert https_get(broker, tls.context(), "/healthz") == (200, b"ok\n")


# case: (flags, what stderr must name). Naming the missing file, or both flags, also tells a
# refusal for the right reason from a build that does not know the flags at all.
START_REFUSALS = {
    "missing key file": lambda tls, other: (
        ["--tls-cert", tls.cert, "--tls-key", tls.key.with_name("missing.key")],
        ["missing.key"]),
    "missing certificate file": lambda tls, other: (
        ["--tls-cert", tls.cert.with_name("missing.crt"), "--tls-key", tls.key],
        ["missing.crt"]),
    "key of another certificate": lambda tls, other: (
        ["--tls-cert", tls.cert, "--tls-key", other.key], ["other.key"]),
    "only --tls-cert": lambda tls, other: (["--tls-cert", tls.cert], ["tls-cert", "tls-key"]),
    "only --tls-key": lambda tls, other: (["--tls-key", tls.key], ["tls-cert", "tls-key"]),
}


@pytest.mark.parametrize("case", sorted(START_REFUSALS))
def test_herold_refuses_to_start_with_bad_tls_flags(case, tls, tmp_path):
    other = Tls(tmp_path / "other", "other")
    flags, needles = START_REFUSALS[case](tls, other)
    flags = [str(a) for a in flags]
    http_port, ingest_port = free_ports(2)
    cmd = [str(HEROLD), "--http", "127.0.0.1:%d" % http_port,
           "--ingest", "tcp://127.0.0.1:%d" % ingest_port, "--data", str(tmp_path / "data")]
    # libwebsockets 4.1 leaks a small buffer when lws_create_context fails; the process
    # exits at once, so leak detection is off for refused starts (memory errors still count).
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    try:
        done = subprocess.run(cmd + flags, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=START_TIMEOUT, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail("herold %s kept running: %r" % (" ".join(flags), e.stderr))
    assert done.returncode > 0, "herold %s exited with %r; stderr %r" % (
        " ".join(flags), done.returncode, done.stderr)
    for needle in needles:
        assert needle in done.stderr, "stderr does not name %r: %r" % (needle, done.stderr)
    assert "ready" not in done.stderr, done.stderr
    assert not sanitizer_problems(done.stderr), done.stderr


# ---- behind a TLS-terminating proxy ----

@PLAIN
def test_x_forwarded_proto_https_makes_plain_broker_links_https(broker):
    plain = "http://127.0.0.1:%d" % broker.http_port
    forwarded = {"X-Forwarded-Proto": "https"}
    sub = broker.create(sub_body("websocket:"), headers=forwarded).json()
    assert sub["@odata.context"] == (
        "https://127.0.0.1:%d/v1.0/$metadata#subscriptions/$entity" % broker.http_port), sub
    broker.create(sub_body("websocket:", resource="/dms/other"))

    page = broker.rest("GET", SUBSCRIPTIONS + "?$top=1", headers=forwarded).json()
    assert page["@odata.context"].startswith("https://127.0.0.1:%d/" % broker.http_port), page
    assert page["@odata.nextLink"].startswith(
        "https://127.0.0.1:%d%s?" % (broker.http_port, SUBSCRIPTIONS)), page

    # Just outside: no header, or a header that says http, keeps http.
    for headers in ({}, {"X-Forwarded-Proto": "http"}):
        page = broker.rest("GET", SUBSCRIPTIONS + "?$top=1", headers=headers).json()
        assert page["@odata.context"] == plain + "/v1.0/$metadata#subscriptions", (headers, page)
        assert page["@odata.nextLink"].startswith(plain + SUBSCRIPTIONS + "?"), (headers, page)
