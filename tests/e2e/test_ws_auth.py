"""Token checks at the WebSocket handshake: every bad token is refused with HTTP 401
before the upgrade; a good one works in the header and in ?access_token=.

Bad tokens are built in Python (hmac/hashlib/base64) from the broker's own secret
DATA/jwt.secret, so each test changes exactly one thing about an otherwise valid token;
test_python_signed_token_is_accepted proves the Python signer matches the broker's."""

import asyncio
import json
import os
import time
import urllib.parse

import pytest
import websockets

from helpers import TIMEOUT, b64url, b64url_decode, graph_time, make_jwt, run


async def handshake_status(url, headers=None):
    """The HTTP status of a refused handshake; fails the test if it is accepted."""
    try:
        ws = await asyncio.wait_for(websockets.connect(url, extra_headers=headers or {}),
                                    TIMEOUT)
    except websockets.exceptions.InvalidStatusCode as refused:
        return refused.status_code
    await ws.close()
    pytest.fail("handshake to %s with %r was accepted" % (url, headers))


def bearer(token):
    return {"Authorization": "Bearer " + token}


def claims_now(user="anna", exp_offset=3600, **extra):
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + exp_offset}
    claims.update(extra)
    return claims


def test_python_signed_token_is_accepted(broker):
    async def body():
        claims = claims_now("anna", groups=["bau"])
        token = make_jwt(broker.secret(), claims)
        c = await broker.connect(token=token)
        answer = await c.subscribe("me/x")
        assert answer["resource"] == "/users/anna/x"
        assert answer["expirationDateTime"] == graph_time(claims["exp"])
        broker.publish_ok(resource="/users/anna/x/1", readers=["group:bau"], actor="ok")
        assert (await c.next_item())["actor"] == "ok"
        await c.close()

    run(body())


def test_token_from_herold_token_cli_in_header_is_accepted(broker):
    async def body():
        token = broker.token("anna", groups=("bau", "it"), ttl=600)
        claims = json.loads(b64url_decode(token.split(".")[1]))
        assert claims["sub"] == "anna"
        assert sorted(claims["groups"]) == ["bau", "it"]
        assert abs(claims["exp"] - (time.time() + 600)) < 120
        c = await broker.connect(token=token)
        await c.ping()
        await c.close()

    run(body())


def test_token_in_access_token_query_parameter_is_accepted(broker):
    async def body():
        token = broker.token("anna")
        url = broker.ws_url + "?access_token=" + urllib.parse.quote(token)
        ws = await asyncio.wait_for(websockets.connect(url), TIMEOUT)
        await ws.send(json.dumps({"op": "subscribe", "ref": "q", "resource": "me/q"}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert answer["op"] == "subscribed" and answer["resource"] == "/users/anna/q"
        await ws.close()

    run(body())


def test_handshake_without_token_is_refused_401(broker):
    async def body():
        assert await handshake_status(broker.ws_url) == 401
        assert await handshake_status(broker.ws_url, {"Authorization": "Bearer "}) == 401
        assert await handshake_status(broker.ws_url + "?access_token=") == 401

    run(body())


def test_handshake_with_garbage_or_non_bearer_token_is_refused_401(broker):
    async def body():
        token = broker.token("anna")
        assert await handshake_status(broker.ws_url, bearer("not.a.jwt")) == 401
        assert await handshake_status(broker.ws_url, bearer("garbage")) == 401
        assert await handshake_status(broker.ws_url, {"Authorization": "Basic " + token}) == 401
        assert await handshake_status(broker.ws_url + "?access_token=x.y.z") == 401

    run(body())


def test_handshake_with_forged_signature_is_refused_401(broker):
    async def body():
        token = broker.token("anna")
        header, payload, signature = token.split(".")
        # The claims changed (another user), the signature kept.
        claims = json.loads(b64url_decode(payload))
        claims["sub"] = "mallory"
        forged_claims = header + "." + b64url(json.dumps(claims).encode()) + "." + signature
        assert await handshake_status(broker.ws_url, bearer(forged_claims)) == 401
        # Same claims, a different signature of the right length.
        forged_sig = header + "." + payload + "." + b64url(os.urandom(32))
        assert await handshake_status(broker.ws_url, bearer(forged_sig)) == 401
        # No signature at all.
        assert await handshake_status(broker.ws_url, bearer(header + "." + payload + ".")) == 401
        # The same forged token in the query parameter.
        assert await handshake_status(
            broker.ws_url + "?access_token=" + urllib.parse.quote(forged_claims)) == 401

    run(body())


def test_handshake_with_token_signed_by_another_secret_is_refused_401(broker):
    async def body():
        other = os.urandom(32).hex().encode()
        assert other != broker.secret()
        token = make_jwt(other, claims_now("anna"))
        assert await handshake_status(broker.ws_url, bearer(token)) == 401

    run(body())


def test_handshake_with_expired_token_is_refused_401(broker):
    async def body():
        # `herold token --ttl` takes only positive values, so the expired token is signed in
        # Python with the broker's secret; an hour is far beyond any clock leeway.
        token = make_jwt(broker.secret(), claims_now("anna", exp_offset=-3600))
        assert await handshake_status(broker.ws_url, bearer(token)) == 401
        assert await handshake_status(
            broker.ws_url + "?access_token=" + urllib.parse.quote(token)) == 401

    run(body())


def test_handshake_with_alg_none_is_refused_401(broker):
    async def body():
        claims = claims_now("anna")
        unsigned = (b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "."
                    + b64url(json.dumps(claims).encode()) + ".")
        assert await handshake_status(broker.ws_url, bearer(unsigned)) == 401
        # alg none but with an HS256 signature made with the right secret: still refused.
        signed_none = make_jwt(broker.secret(), claims, {"alg": "none", "typ": "JWT"})
        assert await handshake_status(broker.ws_url, bearer(signed_none)) == 401
        # Another algorithm name with a valid HMAC-SHA256 signature.
        hs512 = make_jwt(broker.secret(), claims, {"alg": "HS512", "typ": "JWT"})
        assert await handshake_status(broker.ws_url, bearer(hs512)) == 401

    run(body())


def test_handshake_with_token_missing_sub_or_exp_is_refused_401(broker):
    async def body():
        now = int(time.time())
        no_sub = make_jwt(broker.secret(), {"iat": now, "exp": now + 600})
        no_exp = make_jwt(broker.secret(), {"sub": "anna", "iat": now})
        assert await handshake_status(broker.ws_url, bearer(no_sub)) == 401
        assert await handshake_status(broker.ws_url, bearer(no_exp)) == 401

    run(body())


def test_refused_handshakes_leave_the_broker_serving(broker):
    async def body():
        for _ in range(20):
            assert await handshake_status(broker.ws_url, bearer("x.y.z")) == 401
        c = await broker.connect("anna")
        await c.ping()
        await c.close()
        assert broker.http_get("/healthz")[0] == 200

    run(body())


def test_access_token_before_since_in_the_query_still_resumes(broker):
    """Browsers put the token in the query; a since after it must still start the replay
    (libwebsockets gives up on query arguments at the first one longer than the buffer)."""
    from helpers import sub_body

    token = broker.token("anna", groups=("bau",))
    broker.create(sub_body(resource="/dms/bau"), token=token)
    first = broker.publish_ok(resource="/dms/bau/1", readers=["group:bau"])
    broker.publish_ok(resource="/dms/bau/2", readers=["group:bau"], actor="missed")

    async def body():
        url = "%s?access_token=%s&since=%d" % (broker.ws_url, token, first["seq"])
        async with websockets.connect(url) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert frame["op"] == "notify", frame
            assert [it["actor"] for it in frame["value"]] == ["missed"]

    run(body())
