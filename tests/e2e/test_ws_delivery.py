"""Delivery over the WebSocket: what reaches whom, and what each item says.

To prove that an event was NOT delivered, a test publishes it first and then a control
event the same client does receive: the broker handles events in sequence order and a
connection's frames leave in order, so once the control item has arrived the forbidden
one can no longer come. Events are told apart by their actor."""

import asyncio
import re

import pytest
import websockets

from helpers import MAX_BATCH_ITEMS, graph_time, jwt_claims, ms_time, run

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)

# 2026-11-27T10:00:00.123Z
EVENT_TIME_MS = 1795773600123


def actors(items):
    return [it.get("actor") for it in items]


def test_delivery_one_event_every_item_field_matches_what_was_published(broker):
    async def body():
        c = await broker.connect("anna")
        answer = await c.subscribe("/dms/cabinets/bau", "created,updated")
        exp = jwt_claims(c.token)["exp"]
        assert answer["op"] == "subscribed"
        assert UUID_RE.match(answer["subscriptionId"]), answer
        assert answer["resource"] == "/dms/cabinets/bau"
        assert answer["changeType"] == "created,updated"
        assert answer["expirationDateTime"] == graph_time(exp)

        reply = broker.publish(
            id="evt-4711", source="dms", type="created",
            resource="/dms/cabinets/bau/documents/4711",
            previous="/dms/cabinets/eingang/documents/4711",
            time=EVENT_TIME_MS, actor="user:bert", kind="document", tenant="stadt-musterhausen",
            readers=["user:anna"], data={"title": "Bauantrag"})
        assert reply["ok"] is True and reply["id"] == "evt-4711", reply
        assert isinstance(reply["seq"], int) and reply["seq"] > 0

        frame = await c.recv_frame()
        assert frame["op"] == "notify", frame
        assert isinstance(frame["cursor"], str) and frame["cursor"] != ""
        assert frame["cursor"] == str(reply["seq"]), "cursor is the seq of the last item"
        assert len(frame["value"]) == 1, frame
        assert frame["value"][0] == {
            "id": "%s-%d" % (answer["subscriptionId"], reply["seq"]),
            "subscriptionId": answer["subscriptionId"],
            "subscriptionExpirationDateTime": graph_time(exp),
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
        assert ms_time(EVENT_TIME_MS) == "2026-11-27T10:00:00.123Z"
        await c.close()

    run(body())


def test_delivery_without_optional_fields_omits_them_and_uses_herold_resource_type(broker):
    async def body():
        c = await broker.connect("anna")
        answer = await c.subscribe("/files")
        assert answer["changeType"] == "created,updated,deleted", "default is every type"
        reply = broker.publish_ok(type="deleted", resource="/files/share/a.txt", time=1000)
        item = await c.next_item()
        assert item == {
            "id": "%s-%d" % (answer["subscriptionId"], reply["seq"]),
            "subscriptionId": answer["subscriptionId"],
            "subscriptionExpirationDateTime": answer["expirationDateTime"],
            "changeType": "deleted",
            "resource": "/files/share/a.txt",
            "resourceData": {
                "@odata.type": "#herold.resource",
                "@odata.id": "/files/share/a.txt",
                "id": "a.txt",
            },
            "eventTime": "1970-01-01T00:00:01.000Z",
        }
        await c.close()

    run(body())


def test_subscription_covers_its_path_and_everything_beneath_but_not_siblings_by_prefix(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/dms/cabinets/bau")
        for resource, actor in [
            ("/dms/cabinets/bauamt/x", "sibling-prefix"),
            ("/dms/cabinets", "parent"),
            ("/dms/cabinets/bau/documents/1", "beneath"),
            ("/dms/cabinets/ba", "shorter-prefix"),
            ("/dms/other/bau/documents/1", "other-branch"),
            ("/dms/cabinets/bau", "itself"),
        ]:
            broker.publish_ok(resource=resource, actor=actor)
        got = await c.items_until_actor("itself")
        assert actors(got) == ["beneath", "itself"]
        await c.close()

    run(body())


def test_wildcard_matches_exactly_one_segment(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/calendar/*/events")
        for resource, actor in [
            ("/calendar/anna/events/1", "one-segment-beneath"),
            ("/calendar/anna/x/events/1", "two-segments"),
            ("/calendar/events", "zero-segments"),
            ("/calendar/anna/tasks/1", "other-leaf"),
            ("/calendar/bert/events", "one-segment-itself"),
        ]:
            broker.publish_ok(resource=resource, actor=actor)
        got = await c.items_until_actor("one-segment-itself")
        assert actors(got) == ["one-segment-beneath", "one-segment-itself"]
        await c.close()

    run(body())


def test_change_type_filter_delivers_only_listed_types(broker):
    async def body():
        c = await broker.connect("anna")
        answer = await c.subscribe("/dms", "created,deleted")
        assert answer["changeType"] == "created,deleted"
        broker.publish_ok(resource="/dms/a", type="updated", actor="u1")
        broker.publish_ok(resource="/dms/a", type="created", actor="c1")
        broker.publish_ok(resource="/dms/a", type="updated", actor="u2")
        broker.publish_ok(resource="/dms/a", type="deleted", actor="d1")
        got = await c.items_until_actor("d1")
        assert actors(got) == ["c1", "d1"]
        assert [it["changeType"] for it in got] == ["created", "deleted"]
        await c.close()

    run(body())


def test_reader_check_user_group_and_star_and_non_reader_never_hears(broker):
    async def body():
        anna = await broker.connect("anna")                        # user:anna
        carl = await broker.connect("carl", groups=("bau", "it"))  # group:bau, group:it
        bob = await broker.connect("bob")                          # reads only what * allows
        for c in (anna, carl, bob):
            await c.subscribe("/dms")
        for readers, actor in [
            (["user:anna"], "only-anna"),
            (["group:bau"], "only-group-bau"),
            (["group:it", "user:zoe"], "only-group-it"),
            (["group:anna", "user:bau", "user:carl-x"], "nobody-lookalikes"),
            ([], "nobody-empty"),
            (["user:zoe", "*"], "everyone"),
            (["*"], "end"),
        ]:
            broker.publish_ok(resource="/dms/doc", readers=readers, actor=actor)
        assert actors(await anna.items_until_actor("end")) == ["only-anna", "everyone", "end"]
        assert actors(await carl.items_until_actor("end")) == [
            "only-group-bau", "only-group-it", "everyone", "end"]
        assert actors(await bob.items_until_actor("end")) == ["everyone", "end"]
        for c in (anna, carl, bob):
            await c.close()

    run(body())


def test_me_prefix_expands_to_the_token_user(broker):
    async def body():
        c = await broker.connect("anna")
        a1 = await c.subscribe("me/calendar")
        a2 = await c.subscribe("/me/inbox")
        assert a1["resource"] == "/users/anna/calendar"
        assert a2["resource"] == "/users/anna/inbox"
        bert = await broker.connect("bert")
        b1 = await bert.subscribe("me/calendar")
        assert b1["resource"] == "/users/bert/calendar"

        broker.publish_ok(resource="/users/bert/calendar/e1", readers=["*"], actor="bert-cal")
        broker.publish_ok(resource="/me/calendar/e1", readers=["*"], actor="literal-me")
        broker.publish_ok(resource="/users/anna/calendar/e1", readers=["user:anna"],
                          actor="anna-cal")
        broker.publish_ok(resource="/users/anna/inbox/m1", readers=["user:anna"],
                          actor="anna-inbox")
        got = await c.items_until_actor("anna-inbox")
        assert actors(got) == ["anna-cal", "anna-inbox"]
        assert got[0]["subscriptionId"] == a1["subscriptionId"]
        assert got[1]["subscriptionId"] == a2["subscriptionId"]
        assert actors(await bert.items_until_actor("bert-cal")) == ["bert-cal"]
        await c.close()
        await bert.close()

    run(body())


def test_move_notifies_subscribers_of_old_and_new_path_once_each(broker):
    async def body():
        old = await broker.connect("anna")
        new = await broker.connect("anna")
        both = await broker.connect("anna")
        s_old = await old.subscribe("/dms/eingang")
        s_new = await new.subscribe("/dms/bau")
        s_both = await both.subscribe("/dms")
        broker.publish_ok(resource="/dms/bau/doc7", previous="/dms/eingang/doc7", actor="move")
        broker.publish_ok(resource="/dms/bau/doc8", actor="end")

        got_old = await old.items_until_actor("move")
        assert len(got_old) == 1
        assert got_old[0]["subscriptionId"] == s_old["subscriptionId"]
        assert got_old[0]["resource"] == "/dms/bau/doc7"
        assert got_old[0]["previousResource"] == "/dms/eingang/doc7"
        assert got_old[0]["resourceData"]["@odata.id"] == "/dms/bau/doc7"
        assert got_old[0]["resourceData"]["id"] == "doc7"

        got_new = await new.items_until_actor("end")
        assert actors(got_new) == ["move", "end"]
        assert got_new[0]["subscriptionId"] == s_new["subscriptionId"]
        assert got_new[0]["previousResource"] == "/dms/eingang/doc7"
        assert "previousResource" not in got_new[1]

        got_both = await both.items_until_actor("end")
        assert actors(got_both) == ["move", "end"], "a subscription matching both paths hears once"
        assert got_both[0]["subscriptionId"] == s_both["subscriptionId"]
        for c in (old, new, both):
            await c.close()

    run(body())


def test_one_item_per_matching_subscription_on_one_connection(broker):
    async def body():
        c = await broker.connect("anna")
        s1 = await c.subscribe("/dms")
        s2 = await c.subscribe("/dms/bau")
        s3 = await c.subscribe("/dms/other")
        broker.publish_ok(resource="/dms/bau/1", actor="x")
        broker.publish_ok(resource="/dms/other/1", actor="end")
        first = [await c.next_item(), await c.next_item()]
        assert actors(first) == ["x", "x"]
        assert sorted(it["subscriptionId"] for it in first) == sorted(
            [s1["subscriptionId"], s2["subscriptionId"]])
        rest = [await c.next_item(), await c.next_item()]
        assert actors(rest) == ["end", "end"]
        assert sorted(it["subscriptionId"] for it in rest) == sorted(
            [s1["subscriptionId"], s3["subscriptionId"]])
        await c.ping()
        assert not c.items, "no further items: %r" % list(c.items)
        await c.close()

    run(body())


def test_unsubscribe_stops_delivery_and_unknown_id_is_not_found(broker):
    async def body():
        c = await broker.connect("anna")
        s1 = await c.subscribe("/u")
        broker.publish_ok(resource="/u/1", actor="before")
        # An ack says the event is stored, not yet dispatched: wait for its item.
        assert (await c.next_item())["actor"] == "before"
        answer = await c.request({"op": "unsubscribe", "ref": "c2",
                                  "subscriptionId": s1["subscriptionId"]})
        assert answer == {"op": "unsubscribed", "ref": "c2",
                          "subscriptionId": s1["subscriptionId"]}

        await c.subscribe("/v")
        broker.publish_ok(resource="/u/2", actor="after-unsubscribe")
        broker.publish_ok(resource="/v/1", actor="control")
        assert actors(await c.items_until_actor("control")) == ["control"]

        again = await c.request({"op": "unsubscribe", "ref": "c3",
                                 "subscriptionId": s1["subscriptionId"]})
        assert again["op"] == "error" and again["ref"] == "c3"
        assert again["error"]["code"] == "not_found"
        assert isinstance(again["error"]["message"], str)
        unknown = await c.request({"op": "unsubscribe", "ref": "c4",
                                   "subscriptionId": "00000000-0000-4000-8000-000000000000"})
        assert unknown["op"] == "error" and unknown["error"]["code"] == "not_found"
        await c.ping()
        await c.close()

    run(body())


def test_subscriptions_end_with_their_connection(broker):
    async def body():
        gone = await broker.connect("anna")
        await gone.subscribe("/dms")
        await gone.close()
        stays = await broker.connect("anna")
        await stays.subscribe("/dms")
        broker.publish_ok(resource="/dms/1", actor="after-close")
        assert actors(await stays.items_until_actor("after-close")) == ["after-close"]
        await stays.close()

    run(body())


def test_batches_keep_order_hold_at_most_64_items_and_carry_the_last_cursor(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/batch")
        events = [broker.event(resource="/batch/%d" % i, actor="a%d" % i) for i in range(300)]
        replies = broker.publish_many(events)
        assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
        seqs = [r["seq"] for r in replies]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "acks in increasing seq"

        frames = []
        got = []
        while len(got) < 300:
            frame = await c.recv_frame()
            assert frame["op"] == "notify", frame
            assert 1 <= len(frame["value"]) <= MAX_BATCH_ITEMS, len(frame["value"])
            frames.append(frame)
            got.extend(frame["value"])
        assert actors(got) == ["a%d" % i for i in range(300)]
        assert len(got) == 300
        # Each frame's cursor is that of its last item: the seq of that item's event.
        by_actor = {"a%d" % i: seqs[i] for i in range(300)}
        for frame in frames:
            assert frame["cursor"] == str(by_actor[frame["value"][-1]["actor"]])
        assert frames[-1]["cursor"] == str(seqs[-1])
        await c.close()

    run(body())


def test_shutdown_closes_websocket_connections_with_1001(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/dms")
        # Stop from a thread: the client must keep reading to answer the close handshake.
        stopping = asyncio.get_running_loop().run_in_executor(None, broker.stop)
        try:
            while True:
                frame = await c.recv_frame()
                assert False, "unexpected frame during shutdown: %r" % frame
        except websockets.exceptions.ConnectionClosed as closed:
            assert closed.rcvd is not None, "no close frame from the broker: %s" % closed
            assert closed.rcvd.code == 1001, "close code %r" % closed.rcvd.code
        assert await asyncio.wait_for(stopping, 30) == 0

    run(body())


def test_healthz_answers_ok_and_unknown_path_404(broker):
    assert broker.http_get("/healthz") == (200, b"ok\n")
    status, _ = broker.http_get("/no/such/path")
    assert status == 404


GROWN_CONNECTIONS = 8
GROWN_PER_CONNECTION = 200


@pytest.mark.broker_args("--max-ops-per-second", "100000",
                         "--max-subscriptions-per-minute", "100000",
                         "--max-subscriptions-per-user", "100000")
def test_subscriptions_past_two_doublings_of_the_index_get_exactly_their_events(broker):
    """1,600 patterns double the matching index's table twice (it starts at 1,024 slots, and
    each doubling moves the patterns into the larger table over a while: joins, leaves and
    dispatch's idle turns move them on). After adding them, and again after removing half,
    every pattern gets exactly its own events."""
    async def publish_round(clients, round_name):
        events = []
        for k in range(GROWN_CONNECTIONS):
            for i in range(GROWN_PER_CONNECTION):
                events.append(broker.event(resource="/grown/c%d/p%d/doc" % (k, i),
                                           actor="%s-%d-%d" % (round_name, k, i)))
        for k in range(GROWN_CONNECTIONS):
            events.append(broker.event(resource="/grown/c%d/p0/control" % k,
                                       actor="%s-control-%d" % (round_name, k)))
        replies = broker.publish_many(events)
        assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
        received = []
        for k, c in enumerate(clients):
            items = await c.items_until_actor("%s-control-%d" % (round_name, k))
            received.append(items[:-1])
        return received

    async def body():
        clients = [await broker.connect("anna") for _ in range(GROWN_CONNECTIONS)]
        ids = []
        for k, c in enumerate(clients):
            for i in range(GROWN_PER_CONNECTION):
                await c.send({"op": "subscribe", "ref": "s%d" % i,
                              "resource": "/grown/c%d/p%d" % (k, i)})
        for c in clients:
            answers = [await c.answer() for _ in range(GROWN_PER_CONNECTION)]
            assert [a["op"] for a in answers] == ["subscribed"] * GROWN_PER_CONNECTION
            ids.append([a["subscriptionId"] for a in answers])

        received = await publish_round(clients, "all")
        for k in range(GROWN_CONNECTIONS):
            assert sorted(actors(received[k])) == sorted(
                "all-%d-%d" % (k, i) for i in range(GROWN_PER_CONNECTION))
            for item in received[k]:
                i = int(item["actor"].rsplit("-", 1)[1])
                assert item["subscriptionId"] == ids[k][i], item

        for k, c in enumerate(clients):
            for i in range(1, GROWN_PER_CONNECTION, 2):
                await c.send({"op": "unsubscribe", "ref": "u%d" % i,
                              "subscriptionId": ids[k][i]})
        for c in clients:
            answers = [await c.answer() for _ in range(1, GROWN_PER_CONNECTION, 2)]
            assert [a["op"] for a in answers] == ["unsubscribed"] * len(answers)

        received = await publish_round(clients, "half")
        for k in range(GROWN_CONNECTIONS):
            assert sorted(actors(received[k])) == sorted(
                "half-%d-%d" % (k, i) for i in range(0, GROWN_PER_CONNECTION, 2))
        for c in clients:
            await c.close()

    run(body())
