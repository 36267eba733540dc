"""The REST subscription API, /v1.0/subscriptions (schemas/subscriptions.md): every member
of the resource, every rule of creation, listing, paging, PATCH, DELETE and reauthorize,
and every error with its status, code and Graph error shape.

Subscriptions that are not about webhooks use notificationUrl `websocket:`, which needs no
validation round trip. Webhook receivers run on 127.0.0.1, hence --webhook-allow-private."""

import http.client
import json
import socket
import threading
import time
import uuid

import pytest

from helpers import (GRAPH_TIME_RE, JSON_TYPE, SUBSCRIPTIONS, UUID_RE, RestResponse, expect_error,
                     graph_time, iso_z, make_jwt, parse_graph_time, run, sub_body)
from receiver import secret_key

pytestmark = pytest.mark.broker_args("--webhook-allow-private")

# schemas/subscriptions.md: the members of a subscription in a response (signingSecret and
# @odata.context come on top, where stated).
SUB_MEMBERS = {
    "id", "resource", "applicationId", "changeType", "clientState", "notificationUrl",
    "lifecycleNotificationUrl", "expirationDateTime", "creatorId", "includeResourceData",
    "latestSupportedTlsVersion", "encryptionCertificate", "encryptionCertificateId",
    "notificationUrlAppId", "notificationQueryOptions",
}
DEFAULT_MIN_SECONDS = 2700
DEFAULT_MAX_MINUTES = 42300
MAX_BODY = 16384


def sub_path(sub_id, suffix=""):
    return "%s/%s%s" % (SUBSCRIPTIONS, sub_id, suffix)


def without(d, *keys):
    return {k: v for k, v in d.items() if k not in keys}


def body_of_size(size, **members):
    """A valid websocket: creation body of exactly size bytes, padded with an unknown
    member (unknown members are ignored)."""
    body = sub_body(**members)
    body["padding"] = ""
    base = len(json.dumps(body).encode())
    assert base <= size
    body["padding"] = "a" * (size - base)
    data = json.dumps(body).encode()
    assert len(data) == size
    return data


# ---- creation ----

def test_create_webhook_subscription_returns_201_with_every_member(broker, receivers):
    hook, life = receivers("hook"), receivers("life")
    exp = int(time.time()) + 3600
    body = {
        "changeType": "updated,created",
        "notificationUrl": hook.url("/hook"),
        "lifecycleNotificationUrl": life.url("/life"),
        "resource": "/dms/cabinets/bau",
        "expirationDateTime": iso_z(exp),
        "clientState": "secret-client-state",
        "encryptionCertificate": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A",
        "encryptionCertificateId": "cert-1",
    }
    resp = broker.create(body)
    assert resp.header("Content-Type").split(";")[0].strip() == JSON_TYPE, resp
    sub = resp.json()
    assert set(sub) == SUB_MEMBERS | {"@odata.context", "signingSecret"}, sorted(sub)
    assert sub["@odata.context"] == broker.origin + "/v1.0/$metadata#subscriptions/$entity"
    assert UUID_RE.match(sub["id"]), sub
    assert sub["resource"] == "/dms/cabinets/bau"
    assert sub["applicationId"] is None, "herold token has no azp"
    assert sub["changeType"] == "created,updated", "normalised order"
    assert sub["clientState"] == "secret-client-state"
    assert sub["notificationUrl"] == hook.url("/hook")
    assert sub["lifecycleNotificationUrl"] == life.url("/life")
    assert GRAPH_TIME_RE.match(sub["expirationDateTime"]), sub["expirationDateTime"]
    assert sub["expirationDateTime"] == graph_time(exp)
    assert sub["creatorId"] == "anna"
    assert sub["includeResourceData"] is False
    assert sub["latestSupportedTlsVersion"] == "v1_2"
    assert sub["encryptionCertificate"] == "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"
    assert sub["encryptionCertificateId"] == "cert-1"
    assert sub["notificationUrlAppId"] is None
    assert sub["notificationQueryOptions"] is None
    secret = sub["signingSecret"]
    assert secret.startswith("whsec_"), secret
    assert len(secret_key(secret)) == 32, "whsec_ + base64 of 32 bytes: %r" % secret
    assert len(secret) == len("whsec_") + 44, "standard base64 with padding: %r" % secret

    # Both URLs were validated once, with a POST carrying validationToken as text/plain.
    for receiver, path in ((hook, "/hook"), (life, "/life")):
        vals = receiver.validations()
        assert len(vals) == 1, (receiver.name, receiver.requests)
        assert vals[0].method == "POST" and vals[0].path == path
        assert vals[0].query["validationToken"][0], vals[0]
        ctype = vals[0].headers.get("Content-Type", "")
        assert ctype.split(";")[0].strip() == "text/plain", ctype
        assert receiver.posts() == [], "no notification before any event"


def test_create_with_include_resource_data_echoes_it(broker):
    resp = broker.create(sub_body(includeResourceData=True, encryptionCertificateId="c2"))
    sub = resp.json()
    assert sub["includeResourceData"] is True
    assert sub["encryptionCertificateId"] == "c2"
    assert broker.get_sub(sub["id"]).json()["includeResourceData"] is True


def test_create_websocket_subscription_with_azp_token_sets_application_id(broker):
    now = int(time.time())
    token = make_jwt(broker.secret(), {"sub": "anna", "iat": now, "exp": now + 3600,
                                       "azp": "app-4711", "groups": ["bau"]})
    sub = broker.create(sub_body("websocket:"), token=token).json()
    assert sub["applicationId"] == "app-4711"
    assert sub["creatorId"] == "anna"
    assert sub["notificationUrl"] == "websocket:"
    assert sub["lifecycleNotificationUrl"] is None
    assert sub["clientState"] is None
    assert "signingSecret" not in sub, "websocket: subscriptions have no signingSecret"
    assert set(sub) == SUB_MEMBERS | {"@odata.context"}, sorted(sub)
    got = broker.get_sub(sub["id"], token=token).json()
    assert got["applicationId"] == "app-4711"


def test_create_ignores_unknown_and_read_only_members(broker):
    body = sub_body(**{"@odata.type": "#microsoft.graph.subscription", "id": "mine",
                       "creatorId": "mallory", "applicationId": "fake", "somethingNew": 1})
    sub = broker.create(body).json()
    assert sub["id"] != "mine" and UUID_RE.match(sub["id"])
    assert sub["creatorId"] == "anna"
    assert sub["applicationId"] is None


def test_get_one_returns_the_subscription_with_client_state(broker, receivers):
    hook = receivers("hook")
    created = broker.create(sub_body(hook.url(), clientState="cs-1")).json()
    resp = broker.get_sub(created["id"])
    assert resp.status == 200, resp
    got = resp.json()
    assert "signingSecret" not in got, "the secret is shown only at creation"
    assert got["@odata.context"] == created["@odata.context"]
    assert got["clientState"] == "cs-1"
    for member in SUB_MEMBERS:
        assert got[member] == created[member], member


def test_list_returns_only_own_subscriptions_oldest_first_with_client_state_null(broker):
    mine = [broker.create(sub_body(resource="/dms/a%d" % i, clientState="s%d" % i)).json()
            for i in range(3)]
    theirs = broker.create(sub_body(resource="/dms/a0", clientState="b"), user="bert").json()

    resp = broker.rest("GET", SUBSCRIPTIONS)
    assert resp.status == 200, resp
    page = resp.json()
    assert page["@odata.context"] == broker.origin + "/v1.0/$metadata#subscriptions"
    assert "@odata.nextLink" not in page
    assert [s["id"] for s in page["value"]] == [s["id"] for s in mine]
    for listed, created in zip(page["value"], mine):
        assert listed["clientState"] is None, "clientState is null in lists"
        assert "signingSecret" not in listed
        for member in SUB_MEMBERS - {"clientState"}:
            assert listed[member] == created[member], member

    bert = broker.rest("GET", SUBSCRIPTIONS, user="bert").json()
    assert [s["id"] for s in bert["value"]] == [theirs["id"]]
    assert broker.rest("GET", SUBSCRIPTIONS, user="carl").json()["value"] == []


def test_list_pages_with_top_2_over_5_subscriptions_follow_next_link(broker):
    ids = [broker.create(sub_body(resource="/dms/p%d" % i)).json()["id"] for i in range(5)]
    broker.create(sub_body(resource="/dms/other"), user="bert")
    pages = broker.list_all(top=2)
    assert [len(p["value"]) for p in pages] == [2, 2, 1], pages
    for page in pages[:-1]:
        assert "$top=2" in page["@odata.nextLink"], page["@odata.nextLink"]
    assert "@odata.nextLink" not in pages[-1]
    listed = [s["id"] for p in pages for s in p["value"]]
    assert listed == ids, "every id once, oldest first"

    # Exactly a multiple of the page size: no nextLink on the page that ends the list.
    broker.rest("DELETE", sub_path(ids[4]))
    pages = broker.list_all(top=2)
    assert [len(p["value"]) for p in pages] == [2, 2], pages


def test_paging_survives_deletions_between_pages(broker):
    ids = [broker.create(sub_body(resource="/dms/d%d" % i)).json()["id"] for i in range(5)]
    first = broker.rest("GET", SUBSCRIPTIONS + "?$top=2").json()
    assert [s["id"] for s in first["value"]] == ids[:2]
    # Delete the last one shown and the first one not shown yet.
    for gone in (ids[1], ids[2]):
        assert broker.rest("DELETE", sub_path(gone)).status == 204
    rest = broker.rest("GET", first["@odata.nextLink"][len(broker.origin):])
    assert rest.status == 200, rest
    assert [s["id"] for s in rest.json()["value"]] == ids[3:], "skipped or repeated"


def test_list_top_outside_1_to_100_is_refused_400(broker):
    for i in range(3):
        broker.create(sub_body(resource="/dms/t%d" % i))
    for top in ("0", "101", "-1", "abc", "2x", "", "1e1"):
        expect_error(broker.rest("GET", SUBSCRIPTIONS + "?$top=" + top), 400, "bad_request")
    one = broker.rest("GET", SUBSCRIPTIONS + "?$top=1")
    assert one.status == 200 and len(one.json()["value"]) == 1, one
    hundred = broker.rest("GET", SUBSCRIPTIONS + "?$top=100")
    assert hundred.status == 200 and len(hundred.json()["value"]) == 3, hundred
    assert "@odata.nextLink" not in hundred.json()


# ---- PATCH, DELETE, reauthorize ----

def test_patch_expiration_renews_and_get_shows_it(broker):
    sub = broker.create(sub_body(seconds=3600)).json()
    new = int(time.time()) + 7200
    resp = broker.rest("PATCH", sub_path(sub["id"]), {"expirationDateTime": iso_z(new)})
    assert resp.status == 200, resp
    patched = resp.json()
    assert patched["id"] == sub["id"]
    assert patched["expirationDateTime"] == graph_time(new)
    assert "signingSecret" not in patched
    assert broker.get_sub(sub["id"]).json()["expirationDateTime"] == graph_time(new)


def test_patch_expiration_follows_the_creation_rules(broker):
    sub = broker.create(sub_body(seconds=3600)).json()
    path = sub_path(sub["id"])
    now = int(time.time())
    expect_error(broker.rest("PATCH", path, {"expirationDateTime": iso_z(now - 60)}),
                 400, "bad_request")
    expect_error(broker.rest("PATCH", path, {
        "expirationDateTime": iso_z(now + DEFAULT_MAX_MINUTES * 60 + 3600)}), 400, "bad_request")
    assert broker.get_sub(sub["id"]).json()["expirationDateTime"] == sub["expirationDateTime"]
    before = time.time()
    raised = broker.rest("PATCH", path, {"expirationDateTime": iso_z(now + 60)})
    after = time.time()
    assert raised.status == 200, raised
    exp = parse_graph_time(raised.json()["expirationDateTime"])
    assert before + DEFAULT_MIN_SECONDS - 1 <= exp <= after + DEFAULT_MIN_SECONDS + 1, raised


def test_patch_of_another_member_is_refused_400_and_equal_values_are_accepted(broker):
    sub = broker.create(sub_body(resource="/dms/x", clientState="cs")).json()
    path = sub_path(sub["id"])
    for change in ({"resource": "/dms/y"}, {"changeType": "deleted"},
                   {"clientState": "other"}, {"includeResourceData": True},
                   {"lifecycleNotificationUrl": "http://127.0.0.1:9/life"},
                   {"encryptionCertificateId": "new"}):
        expect_error(broker.rest("PATCH", path, change), 400, "bad_request")
    got = broker.get_sub(sub["id"]).json()
    for member in SUB_MEMBERS:
        assert got[member] == sub[member], member

    # Graph SDKs send whole objects: members equal to the stored values are fine.
    same = {"resource": "/dms/x", "changeType": "created,updated", "clientState": "cs",
            "notificationUrl": "websocket:", "@odata.type": "#microsoft.graph.subscription",
            "expirationDateTime": iso_z(int(time.time()) + 7200)}
    resp = broker.rest("PATCH", path, same)
    assert resp.status == 200, resp


def test_patch_notification_url_is_revalidated_and_a_failure_keeps_the_old_url(broker,
                                                                               receivers):
    good, bad, other = receivers("good"), receivers("bad"), receivers("other")
    bad.validation = 404
    sub = broker.create(sub_body(good.url(), resource="/dms/r", change_type="updated")).json()
    path = sub_path(sub["id"])

    expect_error(broker.rest("PATCH", path, {"notificationUrl": bad.url()}), 400, "bad_request")
    assert len(bad.validations()) == 1, "the new URL was validated"
    assert broker.get_sub(sub["id"]).json()["notificationUrl"] == good.url()

    expect_error(broker.rest("PATCH", path, {"notificationUrl": "websocket:"}), 400,
                 "bad_request")

    resp = broker.rest("PATCH", path, {"notificationUrl": other.url("/new")})
    assert resp.status == 200, resp
    assert resp.json()["notificationUrl"] == other.url("/new")
    assert len(other.validations()) == 1
    assert broker.get_sub(sub["id"]).json()["notificationUrl"] == other.url("/new")

    # Deliveries now go to the new URL.
    reply = broker.publish_ok(resource="/dms/r/1", actor="after-patch")
    items = other.wait_items(1)
    assert items[0]["id"] == "%s-%d" % (sub["id"], reply["seq"])
    assert good.posts() == []


def test_patch_cannot_switch_websocket_to_webhook(broker, receivers):
    hook = receivers("hook")
    sub = broker.create(sub_body("websocket:")).json()
    expect_error(broker.rest("PATCH", sub_path(sub["id"]), {"notificationUrl": hook.url()}),
                 400, "bad_request")
    assert broker.get_sub(sub["id"]).json()["notificationUrl"] == "websocket:"


def test_delete_answers_204_then_get_is_404(broker):
    sub = broker.create(sub_body()).json()
    resp = broker.rest("DELETE", sub_path(sub["id"]))
    assert resp.status == 204 and resp.body == b"", resp
    expect_error(broker.get_sub(sub["id"]), 404, "not_found")
    expect_error(broker.rest("DELETE", sub_path(sub["id"])), 404, "not_found")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


def test_another_users_subscription_is_not_found_for_get_patch_delete_reauthorize(broker):
    sub = broker.create(sub_body()).json()
    path = sub_path(sub["id"])
    new = {"expirationDateTime": iso_z(int(time.time()) + 7200)}
    expect_error(broker.rest("GET", path, user="bert"), 404, "not_found")
    expect_error(broker.rest("PATCH", path, new, user="bert"), 404, "not_found")
    expect_error(broker.rest("DELETE", path, user="bert"), 404, "not_found")
    expect_error(broker.rest("POST", path + "/reauthorize", user="bert"), 404, "not_found")
    got = broker.get_sub(sub["id"])
    assert got.status == 200, got
    assert got.json()["expirationDateTime"] == sub["expirationDateTime"]


def test_reauthorize_answers_204(broker):
    sub = broker.create(sub_body()).json()
    resp = broker.rest("POST", sub_path(sub["id"], "/reauthorize"))
    assert resp.status == 204 and resp.body == b"", resp
    assert broker.get_sub(sub["id"]).status == 200


def test_unknown_id_is_404(broker):
    for sub_id in (str(uuid.uuid4()), "not-a-uuid"):
        path = sub_path(sub_id)
        expect_error(broker.rest("GET", path), 404, "not_found")
        expect_error(broker.rest("PATCH", path, {"expirationDateTime": iso_z(
            int(time.time()) + 7200)}), 404, "not_found")
        expect_error(broker.rest("DELETE", path), 404, "not_found")
        expect_error(broker.rest("POST", path + "/reauthorize"), 404, "not_found")


def test_unknown_route_is_404(broker):
    sub = broker.create(sub_body()).json()
    for path in ("/v1.0/subscriptions/%s/extra" % sub["id"],
                 "/v1.0/subscriptions/%s/reauthorize/x" % sub["id"],
                 "/v1.0/subscriptions/", "/v1.0/nothing", "/v1.0/subscription",
                 "/v2.0/subscriptions", "/subscriptions", "/index.htm", "/app.jsx",
                 "/clients/web/app.js", "/../Makefile", "/style.css/x"):
        expect_error(broker.rest("GET", path), 404, "not_found")


def test_root_serves_the_live_alert_page_and_nothing_else(broker):
    """/ is the staff page (clients/web); only its own files are served, with a policy
    that lets it talk to this broker alone."""
    page = broker.rest("GET", "/", auth=False)
    assert page.status == 200 and page.header("content-type").startswith("text/html")
    assert b'<script src="app.js"' in page.body
    assert "default-src 'self'" in page.header("content-security-policy")
    assert page.header("x-content-type-options") == "nosniff"
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css"),
                       ("/index.html", "text/html")):
        resp = broker.rest("GET", path, auth=False)
        assert resp.status == 200 and resp.header("content-type").startswith(kind), resp


def test_links_say_https_behind_a_tls_proxy(broker):
    proxied = {"X-Forwarded-Proto": "https"}
    created = broker.rest("POST", SUBSCRIPTIONS, sub_body(resource="/dms/a"), headers=proxied)
    assert created.status == 201, created
    https_origin = "https://127.0.0.1:%d" % broker.http_port
    assert created.json()["@odata.context"] == \
        https_origin + "/v1.0/$metadata#subscriptions/$entity"
    broker.create(sub_body(resource="/dms/b"))
    page = broker.rest("GET", SUBSCRIPTIONS + "?$top=1", headers=proxied).json()
    assert page["@odata.context"] == https_origin + "/v1.0/$metadata#subscriptions"
    assert page["@odata.nextLink"].startswith(https_origin + "/v1.0/subscriptions?"), page


def test_wrong_method_is_405(broker):
    sub = broker.create(sub_body()).json()
    one = sub_path(sub["id"])
    # Bodies are valid where a method takes one, so that only the method is wrong.
    renew = {"expirationDateTime": iso_z(int(time.time()) + 7200)}
    for method, path, body in (("PUT", SUBSCRIPTIONS, sub_body(resource="/dms/put")),
                               ("DELETE", SUBSCRIPTIONS, None),
                               ("PATCH", SUBSCRIPTIONS, renew),
                               ("POST", one, sub_body(resource="/dms/post")),
                               ("PUT", one, renew),
                               ("GET", one + "/reauthorize", None),
                               ("DELETE", one + "/reauthorize", None),
                               ("PATCH", one + "/reauthorize", renew)):
        expect_error(broker.rest(method, path, body), 405, "method_not_allowed")
    listed = broker.rest("GET", SUBSCRIPTIONS).json()["value"]
    assert [s["id"] for s in listed] == [sub["id"]], "nothing was created or deleted"
    assert listed[0]["expirationDateTime"] == sub["expirationDateTime"]


# ---- authentication ----

def test_requests_without_a_valid_token_are_refused_401_with_www_authenticate(broker):
    sub = broker.create(sub_body()).json()
    secret = broker.secret()
    now = int(time.time())
    good = broker.rest_token("anna")
    header, payload, _ = good.split(".")
    cases = [
        ("no token", dict(auth=False), "unauthorized"),
        ("garbage", dict(token="garbage"), "unauthorized"),
        ("forged signature", dict(token=header + "." + payload + "." + "A" * 43),
         "unauthorized"),
        ("other secret", dict(token=make_jwt(secret + b"x", {"sub": "anna", "exp": now + 60})),
         "unauthorized"),
        ("alg none", dict(token=make_jwt(secret, {"sub": "anna", "exp": now + 60},
                                         {"alg": "none", "typ": "JWT"})), "unauthorized"),
        ("expired", dict(token=make_jwt(secret, {"sub": "anna", "iat": now - 7200,
                                                 "exp": now - 3600})),
         ("unauthorized", "token_expired")),
        ("basic", dict(headers={"Authorization": "Basic YW5uYTpwdw=="}), "unauthorized"),
    ]
    for what, kwargs, code in cases:
        for method, path, body in (("GET", SUBSCRIPTIONS, None),
                                   ("POST", SUBSCRIPTIONS, sub_body(resource="/dms/z")),
                                   ("GET", sub_path(sub["id"]), None),
                                   ("DELETE", sub_path(sub["id"]), None)):
            resp = broker.rest(method, path, body, **kwargs)
            expect_error(resp, 401, code)
            challenge = resp.header("WWW-Authenticate") or ""
            assert challenge.startswith("Bearer"), "%s: WWW-Authenticate of %s" % (what, resp)
    assert [s["id"] for s in broker.rest("GET", SUBSCRIPTIONS).json()["value"]] == [sub["id"]]


# ---- bodies ----

def test_body_that_is_not_json_is_refused_400_bad_json(broker):
    for raw in (b"{", b"nonsense", b"", b'{"changeType": "created"} x', b"\xff\xfe{}"):
        expect_error(broker.rest("POST", SUBSCRIPTIONS, raw), 400, "bad_json")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


def test_body_that_is_a_json_array_or_scalar_is_refused_400(broker):
    for raw in (b"[]", json.dumps([sub_body()]).encode(), b'"text"', b"42", b"null"):
        expect_error(broker.rest("POST", SUBSCRIPTIONS, raw), 400, "bad_json")
    sub = broker.create(sub_body()).json()
    expect_error(broker.rest("PATCH", sub_path(sub["id"]), b"[]"), 400, "bad_json")
    expect_error(broker.rest("PATCH", sub_path(sub["id"]), b"{"), 400, "bad_json")


@pytest.mark.parametrize("member", ["changeType", "notificationUrl", "resource",
                                    "expirationDateTime"])
def test_missing_required_member_is_refused_400(broker, member):
    body = sub_body()
    del body[member]
    expect_error(broker.rest("POST", SUBSCRIPTIONS, body), 400, "bad_request")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


def test_mistyped_or_invalid_members_are_refused_400_bad_request(broker):
    for change in ({"notificationUrl": 5}, {"notificationUrl": "ftp://127.0.0.1/x"},
                   {"notificationUrl": "websocket:x"}, {"notificationUrl": "hook"},
                   {"resource": 5}, {"expirationDateTime": "tomorrow"},
                   {"expirationDateTime": 1900000000}, {"clientState": 5},
                   {"includeResourceData": "yes"},
                   {"lifecycleNotificationUrl": "websocket:"},
                   {"lifecycleNotificationUrl": 5}):
        body = sub_body()
        body.update(change)
        expect_error(broker.rest("POST", SUBSCRIPTIONS, body), 400, "bad_request")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


def test_bad_change_type_is_refused_400(broker):
    for change_type in ("", "moved", "created,moved", "created,,updated", "created,created",
                        "created,"):
        expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(change_type=change_type)),
                     400, "bad_change_type")
    sub = broker.create(sub_body(change_type="deleted,updated,created")).json()
    assert sub["changeType"] == "created,updated,deleted"


def test_bad_resource_path_is_refused_400(broker):
    for resource in ("/", "/dms//x", "/dms/../x", "/dms/./x", "/dms/x/", "dms//x",
                     "/dms/" + "a/" * 40 + "b"):
        expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(resource=resource)),
                     400, "bad_path")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


def test_expiration_in_the_past_or_beyond_the_maximum_is_refused_400(broker):
    now = int(time.time())
    for exp in (now - 60, now + DEFAULT_MAX_MINUTES * 60 + 60):
        body = sub_body()
        body["expirationDateTime"] = iso_z(exp)
        expect_error(broker.rest("POST", SUBSCRIPTIONS, body), 400, "bad_request")
    inside = now + DEFAULT_MAX_MINUTES * 60 - 60
    body = sub_body()
    body["expirationDateTime"] = iso_z(inside)
    assert broker.create(body).json()["expirationDateTime"] == graph_time(inside)


def test_expiration_formats_with_offset_and_any_fraction_are_accepted(broker):
    base = int(time.time()) + 7200
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + 2 * 3600))
    for i, (text, want) in enumerate((
            (local + "+02:00", base),
            (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + 1)) + "Z", base + 1),
            (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + 2)) + ".0000000Z",
             base + 2))):
        body = sub_body(resource="/dms/f%d" % i)
        body["expirationDateTime"] = text
        got = broker.create(body).json()["expirationDateTime"]
        assert got == graph_time(want), (text, got)
    body = sub_body(resource="/dms/frac")
    body["expirationDateTime"] = time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(base + 3)) + ".5Z"
    got = parse_graph_time(broker.create(body).json()["expirationDateTime"])
    assert base + 3 <= got <= base + 4, got


def next_year_with(month):
    """The year of the next 1st of month that is still ahead."""
    now = time.gmtime()
    return now.tm_year if now.tm_mon < month else now.tm_year + 1


@pytest.mark.broker_args("--subscription-max-minutes", 525600)
def test_expiration_that_is_not_a_calendar_date_is_refused_400(broker):
    # A maximum of one year lets the next February and April serve as examples.
    feb, apr = next_year_with(2), next_year_with(4)
    leap = feb % 4 == 0 and (feb % 100 != 0 or feb % 400 == 0)
    bad = ["%d-02-30T00:00:00Z" % feb, "%d-04-31T00:00:00Z" % apr,
           "%d-02-00T00:00:00Z" % feb, "%d-13-01T00:00:00Z" % (feb - 1),
           "%d-02-01T24:00:00Z" % feb, "%d-02-01T00:60:00Z" % feb,
           "%d-02-01T00:00:00+24:00" % feb, "%d-02-01" % feb, "%d-02-01T00:00:00" % feb]
    if not leap:
        bad.append("%d-02-29T00:00:00Z" % feb)
    for text in bad:
        body = sub_body()
        body["expirationDateTime"] = text
        expect_error(broker.rest("POST", SUBSCRIPTIONS, body), 400, "bad_request")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []
    body = sub_body()
    body["expirationDateTime"] = "%d-02-28T23:59:59Z" % feb
    assert broker.create(body).json()["expirationDateTime"] == \
        "%d-02-28T23:59:59.0000000Z" % feb


def test_expiration_under_the_minimum_is_raised_to_it(broker):
    body = sub_body(seconds=60)
    before = time.time()
    sub = broker.create(body).json()
    after = time.time()
    exp = parse_graph_time(sub["expirationDateTime"])
    assert before + DEFAULT_MIN_SECONDS - 1 <= exp <= after + DEFAULT_MIN_SECONDS + 1, sub
    assert broker.get_sub(sub["id"]).json()["expirationDateTime"] == sub["expirationDateTime"]
    # Just above the minimum: kept as requested.
    kept = int(time.time()) + DEFAULT_MIN_SECONDS + 60
    body = sub_body(resource="/dms/kept")
    body["expirationDateTime"] = iso_z(kept)
    assert broker.create(body).json()["expirationDateTime"] == graph_time(kept)


def test_client_state_of_128_characters_is_accepted_and_129_refused(broker):
    sub = broker.create(sub_body(resource="/dms/a", clientState="x" * 128)).json()
    assert sub["clientState"] == "x" * 128
    # Characters, not bytes: 128 two-byte characters are fine.
    umlauts = "ä" * 128
    sub = broker.create(sub_body(resource="/dms/b", clientState=umlauts)).json()
    assert broker.get_sub(sub["id"]).json()["clientState"] == umlauts
    expect_error(broker.rest("POST", SUBSCRIPTIONS,
                             sub_body(resource="/dms/c", clientState="x" * 129)),
                 400, "bad_request")
    assert len(broker.rest("GET", SUBSCRIPTIONS).json()["value"]) == 2


def test_body_over_16384_bytes_is_refused_413_and_16384_accepted(broker):
    expect_error(broker.rest("POST", SUBSCRIPTIONS, body_of_size(MAX_BODY + 1)), 413,
                 "too_large")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []
    resp = broker.rest("POST", SUBSCRIPTIONS, body_of_size(MAX_BODY))
    assert resp.status == 201, resp
    sub = resp.json()
    big = json.dumps({"expirationDateTime": iso_z(int(time.time()) + 7200),
                      "padding": "a" * MAX_BODY}).encode()
    expect_error(broker.rest("PATCH", sub_path(sub["id"]), big), 413, "too_large")


def test_chunked_request_body_is_answered(broker):
    """A body sent with Transfer-Encoding: chunked (HTTP/1.1 clients that stream) gets an
    answer at once: the subscription (201), or 411 length_required storing nothing."""
    data = json.dumps(sub_body(resource="/dms/chunked")).encode()
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % (
                SUBSCRIPTIONS, broker.http_port, broker.rest_token("anna"))).encode()
    chunks = b"28\r\n" + data[:40] + b"\r\n" + (b"%x\r\n" % (len(data) - 40)) + data[40:] \
        + b"\r\n0\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", broker.http_port), timeout=3)
    try:
        # One write, so that the broker may answer before the body without losing it.
        sock.sendall(head + chunks)
        raw = http.client.HTTPResponse(sock, method="POST")
        try:
            raw.begin()
            body = raw.read()
        except (OSError, http.client.HTTPException) as e:
            pytest.fail("chunked POST got no answer within 3 s: %r" % e)
    finally:
        sock.close()
    resp = RestResponse("POST", SUBSCRIPTIONS + " (chunked)", head + chunks, raw.status,
                        raw.headers, body)
    listed = broker.rest("GET", SUBSCRIPTIONS).json()["value"]
    if resp.status == 201:
        assert [s["id"] for s in listed] == [resp.json()["id"]]
    else:
        expect_error(resp, 411, "length_required")
        assert listed == []


def test_content_type_other_than_json_is_refused_415(broker):
    body = sub_body()
    expect_error(broker.rest("POST", SUBSCRIPTIONS, body, content_type="text/plain"), 415,
                 "unsupported_media_type")
    expect_error(broker.rest("POST", SUBSCRIPTIONS, body, content_type=None), 415,
                 "unsupported_media_type")
    expect_error(broker.rest("POST", SUBSCRIPTIONS, body,
                             content_type="application/x-www-form-urlencoded"), 415,
                 "unsupported_media_type")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []
    resp = broker.rest("POST", SUBSCRIPTIONS, body,
                       content_type="application/json; charset=utf-8")
    assert resp.status == 201, resp
    sub = resp.json()
    patch = {"expirationDateTime": iso_z(int(time.time()) + 7200)}
    expect_error(broker.rest("PATCH", sub_path(sub["id"]), patch, content_type="text/plain"),
                 415, "unsupported_media_type")


def test_identical_subscription_is_refused_409(broker):
    first = sub_body(resource="me/inbox", change_type="created,updated")
    broker.create(first)
    expect_error(broker.rest("POST", SUBSCRIPTIONS, first), 409, "conflict")
    # Identical after expansion, normalisation and with another expiration.
    for resource, change_type in (("/users/anna/inbox", "created,updated"),
                                  ("users/anna/inbox", "updated,created"),
                                  ("/me/inbox", "created,updated")):
        expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(
            resource=resource, change_type=change_type, seconds=7200)), 409, "conflict")
    # One difference is enough.
    broker.create(sub_body(resource="me/inbox", change_type="created"))
    broker.create(sub_body(resource="me/inbox/sub", change_type="created,updated"))
    broker.create(first, user="bert")
    assert len(broker.rest("GET", SUBSCRIPTIONS).json()["value"]) == 3


def test_identical_webhook_subscription_differs_by_notification_url(broker, receivers):
    a, b = receivers("a"), receivers("b")
    broker.create(sub_body(a.url()))
    expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(a.url())), 409, "conflict")
    broker.create(sub_body(b.url()))


@pytest.mark.broker_args("--max-subscriptions-per-user", 3)
def test_subscriptions_per_user_limit_is_refused_429(broker):
    ids = [broker.create(sub_body(resource="/dms/l%d" % i)).json()["id"] for i in range(3)]
    expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(resource="/dms/l3")), 429,
                 "limit_exceeded")
    assert len(broker.rest("GET", SUBSCRIPTIONS).json()["value"]) == 3
    broker.create(sub_body(resource="/dms/l3"), user="bert")
    assert broker.rest("DELETE", sub_path(ids[0])).status == 204
    broker.create(sub_body(resource="/dms/l3"))


@pytest.mark.broker_args("--webhook-allow-private", "--max-subscriptions-per-user", 3)
def test_subscriptions_per_user_limit_holds_for_concurrent_creations(broker, receivers):
    hook = receivers("hook")
    hook.validation_delay = 1.0  # both requests wait for their validation together
    for i in range(2):
        broker.create(sub_body(resource="/dms/l%d" % i))
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(broker.rest(
        "POST", SUBSCRIPTIONS, sub_body(hook.url(), resource="/dms/race%d" % i))),
        daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert sorted(r.status for r in results) == [201, 429], [str(r) for r in results]
    assert len(broker.rest("GET", SUBSCRIPTIONS).json()["value"]) == 3


def test_every_error_has_the_graph_shape_and_its_own_request_id(broker):
    sub = broker.create(sub_body()).json()
    responses = [
        (broker.rest("GET", SUBSCRIPTIONS, auth=False), 401, "unauthorized"),
        (broker.rest("GET", sub_path(str(uuid.uuid4()))), 404, "not_found"),
        (broker.rest("PUT", SUBSCRIPTIONS), 405, "method_not_allowed"),
        (broker.rest("POST", SUBSCRIPTIONS, b"{"), 400, "bad_json"),
        (broker.rest("POST", SUBSCRIPTIONS, sub_body(change_type="x")), 400,
         "bad_change_type"),
        (broker.rest("POST", SUBSCRIPTIONS, sub_body(resource="/a//b")), 400, "bad_path"),
        (broker.rest("POST", SUBSCRIPTIONS, sub_body()), 409, "conflict"),
        (broker.rest("POST", SUBSCRIPTIONS, body_of_size(MAX_BODY + 1)), 413, "too_large"),
        (broker.rest("POST", SUBSCRIPTIONS, sub_body(), content_type="text/plain"), 415,
         "unsupported_media_type"),
        (broker.rest("PATCH", sub_path(sub["id"]), {"resource": "/x"}), 400, "bad_request"),
    ]
    ids = []
    for resp, status, code in responses:
        err = expect_error(resp, status, code)
        ids.append(err["innerError"]["request-id"])
    assert len(set(ids)) == len(ids), "request ids repeat: %r" % ids


# ---- resource forms ----

def test_me_expansion_and_resource_without_leading_slash_deliver_to_the_owner(broker):
    async def body():
        subs = {}
        for name, resource in (("cal", "me/calendar"), ("task", "users/anna/tasks"),
                               ("note", "/me/notes")):
            sub = broker.create(sub_body(resource=resource, change_type="created,updated")
                                ).json()
            assert sub["resource"] == resource, "resource is returned as given"
            subs[name] = sub["id"]
        c = await broker.connect("anna")
        await c.ping()
        for resource, actor in (("/users/bert/calendar/e0", "bert-cal"),
                                ("/me/calendar/e0", "literal-me"),
                                ("/users/anna/calendar/e1", "cal"),
                                ("/users/anna/tasks/t1", "task"),
                                ("/users/anna/notes/n1", "note")):
            broker.publish_ok(resource=resource, actor=actor)
        got = await c.items_until_actor("note")
        assert [it["actor"] for it in got] == ["cal", "task", "note"], got
        for it in got:
            assert it["subscriptionId"] == subs[it["actor"]], it
        await c.close()

    run(body())


def test_websocket_subscription_refuses_a_lifecycle_url(broker):
    """websocket: subscriptions have no signing secret; their lifecycle goes over the socket."""
    body = sub_body("websocket:", resource="/dms/x",
                    lifecycleNotificationUrl="http://127.0.0.1:9/lifecycle")
    resp = broker.rest("POST", "/v1.0/subscriptions", body)
    expect_error(resp, 400, "bad_request")
    assert b"lifecycleNotificationUrl" in resp.body
    assert broker.rest("GET", "/v1.0/subscriptions").json()["value"] == []
