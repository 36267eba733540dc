"""Limits on what one user or one connection may do, each with a clear error: connections
per user (429 at the handshake), ops per second on a connection (limit_exceeded answers),
subscriptions created per minute per user across REST and WebSocket (429 with
Retry-After; limit_exceeded), pages of retained notifications read per second per user
(429 with Retry-After), the Origin a browser's WebSocket may come from (403), and
handshakes that never finish (closed by the broker)."""

import asyncio
import socket
import time

import pytest
import websockets

from helpers import SUBSCRIPTIONS, TIMEOUT, run, sub_body
from receiver import wait_for


async def handshake_status(url, headers):
    try:
        ws = await asyncio.wait_for(websockets.connect(url, extra_headers=headers), TIMEOUT)
    except websockets.exceptions.InvalidStatusCode as refused:
        return refused.status_code
    await ws.close()
    return 101


@pytest.mark.broker_args("--max-connections-per-user", "2")
def test_connections_per_user(broker):
    async def body():
        token = broker.token("anna")
        auth = {"Authorization": "Bearer " + token}
        first = await broker.connect(token=token)
        second = await broker.connect(token=token)
        assert await handshake_status(broker.ws_url, auth) == 429
        # Another user is not affected.
        assert await handshake_status(
            broker.ws_url, {"Authorization": "Bearer " + broker.token("bob")}) == 101
        await first.close()
        for _ in range(50):  # the close reaches the broker a moment later
            if await handshake_status(broker.ws_url, auth) == 101:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("a closed connection still counts against the user")
        await second.close()

    run(body())


@pytest.mark.broker_args("--max-ops-per-second", "5")
def test_ops_per_second_on_a_connection(broker):
    async def body():
        c = await broker.connect()
        sent = 600
        for i in range(sent):
            await c.send({"op": "ping", "ref": "p%d" % i})
        answers = [await c.answer() for _ in range(sent)]
        pongs = [a for a in answers if a["op"] == "pong"]
        refused = [a for a in answers if a["op"] == "error"]
        # The smallest burst (512: two connections' worth of subscriptions) and what the
        # rate adds while the pings arrive.
        assert 512 <= len(pongs) <= 530, "%d pongs" % len(pongs)
        assert len(pongs) + len(refused) == sent
        assert all(a["error"]["code"] == "limit_exceeded" and
                   "at most 5 per second" in a["error"]["message"] for a in refused), refused[:2]
        await asyncio.sleep(1.0)
        await c.ping()  # the bucket refills
        await c.close()

    run(body())


@pytest.mark.broker_args("--max-subscriptions-per-minute", "3")
def test_subscriptions_created_per_minute_across_rest_and_websocket(broker):
    for i in range(2):
        broker.create(sub_body(resource="/dms/r%d" % i))
    async def body():
        c = await broker.connect()
        assert (await c.subscribe("/dms/w1"))["op"] == "subscribed"  # the third
        answer = await c.subscribe("/dms/w2", expect_ok=False)
        assert answer["op"] == "error" and answer["error"]["code"] == "limit_exceeded", answer
        assert "at most 3 created per minute" in answer["error"]["message"]
        await c.close()

    run(body())
    resp = broker.rest("POST", SUBSCRIPTIONS, sub_body(resource="/dms/r9"))
    assert resp.status == 429, resp
    retry = int(resp.header("retry-after"))
    assert 1 <= retry <= 20, retry  # one token of 3 per minute comes back within 20 s
    assert resp.json()["error"]["code"] == "limit_exceeded"
    # Another user has a budget of their own.
    broker.create(sub_body(resource="/dms/b1"), user="bob")


@pytest.mark.broker_args("--max-pages-per-second", "1")
def test_pages_of_retained_notifications_per_second(broker):
    """Each page reads and matches stored events on the service thread, which every live
    delivery waits for meanwhile: one user may not keep it busy."""
    own = broker.create(sub_body("websocket:", resource="/dms/p")).json()
    path = "%s/%s/notifications" % (SUBSCRIPTIONS, own["id"])
    assert broker.rest("GET", path).status == 200
    resp = broker.rest("GET", path)
    assert resp.status == 429, resp
    assert 1 <= int(resp.header("retry-after")) <= 2, resp  # a token a second, rounded up
    assert resp.json()["error"]["code"] == "limit_exceeded"
    assert "at most 1 pages per second" in resp.json()["error"]["message"], resp
    # Another user has a budget of their own.
    other = broker.create(sub_body("websocket:", resource="/dms/q"), user="bob").json()
    assert broker.rest("GET", "%s/%s/notifications" % (SUBSCRIPTIONS, other["id"]),
                       user="bob").status == 200
    # And the first user's comes back.
    wait_for(lambda: broker.rest("GET", path).status == 200, what="a page after the wait")


@pytest.mark.broker_args("--allowed-origins", "https://staff.stadt.example, https://b.example")
def test_websocket_origin(broker):
    async def body():
        auth = {"Authorization": "Bearer " + broker.token("anna")}
        assert await handshake_status(broker.ws_url, dict(auth, Origin="https://evil.example")) \
            == 403
        assert await handshake_status(
            broker.ws_url, dict(auth, Origin="https://staff.stadt.example")) == 101
        assert await handshake_status(broker.ws_url, dict(auth, Origin="https://b.example")) \
            == 101
        assert await handshake_status(broker.ws_url, auth) == 101  # no Origin: not a browser

    run(body())


@pytest.mark.broker_args("--max-connections-per-user", "0")
def test_more_handshakes_at_once_than_header_buffers_all_complete(broker):
    """The broker reads at most 256 requests' headers at once (broker/http.c); a burst of
    more handshakes waits its turn in the accept queue instead of being refused."""
    burst = 600
    async def body():
        token = broker.token("anna")
        async def open_one():
            return await asyncio.wait_for(
                websockets.connect(broker.ws_url,
                                   extra_headers={"Authorization": "Bearer " + token}),
                TIMEOUT)
        opened = await asyncio.gather(*(open_one() for _ in range(burst)),
                                      return_exceptions=True)
        failures = [o for o in opened if isinstance(o, BaseException)]
        for ws in opened:
            if not isinstance(ws, BaseException):
                ws.transport.abort()
        assert not failures, "%d of %d handshakes failed, first: %r" % (
            len(failures), burst, failures[0])
        # And the broker serves the next one as before.
        assert await handshake_status(broker.ws_url, {"Authorization": "Bearer " + token}) == 101

    run(body())


def test_unfinished_handshake_is_closed(broker):
    """A client that opens a connection and trickles its request line never finishes: the
    broker closes it rather than holding it open for ever."""
    s = socket.create_connection(("127.0.0.1", broker.http_port), timeout=TIMEOUT)
    s.sendall(b"GET /v1.0/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    start = time.monotonic()
    closed = False
    s.settimeout(1.0)
    while time.monotonic() - start < 40:
        try:
            s.sendall(b"X")  # a byte now and then, as slowloris does
            if s.recv(4096) == b"":
                closed = True
                break
        except socket.timeout:
            continue
        except OSError:
            closed = True
            break
    s.close()
    assert closed, "the broker kept an unfinished handshake open for 40 s"
    assert time.monotonic() - start < 25
