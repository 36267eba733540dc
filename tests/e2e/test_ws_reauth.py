"""A WebSocket outlives its token only by presenting a new one: the broker sends
reauthorizationRequired before the token expires, accepts {"op":"auth"} with a renewed
token of the same user (whose groups then decide what the connection is told), refuses a
bad or foreign token without closing, and closes a connection whose token expired with
1008 "token expired"."""

import asyncio
import time

import websockets

from helpers import TIMEOUT, graph_time, jwt_claims, run


async def lifecycle(c):
    frame = await c.answer()
    assert frame.get("op") == "lifecycle", "expected a lifecycle frame, got %r" % frame
    return frame


def test_renewed_token_keeps_the_connection_and_its_groups_decide(broker):
    async def body():
        short = broker.token("anna", groups=("bau",), ttl=4)
        c = await broker.connect(token=short)
        opened = time.time()
        await c.subscribe("/dms/bau")
        notice = await lifecycle(c)
        assert notice["lifecycleEvent"] == "reauthorizationRequired"
        assert notice["expirationDateTime"] == graph_time(jwt_claims(short)["exp"])
        assert time.time() - opened < 4, "the notice must come before the token expires"

        # Another user's token and a forged one are refused; the connection stays.
        answer = await c.request({"op": "auth", "ref": "a1", "token": broker.token("bob")})
        assert answer["op"] == "error" and answer["error"]["code"] == "forbidden", answer
        answer = await c.request({"op": "auth", "ref": "a2", "token": short[:-2] + "xx"})
        assert answer["op"] == "error" and answer["error"]["code"] == "unauthorized", answer
        answer = await c.request({"op": "auth", "ref": "a3"})
        assert answer["op"] == "error" and answer["error"]["code"] == "bad_request", answer

        # The renewed token drops group bau: what only bau may read is no longer sent.
        renewed = broker.token("anna", groups=("it",), ttl=3600)
        answer = await c.request({"op": "auth", "ref": "a4", "token": renewed})
        assert answer == {"op": "authenticated", "ref": "a4",
                          "expirationDateTime": graph_time(jwt_claims(renewed)["exp"])}
        await asyncio.sleep(max(0.0, opened + 5.5 - time.time()))  # past the first token
        broker.publish_ok(resource="/dms/bau/1", readers=["group:bau"], actor="bau-only")
        broker.publish_ok(resource="/dms/bau/2", readers=["group:it"], actor="it")
        item = await c.next_item()
        assert item["actor"] == "it", "a bau-only item reached a connection without bau"
        await c.ping()
        await c.close()

    run(body())


def test_connection_closes_when_its_token_expires(broker):
    async def body():
        c = await broker.connect(token=broker.token("anna", ttl=3))
        await c.subscribe("/dms/bau")
        notice = await lifecycle(c)
        assert notice["lifecycleEvent"] == "reauthorizationRequired"
        try:
            frame = await asyncio.wait_for(c.ws.recv(), TIMEOUT)
            raise AssertionError("a frame after the notice instead of the close: %r" % frame)
        except websockets.exceptions.ConnectionClosed as closed:
            assert closed.code == 1008, closed
            assert closed.reason == "token expired", closed

    run(body())
