"""Subscription changes over REST are written to the store by a thread of their own
(broker/store_writer.h) and applied once the store has them.

A PostgreSQL session that holds a lock on herold's subscriptions table keeps a change's
write waiting for as long as the test wants, with nothing else of the broker's held: the
events go through another connection and another table. While a write waits:
- events go on being matched and delivered (they used to wait for every change's COMMIT);
- the change is not visible yet, and counts against the user's limits;
- a second change of the same subscription waits for the first, and both end as sent;
- changes of other subscriptions sent meanwhile are stored together, in one transaction.
"""

import concurrent.futures
import json
import time

import pytest

from helpers import (REST_TIMEOUT, SUBSCRIPTIONS, TIME_SCALE, TIMEOUT, expect_error, iso_z, run,
                     sub_body)
from receiver import wait_for

pytestmark = pytest.mark.parametrize("store", ["postgresql"], indirect=True)
SUBSCRIPTIONS_TABLE = "herold_broker.subscriptions"


def wait_for_held_writes(store, count):
    """Until count of the broker's statements wait for the lock: the change was sent."""
    wait_for(lambda: store.database.waiting_for_locks() == count,
             what="%d statements waiting for the lock" % count)


def test_events_are_delivered_while_a_subscription_change_waits_for_the_store(
        durable_broker, store):
    b = durable_broker

    async def body():
        c = await b.connect("anna")
        await c.subscribe("/held")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            with store.database.locked(SUBSCRIPTIONS_TABLE):
                creating = pool.submit(b.create, sub_body("websocket:", resource="/held/ws"))
                wait_for_held_writes(store, 1)
                for i in range(3):
                    b.publish_ok(resource="/held/doc/%d" % i, actor="while-held-%d" % i)
                    item = await c.next_item()
                    assert item["actor"] == "while-held-%d" % i, item
                assert not creating.done(), "the create was answered before it was stored"
                listed = b.rest("GET", SUBSCRIPTIONS)
                assert listed.status == 200 and listed.json()["value"] == [], \
                    "a change not yet stored is visible: %s" % listed
            created = creating.result(REST_TIMEOUT)
        assert created.status == 201, created
        sub_id = created.json()["id"]
        assert b.get_sub(sub_id).status == 200
        b.publish_ok(resource="/held/ws/doc", actor="after")
        got = await c.items_until(lambda it: it.get("subscriptionId") == sub_id)
        assert got[-1]["actor"] == "after", got

    run(body())


def test_creations_under_way_count_against_the_limits(durable_broker, store):
    b = durable_broker
    first = sub_body("websocket:", resource="/held/a")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with store.database.locked(SUBSCRIPTIONS_TABLE):
            creating = pool.submit(b.create, first)
            wait_for_held_writes(store, 1)
            # The same subscription again is a conflict before the first one is stored.
            expect_error(b.rest("POST", SUBSCRIPTIONS, first), 409, "conflict")
            assert not creating.done()
        assert creating.result(REST_TIMEOUT).status == 201
    pages = b.list_all()
    assert [s["resource"] for s in pages[0]["value"]] == ["/held/a"], pages


def test_a_patch_shows_once_stored_and_a_delete_behind_it_ends_the_subscription(
        durable_broker, store):
    b = durable_broker
    sub = b.create(sub_body("websocket:", resource="/held/p", seconds=600)).json()
    path = SUBSCRIPTIONS + "/" + sub["id"]
    later = iso_z(int(time.time()) + 7200)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with store.database.locked(SUBSCRIPTIONS_TABLE):
            patching = pool.submit(b.rest, "PATCH", path, {"expirationDateTime": later})
            wait_for_held_writes(store, 1)
            deleting = pool.submit(b.rest, "DELETE", path)
            seen = b.get_sub(sub["id"])
            assert seen.status == 200 and seen.json()["expirationDateTime"] == \
                sub["expirationDateTime"], "the PATCH shows before it is stored: %s" % seen
            assert not patching.done()
        patched = patching.result(REST_TIMEOUT)
        deleted = deleting.result(REST_TIMEOUT)
    assert patched.status == 200, patched
    assert patched.json()["expirationDateTime"].startswith(later[:19]), patched
    assert deleted.status == 204, deleted
    expect_error(b.get_sub(sub["id"]), 404, "not_found")
    assert store.database.query(
        "SELECT count(*) FROM %s WHERE id = '%s'" % (SUBSCRIPTIONS_TABLE, sub["id"])) == [["0"]]
    assert b.stop() == 0
    b.restart()
    expect_error(b.get_sub(sub["id"]), 404, "not_found")


def test_a_change_sent_while_another_is_written_keeps_what_that_one_changed(
        durable_broker, store):
    """Each stored document is the whole subscription: a reauthorize written after a PATCH
    must hold the PATCH's expiration, or the store and the index part ways."""
    b = durable_broker
    sub = b.create(sub_body("websocket:", resource="/held/r", seconds=600)).json()
    path = SUBSCRIPTIONS + "/" + sub["id"]
    later = iso_z(int(time.time()) + 7200)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with store.database.locked(SUBSCRIPTIONS_TABLE):
            patching = pool.submit(b.rest, "PATCH", path, {"expirationDateTime": later})
            wait_for_held_writes(store, 1)
            reauthorizing = pool.submit(b.rest, "POST", path + "/reauthorize",
                                        groups=["g:bauamt"])
            # Time for the reauthorize to reach the broker, where it waits for the PATCH.
            time.sleep(0.5)
            assert not patching.done() and not reauthorizing.done()
        assert patching.result(REST_TIMEOUT).status == 200
        assert reauthorizing.result(REST_TIMEOUT).status == 204
    [[document]] = store.database.query(
        "SELECT document FROM %s WHERE id = '%s'" % (SUBSCRIPTIONS_TABLE, sub["id"]))
    stored = json.loads(document)
    assert stored["owner"]["groups"] == ["g:bauamt"], stored
    assert iso_z(stored["expiresAt"]) == later, stored
    assert b.stop() == 0
    b.restart()
    assert b.get_sub(sub["id"]).json()["expirationDateTime"].startswith(later[:19])


def test_a_change_whose_client_went_away_is_applied_all_the_same(durable_broker, store):
    b = durable_broker
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with store.database.locked(SUBSCRIPTIONS_TABLE):
            gone = pool.submit(b.rest, "POST", SUBSCRIPTIONS,
                               sub_body("websocket:", resource="/held/gone"), timeout=1.0)
            wait_for_held_writes(store, 1)
            with pytest.raises(TimeoutError):
                gone.result(TIMEOUT)
        pages = wait_for(lambda: b.list_all()[0]["value"], what="the subscription listed")
    assert [s["resource"] for s in pages] == ["/held/gone"], pages
    assert b.stop() == 0
    b.restart()
    assert [s["resource"] for s in b.list_all()[0]["value"]] == ["/held/gone"]


def test_a_read_of_retained_notifications_does_not_wait_for_a_held_write(
        durable_broker, store):
    """Event reads have a connection of their own: the pull endpoint, and replays, read on
    the service thread."""
    b = durable_broker
    sub = b.create(sub_body("websocket:", resource="/held/n")).json()
    b.publish_ok(resource="/held/n/doc", actor="kept")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        with store.database.locked(SUBSCRIPTIONS_TABLE):
            creating = pool.submit(b.create, sub_body("websocket:", resource="/held/other"))
            wait_for_held_writes(store, 1)
            page = b.rest("GET", SUBSCRIPTIONS + "/" + sub["id"] + "/notifications",
                          timeout=TIMEOUT)
            assert page.status == 200, page
            assert [it["actor"] for it in page.json()["value"]] == ["kept"], page
            assert not creating.done()
        assert creating.result(REST_TIMEOUT).status == 201


def test_changes_that_wait_together_are_stored_in_one_transaction(durable_broker, store):
    """The store writer makes the writes waiting in its queue durable together: changes sent
    while one is written share the next COMMIT (rows of one transaction share its xmin)."""
    b = durable_broker
    queued = ["/held/batch/%d" % i for i in range(5)]
    with concurrent.futures.ThreadPoolExecutor(len(queued) + 1) as pool:
        with store.database.locked(SUBSCRIPTIONS_TABLE):
            first = pool.submit(b.create, sub_body("websocket:", resource="/held/first"))
            wait_for_held_writes(store, 1)
            creating = [pool.submit(b.create, sub_body("websocket:", resource=r))
                        for r in queued]
            # Time for the creates to reach the broker, where they wait behind the first.
            time.sleep(1.0 * TIME_SCALE)
            assert not first.done() and not any(c.done() for c in creating)
        ids = {}
        for resource, answer in zip(["/held/first"] + queued, [first] + creating):
            created = answer.result(REST_TIMEOUT)
            assert created.status == 201, created
            ids[created.json()["id"]] = resource
    rows = store.database.query("SELECT id, xmin FROM %s" % SUBSCRIPTIONS_TABLE)
    transactions = {}
    for sub_id, xmin in rows:
        transactions.setdefault(xmin, []).append(ids[sub_id])
    assert sorted(sorted(t) for t in transactions.values()) == \
        sorted([["/held/first"], sorted(queued)]), transactions
    assert b.stop() == 0
    b.restart()
    assert sorted(s["resource"] for s in b.list_all()[0]["value"]) == \
        sorted(["/held/first"] + queued)
