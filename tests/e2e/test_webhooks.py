"""Webhooks (schemas/subscriptions.md): the validation handshake at creation, and delivery
to a notificationUrl: the request format and Standard Webhooks signature, the reader check,
retries, Retry-After, 410 Gone, giving up after the retry horizon, independence of
endpoints, and batching.

The receivers are real HTTP servers on 127.0.0.1 (receiver.py), so the broker runs with
--webhook-allow-private and short retry timings. To prove that an item was NOT delivered, a
test publishes a control event afterwards: a target's items leave in order, so once the
control item has arrived the forbidden one can no longer come."""

import base64
import email.utils
import hashlib
import hmac
import threading
import time

import pytest

from helpers import SUBSCRIPTIONS, expect_error, iso_z, run, sub_body
from receiver import Reply, check_signed, wait_for

pytestmark = pytest.mark.broker_args(
    "--webhook-allow-private", "--webhook-first-retry-ms", 200, "--webhook-max-retry-ms", 500)

# 2026-11-27T10:00:00.123Z
EVENT_TIME_MS = 1795773600123
VALIDATION_TIMEOUT = 10.0


def actors(items):
    return [it.get("actor") for it in items]


def item_id(sub, reply):
    return "%s-%d" % (sub["id"], reply["seq"])


# ---- validation ----

def test_validation_handshake_with_the_echoed_token_creates_the_subscription(broker,
                                                                            receivers):
    hook = receivers("hook")
    first = broker.create(sub_body(hook.url("/hook"), resource="/dms/a")).json()
    second = broker.create(sub_body(hook.url("/hook"), resource="/dms/b")).json()
    vals = hook.validations()
    assert len(vals) == 2, hook.requests
    tokens = [v.query["validationToken"] for v in vals]
    assert all(len(t) == 1 and t[0] for t in tokens), tokens
    assert tokens[0] != tokens[1], "every validation has its own token"
    for v in vals:
        assert v.method == "POST" and v.path == "/hook", v
        assert (v.headers.get("Content-Type") or "").split(";")[0].strip() == "text/plain"
    listed = broker.rest("GET", SUBSCRIPTIONS).json()["value"]
    assert [s["id"] for s in listed] == [first["id"], second["id"]]


@pytest.mark.parametrize("answer", ["wrong", "newline", 404, 500])
def test_validation_failure_refuses_400_and_stores_nothing(broker, receivers, answer):
    hook = receivers("hook")
    hook.validation = answer
    err = expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(hook.url())), 400,
                       "bad_request")
    print("validation answered %r: %r" % (answer, err["message"]))
    assert len(hook.validations()) == 1
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []
    # Nothing stored means nothing delivered either.
    hook.validation = "echo"
    control = receivers("control")
    broker.create(sub_body(control.url(), resource="/dms"))
    broker.publish_ok(resource="/dms/cabinets/bau/1", actor="control")
    control.wait_items(1)
    assert hook.posts() == []


def test_validation_redirect_is_not_followed(broker, receivers):
    hook, target = receivers("hook"), receivers("target")
    hook.validation = ("redirect", target.url("/elsewhere"))
    expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(hook.url())), 400, "bad_request")
    assert len(hook.validations()) == 1
    assert target.requests == [], "the redirect was followed"
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


def test_validation_timeout_after_10_seconds_refuses_400(broker, receivers):
    hook = receivers("hook")
    hook.validation_delay = VALIDATION_TIMEOUT + 2
    started = time.monotonic()
    resp = broker.rest("POST", SUBSCRIPTIONS, sub_body(hook.url()))
    elapsed = time.monotonic() - started
    expect_error(resp, 400, "bad_request")
    assert VALIDATION_TIMEOUT - 1 <= elapsed <= VALIDATION_TIMEOUT + 1.5, \
        "answered after %.2f s" % elapsed
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


def test_failing_lifecycle_url_validation_refuses_400(broker, receivers):
    hook, life = receivers("hook"), receivers("life")
    life.validation = "wrong"
    expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(
        hook.url(), lifecycleNotificationUrl=life.url("/life"))), 400, "bad_request")
    assert len(life.validations()) == 1, "the lifecycle URL is validated too"
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []
    # A websocket: subscription takes no lifecycle URL at all: refused before any contact.
    expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(
        "websocket:", lifecycleNotificationUrl=life.url("/life"))), 400, "bad_request")
    assert len(life.validations()) == 1
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


@pytest.mark.broker_args()
def test_private_target_without_allow_private_is_refused_403(broker, receivers):
    hook = receivers("hook")
    for url in (hook.url("/hook"), "http://10.1.2.3/hook", "http://192.168.0.10:8080/hook",
                "http://[::1]:%d/hook" % hook.port, "http://169.254.169.254/latest"):
        expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(url)), 403, "forbidden")
    # A private lifecycle URL beside a notification URL that passes the static check (a
    # name, checked only at connect time): refused before anything is contacted.
    expect_error(broker.rest("POST", SUBSCRIPTIONS, sub_body(
        "http://herold-test.invalid/hook", lifecycleNotificationUrl=hook.url("/life"))), 403,
        "forbidden")
    # Other spellings of the loopback address and names that resolve to it: refused
    # (403 when recognised in the URL, 400 when the connection is refused), never contacted.
    for host in ("localhost", "127.1", "2130706433", "0x7f000001", "0.0.0.0",
                 "[::ffff:127.0.0.1]", "LOCALHOST"):
        resp = broker.rest("POST", SUBSCRIPTIONS, sub_body(
            "http://%s:%d/hook" % (host, hook.port), resource="/dms/%s" % host.strip("[]")))
        assert resp.status in (400, 403), resp
    assert hook.requests == [], "a refused target is never contacted"
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []
    broker.create(sub_body("websocket:"))


def test_slow_validation_does_not_block_other_requests_or_deliveries(broker, receivers):
    slow = receivers("slow")
    slow.validation_delay = 3.0
    result = {}

    def create():
        result["resp"] = broker.rest("POST", SUBSCRIPTIONS, sub_body(slow.url()))
        result["done"] = time.monotonic()

    creator = threading.Thread(target=create, daemon=True)
    creator.start()
    slow.wait_for(slow.validations, what="the validation request")

    async def others():
        listed = broker.rest("GET", SUBSCRIPTIONS)
        assert listed.status == 200 and listed.json()["value"] == [], \
            "nothing is stored before validation: %s" % listed
        rest_done = time.monotonic()
        c = await broker.connect("bert")
        await c.subscribe("/fast")
        broker.publish_ok(resource="/fast/1", actor="fast")
        item = await c.next_item()
        assert item["actor"] == "fast"
        ws_done = time.monotonic()
        await c.close()
        return rest_done, ws_done

    rest_done, ws_done = run(others())
    creator.join(VALIDATION_TIMEOUT + 5)
    assert not creator.is_alive()
    assert result["resp"].status == 201, result["resp"]
    assert rest_done < result["done"], "the REST request waited for the validation"
    assert ws_done < result["done"], "the WebSocket delivery waited for the validation"


def test_concurrent_identical_creations_store_one(broker, receivers):
    """The 409 rule must hold while validations are in flight: two identical requests
    that both wait for their validation must not both be stored."""
    hook = receivers("hook")
    hook.validation_delay = 1.0
    body = sub_body(hook.url())
    results = []

    def create():
        results.append(broker.rest("POST", SUBSCRIPTIONS, body))

    threads = [threading.Thread(target=create, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(VALIDATION_TIMEOUT + 5)
    statuses = sorted(r.status for r in results)
    assert statuses == [201, 409], [str(r) for r in results]
    expect_error([r for r in results if r.status == 409][0], 409, "conflict")
    assert len(broker.rest("GET", SUBSCRIPTIONS).json()["value"]) == 1


def test_shutdown_during_a_slow_validation_exits_cleanly(broker, receivers):
    hook = receivers("hook")
    hook.validation_delay = VALIDATION_TIMEOUT + 2
    outcome = []

    def create():
        try:
            outcome.append(broker.rest("POST", SUBSCRIPTIONS, sub_body(hook.url())).status)
        except Exception as e:  # the connection may be closed without an answer
            outcome.append(type(e).__name__)

    creator = threading.Thread(target=create, daemon=True)
    creator.start()
    hook.wait_for(hook.validations, what="the validation request")
    started = time.monotonic()
    rc = broker.stop()
    print("stopped %.2f s after SIGTERM during a validation; the client got %r" % (
        time.monotonic() - started, outcome))
    assert rc == 0, rc
    creator.join(5)
    assert outcome and outcome[0] != 201, outcome


# ---- delivery ----

def test_webhook_delivers_the_item_signed_with_the_subscription_secret(broker, receivers):
    hook = receivers("hook")
    sub = broker.create(sub_body(hook.url("/hook"), resource="/dms/cabinets/bau",
                                 change_type="created,updated", clientState="cs-42")).json()
    reply = broker.publish(
        id="evt-4711", source="dms", type="created", resource="/dms/cabinets/bau/documents/4711",
        previous="/dms/cabinets/eingang/documents/4711", time=EVENT_TIME_MS, actor="user:bert",
        kind="document", tenant="stadt-musterhausen", readers=["user:anna"],
        data={"title": "Bauantrag"})
    assert reply["ok"] is True, reply

    req = hook.wait_posts(1)[0]
    assert req.method == "POST" and req.path == "/hook" and req.query == {}, req
    assert (req.headers.get("Content-Type") or "").split(";")[0].strip() == "application/json"
    body = req.json()
    assert set(body) == {"value"} and len(body["value"]) == 1, body
    assert body["value"][0] == {
        "id": item_id(sub, reply),
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": sub["expirationDateTime"],
        "clientState": "cs-42",
        "changeType": "created",
        "resource": "/dms/cabinets/bau/documents/4711",
        "resourceData": {
            "@odata.type": "#herold.document",
            "@odata.id": "/dms/cabinets/bau/documents/4711",
            "id": "4711",
        },
        "tenantId": "stadt-musterhausen",
        "previousResource": "/dms/cabinets/eingang/documents/4711",
        "eventTime": "2026-11-27T10:00:00.123Z",
        "actor": "user:bert",
    }

    # The Standard Webhooks signature, computed here from the creation response alone.
    msg_id = req.headers["webhook-id"]
    timestamp = req.headers["webhook-timestamp"]
    assert msg_id.startswith("msg_") and timestamp.isdigit(), dict(req.headers)
    assert abs(int(timestamp) - time.time()) < 60
    key = base64.b64decode(sub["signingSecret"][len("whsec_"):])
    message = "%s.%s.%s" % (msg_id, timestamp, req.body.decode())
    mac = hmac.new(key, message.encode(), hashlib.sha256).digest()
    assert req.headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    other_key = hashlib.sha256(key).digest()
    assert hmac.new(other_key, message.encode(), hashlib.sha256).digest() != mac


def test_webhook_without_client_state_omits_it_and_each_subscription_has_its_own_secret(
        broker, receivers):
    hook = receivers("hook")
    a = broker.create(sub_body(hook.url("/a"), resource="/files")).json()
    b = broker.create(sub_body(hook.url("/b"), resource="/files")).json()
    assert a["signingSecret"] != b["signingSecret"]
    reply = broker.publish_ok(resource="/files/share/x.txt", type="created", time=1000)
    hook.wait_posts(1, "/a")
    hook.wait_posts(1, "/b")
    for sub, path in ((a, "/a"), (b, "/b")):
        req = hook.posts(path)[0]
        check_signed(req, sub["signingSecret"])
        item = req.json()["value"][0]
        assert "clientState" not in item
        assert item["id"] == item_id(sub, reply)
        assert item["resourceData"]["@odata.type"] == "#herold.resource"


def test_include_resource_data_merges_the_event_data_into_resource_data(broker, receivers):
    hook = receivers("hook")
    rich = broker.create(sub_body(hook.url("/rich"), resource="/dms",
                                  includeResourceData=True)).json()
    lean = broker.create(sub_body(hook.url("/lean"), resource="/dms")).json()
    assert rich["includeResourceData"] is True and lean["includeResourceData"] is False
    data = {"title": "Bauantrag", "pages": 12, "tags": ["a", "b"], "nested": {"x": None},
            "id": "not-the-id", "@odata.type": "not-the-type", "@odata.id": "/not/this"}
    broker.publish_ok(resource="/dms/doc/4711", kind="document", data=data)
    broker.publish_ok(resource="/dms/doc/4712")
    basic = [{"@odata.type": "#herold.document", "@odata.id": "/dms/doc/4711", "id": "4711"},
             {"@odata.type": "#herold.resource", "@odata.id": "/dms/doc/4712", "id": "4712"}]
    rich_items, lean_items = hook.wait_items(2, "/rich"), hook.wait_items(2, "/lean")
    assert [it["resourceData"] for it in lean_items] == basic
    assert rich_items[0]["resourceData"] == dict(
        basic[0], title="Bauantrag", pages=12, tags=["a", "b"], nested={"x": None}), \
        "data merged, never overriding @odata.type, @odata.id or id"
    assert rich_items[1]["resourceData"] == basic[1], "an event without data stays lean"


def test_webhook_reader_check_delivers_only_what_the_owner_may_read(broker, receivers):
    anna, bert = receivers("anna"), receivers("bert")
    broker.create(sub_body(anna.url(), resource="/dms"))
    broker.create(sub_body(bert.url(), resource="/dms"), user="bert", groups=("bau",))
    for readers, actor in ((["user:bert"], "bert-only"), (["group:bau"], "bau-group"),
                           (["user:anna"], "anna-only"), (["*"], "everyone")):
        broker.publish_ok(resource="/dms/d/1", readers=readers, actor=actor)
    assert actors(anna.wait_for(lambda: (lambda i: i if "everyone" in actors(i) else None)(
        anna.items()))) == ["anna-only", "everyone"]
    assert actors(bert.wait_for(lambda: (lambda i: i if "everyone" in actors(i) else None)(
        bert.items()))) == ["bert-only", "bau-group", "everyone"]


def test_patch_and_reauthorize_refresh_the_owner_groups(broker, receivers):
    hook = receivers("hook")
    sub = broker.create(sub_body(hook.url(), resource="/dms"), groups=("bau",)).json()
    path = "%s/%s" % (SUBSCRIPTIONS, sub["id"])

    def published(actor, readers):
        broker.publish_ok(resource="/dms/x", readers=readers, actor=actor)

    def until(actor):
        return actors(hook.wait_for(lambda: (lambda i: i if actor in actors(i) else None)(
            hook.items()), what="item " + actor))

    published("g1", ["group:bau"])
    assert until("g1") == ["g1"]
    # A PATCH with a token without groups: the stored groups become none.
    resp = broker.rest("PATCH", path, {"expirationDateTime": iso_z(int(time.time()) + 7200)})
    assert resp.status == 200, resp
    published("g2", ["group:bau"])
    published("c1", ["user:anna"])
    assert until("c1") == ["g1", "c1"]
    # reauthorize with a token carrying the group again.
    resp = broker.rest("POST", path + "/reauthorize", groups=("bau",))
    assert resp.status == 204, resp
    published("g3", ["group:bau"])
    assert until("g3") == ["g1", "c1", "g3"]


def test_deleted_subscription_gets_no_more_notifications(broker, receivers):
    gone, control = receivers("gone"), receivers("control")
    sub = broker.create(sub_body(gone.url(), resource="/dms")).json()
    broker.create(sub_body(control.url(), resource="/dms"))
    broker.publish_ok(resource="/dms/1", actor="before")
    gone.wait_items(1)
    assert broker.rest("DELETE", "%s/%s" % (SUBSCRIPTIONS, sub["id"])).status == 204
    broker.publish_ok(resource="/dms/2", actor="after")
    control.wait_for(lambda: "after" in actors(control.items()), what="the control item")
    # The control target got the later event; give the deleted one the same chance.
    time.sleep(0.2)
    assert actors(gone.items()) == ["before"]


def test_delete_stops_the_retries_of_a_failing_subscription(broker, receivers):
    hook, life = receivers("hook"), receivers("life")
    hook.default = Reply(503)
    sub = broker.create(sub_body(hook.url(), lifecycleNotificationUrl=life.url("/life"))
                        ).json()
    broker.publish_ok(resource="/dms/cabinets/bau/1")
    hook.wait_posts(2)
    assert broker.rest("DELETE", "%s/%s" % (SUBSCRIPTIONS, sub["id"])).status == 204
    # An attempt may have been under way; after it, nothing. One second is two maximum
    # retry intervals (--webhook-max-retry-ms 500).
    settled = len(hook.posts()) + 1
    time.sleep(1.0)
    assert len(hook.posts()) <= settled, "retries went on after DELETE: %r" % hook.posts()
    assert life.posts() == [], "a deleted subscription got lifecycle notifications"


def test_retry_after_503_sends_the_same_batch_again(broker, receivers):
    hook = receivers("hook")
    hook.script(503, 200)
    sub = broker.create(sub_body(hook.url())).json()
    reply = broker.publish_ok(resource="/dms/cabinets/bau/1", actor="retried")
    first, second = hook.wait_posts(2)[:2]
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.arrived >= first.finished, "the retry came after the failed attempt"
    for req in (first, second):
        check_signed(req, sub["signingSecret"])
    assert [it["id"] for it in second.json()["value"]] == [item_id(sub, reply)]

    # The next event is a new batch with a new webhook-id, sent once.
    reply2 = broker.publish_ok(resource="/dms/cabinets/bau/2", actor="next")
    third = hook.wait_posts(3)[2]
    assert third.headers["webhook-id"] != first.headers["webhook-id"]
    assert [it["id"] for it in third.json()["value"]] == [item_id(sub, reply2)]
    assert len(hook.posts()) == 3


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_header_is_honoured(broker, receivers, status):
    hook = receivers("hook")
    hook.script((status, {"Retry-After": "1"}), 200)
    sub = broker.create(sub_body(hook.url())).json()
    broker.publish_ok(resource="/dms/cabinets/bau/1")
    first, second = hook.wait_posts(2)[:2]
    gap = second.arrived - first.finished
    # --webhook-first-retry-ms is 200: without Retry-After the retry would come sooner.
    assert gap >= 0.9, "retry %.3f s after a %d with Retry-After: 1" % (gap, status)
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    # The timestamp is that of each attempt, and each attempt is signed anew.
    assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"])
    check_signed(second, sub["signingSecret"])


def test_retry_after_as_an_http_date_is_honoured(broker, receivers):
    hook = receivers("hook")
    broker.create(sub_body(hook.url()))
    # An HTTP date has whole seconds: two seconds ahead is at least one second ahead.
    hook.script(Reply(503, {"Retry-After": email.utils.formatdate(time.time() + 2,
                                                                  usegmt=True)}), 200)
    broker.publish_ok(resource="/dms/cabinets/bau/1")
    first, second = hook.wait_posts(2)[:2]
    gap = second.arrived - first.finished
    assert gap >= 0.9, "retry %.3f s after Retry-After: %s" % (
        gap, first.headers.get("webhook-timestamp"))


def test_any_2xx_is_a_delivery(broker, receivers):
    hook = receivers("hook")
    sub = broker.create(sub_body(hook.url())).json()
    ids = []
    for status in (200, 202, 204):
        hook.default = Reply(status)
        reply = broker.publish_ok(resource="/dms/cabinets/bau/%d" % status)
        ids.append(item_id(sub, reply))
        hook.wait_for(lambda: ids[-1] in [i["id"] for i in hook.items()])
    reply = broker.publish_ok(resource="/dms/cabinets/bau/control")
    ids.append(item_id(sub, reply))
    hook.wait_for(lambda: ids[-1] in [i["id"] for i in hook.items()])
    assert [i["id"] for i in hook.items()] == ids, "a 2xx answer was retried"


def test_redirect_answer_is_not_followed_but_retried(broker, receivers):
    hook, target = receivers("hook"), receivers("target")
    sub = broker.create(sub_body(hook.url())).json()
    hook.script(Reply(307, {"Location": target.url("/elsewhere")}), 200)
    broker.publish_ok(resource="/dms/cabinets/bau/1")
    first, second = hook.wait_posts(2)[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    check_signed(second, sub["signingSecret"])
    assert target.requests == [], "the redirect was followed"


def test_items_carry_the_renewed_expiration(broker, receivers):
    hook = receivers("hook")
    sub = broker.create(sub_body(hook.url(), seconds=3600)).json()
    new = int(time.time()) + 7200
    resp = broker.rest("PATCH", "%s/%s" % (SUBSCRIPTIONS, sub["id"]),
                       {"expirationDateTime": iso_z(new)})
    assert resp.status == 200, resp
    broker.publish_ok(resource="/dms/cabinets/bau/1")
    item = hook.wait_items(1)[0]
    assert item["subscriptionExpirationDateTime"] == resp.json()["expirationDateTime"]


def test_410_gone_deletes_the_subscription(broker, receivers):
    hook = receivers("hook")
    hook.script(410)
    sub = broker.create(sub_body(hook.url())).json()
    broker.publish_ok(resource="/dms/cabinets/bau/1")
    hook.wait_posts(1)
    wait_for(lambda: broker.get_sub(sub["id"]).status == 404, what="GET 404 after 410")
    expect_error(broker.get_sub(sub["id"]), 404, "not_found")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []


def test_failing_endpoint_is_retried_until_it_answers_and_misses_nothing(broker, receivers):
    """No give-up: acked events are never dropped for a failing endpoint. Retries go on past
    the four hours Graph would wait (here: many maximum intervals), and once the endpoint
    answers it gets every item, in order, and no `missed`."""
    hook, life = receivers("hook"), receivers("life")
    hook.default = Reply(503)
    sub = broker.create(sub_body(hook.url(), clientState="cs-m",
                                 lifecycleNotificationUrl=life.url("/life"))).json()
    replies = [broker.publish_ok(resource="/dms/cabinets/bau/%d" % i) for i in range(5)]
    hook.wait_posts(6, timeout=10)  # about 3 s of failures at --webhook-max-retry-ms 500
    attempts = hook.posts()
    assert len({a.headers["webhook-id"] for a in attempts[:2]}) == 1, "a retry is the same batch"
    hook.default = Reply(200)
    wanted = [item_id(sub, r) for r in replies]
    hook.wait_for(lambda: all(w in [i["id"] for i in hook.delivered_items()] for w in wanted),
                  what="every item once the endpoint answers")
    delivered = [i["id"] for i in hook.delivered_items()]
    assert delivered == wanted, "in order, each once"
    assert life.posts() == [], "nothing was missed: %r" % life.posts()
    assert broker.get_sub(sub["id"]).status == 200



def test_slow_endpoint_does_not_delay_a_healthy_one(broker, receivers):
    slow, healthy = receivers("slow"), receivers("healthy")
    slow.default = Reply(200, delay=2.0)
    broker.create(sub_body(slow.url(), resource="/slow"))
    broker.create(sub_body(healthy.url(), resource="/fast"))
    # First occupy the slow endpoint: its first request is held for 2 s.
    broker.publish_ok(resource="/slow/first")
    slow.wait_posts(1)
    n = 10
    published = {}
    for i in range(n):
        resource = "/%s/%d" % ("slow" if i % 2 == 0 else "fast", i)
        published[resource] = time.monotonic()
        broker.publish_ok(resource=resource)
    healthy.wait_items(n // 2)
    slow.wait_items(n // 2 + 1, timeout=20)
    healthy_posts = healthy.posts()
    healthy_last = max(p.arrived for p in healthy_posts)
    slow_last = max(p.arrived for p in slow.posts())
    assert healthy_last < slow_last, \
        "the healthy endpoint's last request came %.3f s after the slow one's" % (
            healthy_last - slow_last)

    delays = sorted(p.arrived - published[it["resource"]]
                    for p in healthy_posts for it in p.json()["value"])
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    print("healthy endpoint: %d items in %d POSTs, per-event delay p99 %.1f ms (max %.1f ms); "
          "slow endpoint: %d POSTs, last %.2f s after the healthy one's last" % (
              len(delays), len(healthy_posts), p99 * 1000, delays[-1] * 1000,
              len(slow.posts()), slow_last - healthy_last))


def test_pipelined_events_are_batched_in_order(broker, receivers):
    hook = receivers("hook")
    sub = broker.create(sub_body(hook.url(), resource="/dms/batch")).json()
    events = [broker.event(resource="/dms/batch/%d" % i, actor="b%d" % i) for i in range(50)]
    replies = broker.publish_many(events)
    assert all(r.get("ok") for r in replies), replies
    items = hook.wait_items(50)
    assert len(items) == 50, items
    posts = hook.posts()
    assert len(posts) < 50, "50 events in %d POSTs: not batched" % len(posts)
    assert all(1 <= len(p.json()["value"]) <= 100 for p in posts)
    assert [it["id"] for it in items] == [item_id(sub, r) for r in replies]
    assert actors(items) == ["b%d" % i for i in range(50)]
    seqs = [int(it["id"].rsplit("-", 1)[1]) for it in items]
    assert seqs == sorted(seqs)
    for p in posts:
        check_signed(p, sub["signingSecret"])
    print("50 events in %d POSTs: %r" % (len(posts), [len(p.json()["value"]) for p in posts]))


@pytest.mark.broker_args("--webhook-allow-private", "--webhook-batch-items", 5)
def test_batch_items_flag_bounds_the_batch_size(broker, receivers):
    hook = receivers("hook")
    sub = broker.create(sub_body(hook.url(), resource="/dms/batch")).json()
    replies = broker.publish_many(
        [broker.event(resource="/dms/batch/%d" % i) for i in range(23)])
    items = hook.wait_items(23)
    sizes = [len(p.json()["value"]) for p in hook.posts()]
    assert max(sizes) <= 5, sizes
    assert [it["id"] for it in items] == [item_id(sub, r) for r in replies]
