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


def test_connections_of_one_token_share_nothing_they_can_observe(broker):
    """Connections that present the same token hold one copy of its claims (bench/ws_idle.sh):
    renewing on one, or closing one, changes nothing for the others."""
    async def body():
        bau = broker.token("anna", groups=("bau",), ttl=3600)
        it = broker.token("anna", groups=("it",), ttl=3601)
        tabs = [await broker.connect(token=bau) for _ in range(3)]
        for tab in tabs:
            await tab.subscribe("/dms")

        answer = await tabs[0].request({"op": "auth", "ref": "r1", "token": it})
        assert answer["op"] == "authenticated", answer
        broker.publish_ok(resource="/dms/1", readers=["group:bau"], actor="bau-1")
        broker.publish_ok(resource="/dms/2", readers=["group:it"], actor="it-2")
        assert (await tabs[0].next_item())["actor"] == "it-2"
        for tab in tabs[1:]:
            assert (await tab.next_item())["actor"] == "bau-1"

        # The last two held the same claims; one goes, the other reads on under them, and
        # a renewal with the very same token is a renewal like any other.
        await tabs[1].close()
        answer = await tabs[2].request({"op": "auth", "ref": "r2", "token": bau})
        assert answer["op"] == "authenticated", answer
        late = await broker.connect(token=it)
        await late.subscribe("/dms")
        broker.publish_ok(resource="/dms/3", readers=["group:bau"], actor="bau-3")
        broker.publish_ok(resource="/dms/4", readers=["group:it"], actor="it-4")
        broker.publish_ok(resource="/dms/5", readers=["group:bau", "group:it"], actor="both-5")
        seen = {}
        for name, c in (("bau", tabs[2]), ("it", tabs[0]), ("late it", late)):
            seen[name] = [item["actor"] for item in await c.items_until_actor("both-5")]
            await c.close()
        assert seen == {"bau": ["bau-3", "both-5"], "it": ["it-4", "both-5"],
                        "late it": ["it-4", "both-5"]}

    run(body())
