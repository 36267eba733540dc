"""Tokens from an identity provider: a broker with --jwks-file, --jwt-issuer and
--jwt-audience accepts RS256 and ES256 tokens signed by the set's keys (kid selecting) on
REST and at the WebSocket handshake, refuses HS256 (it has no secret), the wrong issuer
or audience, and `none`; SIGHUP rotates the keys without dropping an open WebSocket, and a
damaged set on SIGHUP keeps the keys in use.

Keys and signatures are made here with the `cryptography` package, independently of the
broker's OpenSSL code."""

import json
import signal
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from conftest import _run_broker
from helpers import SUBSCRIPTIONS, Broker, b64url, make_jwt, run

ISSUER = "https://idp.stadt.example/realms/staff"
AUDIENCE = "herold"


def int_b64(n):
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def jwk(key, kid):
    pub = key.public_key().public_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        return {"kty": "RSA", "kid": kid, "use": "sig", "n": int_b64(pub.n), "e": int_b64(pub.e)}
    return {"kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
            "x": b64url(pub.x.to_bytes(32, "big")), "y": b64url(pub.y.to_bytes(32, "big"))}


def sign(key, kid, claims=None, alg=None):
    now = int(time.time())
    body = {"sub": "anna", "groups": ["bau"], "iss": ISSUER, "aud": [AUDIENCE, "other"],
            "iat": now, "exp": now + 3600}
    body.update(claims or {})
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    header = {"alg": alg or ("RS256" if is_rsa else "ES256"), "typ": "JWT", "kid": kid}
    signing_input = (b64url(json.dumps(header).encode()) + "."
                     + b64url(json.dumps(body).encode())).encode()
    if is_rsa:
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input.decode() + "." + b64url(sig)


def unsigned(header):
    now = int(time.time())
    claims = {"sub": "anna", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}
    return (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
            + ".")


class Keys:
    def __init__(self, tmp_path):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rotated = ec.generate_private_key(ec.SECP256R1())
        self.path = tmp_path / "jwks.json"
        self.write([jwk(self.rsa, "rsa-1"), jwk(self.ec, "ec-1")])

    def write(self, keys):
        self.path.write_text(json.dumps({"keys": keys}))


@pytest.fixture
def keys(tmp_path):
    return Keys(tmp_path)


@pytest.fixture
def idp_broker(tmp_path, request, keys):
    b = Broker(tmp_path, ["--jwks-file", keys.path, "--jwt-issuer", ISSUER,
                          "--jwt-audience", AUDIENCE])
    yield from _run_broker(request, b)


def status(broker, token):
    return broker.rest("GET", SUBSCRIPTIONS, token=token).status


def test_rs256_and_es256_tokens_from_the_set_are_accepted(idp_broker, keys):
    assert status(idp_broker, sign(keys.rsa, "rsa-1")) == 200
    assert status(idp_broker, sign(keys.ec, "ec-1")) == 200


def test_tokens_the_broker_must_refuse(idp_broker, keys):
    refused = {
        "another key under a known kid": sign(keys.rotated, "ec-1"),
        "a kid the set lacks": sign(keys.ec, "ec-9"),
        "the wrong issuer": sign(keys.ec, "ec-1", {"iss": "https://evil.example"}),
        "no audience of ours": sign(keys.ec, "ec-1", {"aud": "other"}),
        "expired": sign(keys.ec, "ec-1", {"exp": int(time.time()) - 120}),
        "HS256 (no secret is configured)": make_jwt(
            b"k" * 64, {"sub": "anna", "exp": int(time.time()) + 60, "iss": ISSUER,
                       "aud": AUDIENCE}),
        "HS256 keyed with the set itself": make_jwt(
            keys.path.read_bytes(), {"sub": "anna", "exp": int(time.time()) + 60,
                                    "iss": ISSUER, "aud": AUDIENCE}),
        "alg none": unsigned({"alg": "none"}),
        "alg none with a kid of the set": unsigned({"alg": "none", "kid": "ec-1"}),
    }
    for what, token in refused.items():
        resp = idp_broker.rest("GET", SUBSCRIPTIONS, token=token)
        assert resp.status == 401, "%s: %s" % (what, resp)


def test_websocket_handshake_takes_an_es256_token(idp_broker, keys):
    async def body():
        c = await idp_broker.connect(token=sign(keys.ec, "ec-1"))
        await c.subscribe("/dms/bau")
        idp_broker.publish_ok(resource="/dms/bau/1", readers=["group:bau"], actor="idp")
        assert (await c.next_item())["actor"] == "idp"
        await c.close()

    run(body())


def test_sighup_rotates_keys_and_keeps_connections(idp_broker, keys):
    async def body():
        c = await idp_broker.connect(token=sign(keys.ec, "ec-1"))
        await c.subscribe("/dms/bau")
        keys.write([jwk(keys.rotated, "ec-2")])
        idp_broker.proc.send_signal(signal.SIGHUP)
        assert idp_broker.pump.wait_for("SIGHUP: 1 token keys loaded", 10) is not None
        assert status(idp_broker, sign(keys.ec, "ec-1")) == 401
        assert status(idp_broker, sign(keys.rotated, "ec-2")) == 200
        # The WebSocket opened under the old key is still served.
        idp_broker.publish_ok(resource="/dms/bau/2", readers=["group:bau"], actor="after")
        assert (await c.next_item())["actor"] == "after"

        # A damaged set on SIGHUP changes nothing.
        keys.path.write_text('{"keys": [')
        idp_broker.proc.send_signal(signal.SIGHUP)
        assert idp_broker.pump.wait_for("SIGHUP: keys kept as they were", 10) is not None
        assert status(idp_broker, sign(keys.rotated, "ec-2")) == 200
        await c.close()

    run(body())


def test_broker_refuses_to_start_on_a_bad_key_set(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}))
    b = Broker(tmp_path, ["--jwks-file", path])
    with pytest.raises(BaseException):
        b.start()
    b.close_zmq()
    assert "not an RSA public key of 2048 bits or more" in b.pump.finish()
