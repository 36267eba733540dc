"""Lifecycle of persistent subscriptions (schemas/subscriptions.md): reauthorizationRequired
before expiry and subscriptionRemoved at expiry, as signed POSTs to the
lifecycleNotificationUrl of a webhook subscription and as lifecycle frames to the owner's
sessions for a `websocket:` subscription; and delivery of `websocket:` subscriptions to
every live session of their owner.

The broker runs with --subscription-min-seconds 2 --reauthorization-lead 1, so a
subscription can expire within seconds. Times are checked as lower bounds only."""

import time

import pytest

from helpers import SUBSCRIPTIONS, expect_error, graph_time, iso_z, parse_graph_time, run, \
    sub_body
from receiver import check_signed, wait_for

MIN_SECONDS = 2
LEAD = 1
pytestmark = pytest.mark.broker_args(
    "--webhook-allow-private", "--subscription-min-seconds", MIN_SECONDS,
    "--reauthorization-lead", LEAD)

# 2026-11-27T10:00:00.123Z
EVENT_TIME_MS = 1795773600123
# Wall-clock slack for "not before": the broker and the test read the same clock, but the
# broker may count in whole seconds.
SLACK = 0.2
LIFECYCLE_MEMBERS = {"subscriptionId", "subscriptionExpirationDateTime", "tenantId",
                     "clientState", "lifecycleEvent"}


def lifecycle_item(req, sub):
    """The single item of a lifecycle POST, checked against the subscription."""
    check_signed(req, sub["signingSecret"])
    assert (req.headers.get("Content-Type") or "").split(";")[0].strip() == "application/json"
    body = req.json()
    assert set(body) == {"value"} and len(body["value"]) == 1, body
    item = body["value"][0]
    assert set(item) <= LIFECYCLE_MEMBERS, item
    assert item["subscriptionId"] == sub["id"], item
    return item


def test_webhook_subscription_gets_reauthorization_required_then_removed(broker, receivers):
    hook, life = receivers("hook"), receivers("life")
    before = time.time()
    sub = broker.create(sub_body(hook.url(), seconds=MIN_SECONDS, clientState="cs-life",
                                 lifecycleNotificationUrl=life.url("/life"))).json()
    exp = parse_graph_time(sub["expirationDateTime"])
    assert exp >= before + MIN_SECONDS - 1, sub
    # A twin without lifecycle URL expires the same way, silently.
    twin = broker.create(sub_body(hook.url("/twin"), seconds=MIN_SECONDS)).json()

    reauth, removed = life.wait_posts(2, timeout=MIN_SECONDS + 8)[:2]
    item = lifecycle_item(reauth, sub)
    assert item["lifecycleEvent"] == "reauthorizationRequired", item
    assert item["subscriptionExpirationDateTime"] == sub["expirationDateTime"]
    assert item["clientState"] == "cs-life"
    assert reauth.wall >= exp - LEAD - SLACK, "reauthorizationRequired %.2f s before expiry" % (
        exp - reauth.wall)
    item = lifecycle_item(removed, sub)
    assert item["lifecycleEvent"] == "subscriptionRemoved", item
    assert item["subscriptionExpirationDateTime"] == sub["expirationDateTime"]
    assert item["clientState"] == "cs-life"
    assert removed.wall >= exp - SLACK, "subscriptionRemoved %.2f s before expiry" % (
        exp - removed.wall)
    assert reauth.headers["webhook-id"] != removed.headers["webhook-id"]

    wait_for(lambda: broker.get_sub(sub["id"]).status == 404, timeout=5,
             what="GET 404 after subscriptionRemoved")
    expect_error(broker.get_sub(sub["id"]), 404, "not_found")
    wait_for(lambda: broker.get_sub(twin["id"]).status == 404, timeout=5,
             what="GET 404 of the twin")
    assert broker.rest("GET", SUBSCRIPTIONS).json()["value"] == []
    assert len(life.posts()) == 2, life.posts()
    assert hook.posts() == []


def test_renewal_rearms_reauthorization_required(broker, receivers):
    hook, life = receivers("hook"), receivers("life")
    sub = broker.create(sub_body(hook.url(), seconds=MIN_SECONDS,
                                 lifecycleNotificationUrl=life.url("/life"))).json()
    first = life.wait_posts(1, timeout=MIN_SECONDS + 8)[0]
    assert lifecycle_item(first, sub)["lifecycleEvent"] == "reauthorizationRequired"

    new = int(time.time()) + MIN_SECONDS + 2
    resp = broker.rest("PATCH", "%s/%s" % (SUBSCRIPTIONS, sub["id"]),
                       {"expirationDateTime": iso_z(new)})
    assert resp.status == 200, resp
    assert resp.json()["expirationDateTime"] == graph_time(new)

    posts = life.wait_posts(3, timeout=MIN_SECONDS + 10)
    events = [lifecycle_item(p, sub)["lifecycleEvent"] for p in posts]
    assert events == ["reauthorizationRequired", "reauthorizationRequired",
                      "subscriptionRemoved"], events
    for p in posts[1:]:
        assert p.json()["value"][0]["subscriptionExpirationDateTime"] == graph_time(new)
    assert posts[1].wall >= new - LEAD - SLACK
    assert posts[2].wall >= new - SLACK
    wait_for(lambda: broker.get_sub(sub["id"]).status == 404, timeout=5,
             what="GET 404 after subscriptionRemoved")


def test_websocket_subscription_delivers_to_every_session_of_the_owner_only(broker):
    async def body():
        sub = broker.create(sub_body("websocket:", resource="/dms/shared",
                                     change_type="created,updated", clientState="ws-cs",
                                     seconds=3600)).json()
        assert "signingSecret" not in sub, "websocket: subscriptions have no signingSecret"
        # The session's token has group bau, but the subscription was made without groups:
        # its reader check uses the groups stored with it.
        s1 = await broker.connect("anna", groups=("bau",))
        s2 = await broker.connect("anna")
        other = await broker.connect("bert")
        await other.subscribe("/control")
        await s1.ping()
        await s2.ping()

        broker.publish_ok(resource="/dms/shared/doc0", readers=["group:bau"], actor="group")
        broker.publish_ok(resource="/dms/shared/doc0", readers=["user:bert"], actor="bert")
        reply = broker.publish_ok(resource="/dms/shared/doc1", readers=["user:anna"],
                                  time=EVENT_TIME_MS, actor="shared")
        broker.publish_ok(resource="/control/1", actor="control")
        want = {
            "id": "%s-%d" % (sub["id"], reply["seq"]),
            "subscriptionId": sub["id"],
            "subscriptionExpirationDateTime": sub["expirationDateTime"],
            "clientState": "ws-cs",
            "changeType": "updated",
            "resource": "/dms/shared/doc1",
            "resourceData": {
                "@odata.type": "#herold.resource",
                "@odata.id": "/dms/shared/doc1",
                "id": "doc1",
            },
            "eventTime": "2026-11-27T10:00:00.123Z",
            "actor": "shared",
        }
        for session in (s1, s2):
            item = await session.next_item()
            assert item == want, item
        got = await other.items_until_actor("control")
        assert [it["actor"] for it in got] == ["control"], got
        for c in (s1, s2, other):
            await c.close()

    run(body())


def test_websocket_subscription_sends_lifecycle_frames_and_is_removed_at_expiry(broker):
    async def body():
        owner = await broker.connect("anna")
        stranger = await broker.connect("bert")
        await owner.ping()
        await stranger.ping()
        before = time.time()
        sub = broker.create(sub_body("websocket:", resource="/dms/x",
                                     seconds=MIN_SECONDS)).json()
        assert "signingSecret" not in sub
        exp = parse_graph_time(sub["expirationDateTime"])
        assert exp >= before + MIN_SECONDS - 1, sub

        frames = []
        deadline = time.monotonic() + MIN_SECONDS + 8
        while time.monotonic() < deadline:
            frame = await owner.answer()
            frames.append((time.time(), frame))
            if frame.get("lifecycleEvent") == "subscriptionRemoved":
                break
        got = [f for _, f in frames]
        assert [f.get("op") for f in got] == ["lifecycle", "lifecycle"], got
        assert [f.get("lifecycleEvent") for f in got] == [
            "reauthorizationRequired", "subscriptionRemoved"], got
        assert all(f.get("subscriptionId") == sub["id"] for f in got), got
        assert frames[0][0] >= exp - LEAD - SLACK
        assert frames[1][0] >= exp - SLACK

        wait_for(lambda: broker.get_sub(sub["id"]).status == 404, timeout=5,
                 what="GET 404 after subscriptionRemoved")
        # The sessions stay up; the stranger got no lifecycle frame (ping's answer would be
        # the lifecycle frame and fail the ref check).
        await owner.ping()
        await stranger.ping()
        # Nothing is delivered for the removed subscription.
        for c in (owner, stranger):
            await c.subscribe("/control")
        broker.publish_ok(resource="/dms/x/1", actor="after-expiry")
        broker.publish_ok(resource="/control/1", actor="control")
        for c in (owner, stranger):
            assert [it["actor"] for it in await c.items_until_actor("control")] == [
                "control"]
        for c in (owner, stranger):
            await c.close()

    run(body())
