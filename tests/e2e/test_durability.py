"""Durability at the edge: an acknowledged event is never lost (DESIGN 1, 3.4, 4).

Every test runs on both stores (the `store` fixture: embedded, then PostgreSQL in a
database of its own on the tests/with-pg server) unless it says otherwise, so this file is
the conformance suite the two stores share as seen from outside: crash the broker, restart
it, take the database away, and check from the clients' side that every acked event is
there, replayed to a resuming `websocket:` client (`?since=`, the `resume` op) and
delivered to a webhook from its cursor, and readable through the pull endpoint
`GET /v1.0/subscriptions/{id}/notifications`.

How the tests know what to expect. One DEALER publishes into a fresh store, so event i
(id "<prefix>-<i>") gets seq i+1; every ack is checked against that, and the resource of
event i names i, so an item's seq and resource must agree with what was acked. Delivery is
at least once: webhook receivers dedupe by item id (`<subscriptionId>-<seq>`, the same
across restarts) and the tests assert that none is missing; replays from a cursor must be
exact (no holes, no duplicates). Nothing sleeps to synchronise except where the broker's
clock is the condition (an event must be older than the retention); waits poll a
condition with a timeout.
"""

import json
import threading
import time
import uuid

import msgpack
import pytest
import zmq

from helpers import SUBSCRIPTIONS, TIMEOUT, expect_error, run, sub_body
from receiver import Reply, wait_for

WEBHOOK_ARGS = ("--webhook-allow-private", "--webhook-first-retry-ms", 100,
                "--webhook-max-retry-ms", 400)
# Catching up thousands of items, under the sanitizer too.
LONG = 60.0


# ---- helpers ----

def item_seq(item):
    """The seq in an item's id `<subscriptionId>-<seq>`."""
    return int(item["id"].rsplit("-", 1)[1])


def seqs_of(items):
    return [item_seq(it) for it in items]


def pipelined_load(broker, make_event, stop_after_acks, in_flight=2000):
    """Publishes make_event(i) (id "<anything>-<i>") for i = 0, 1, … on a DEALER of its
    own, keeping in_flight events unanswered, until stop_after_acks were acked. Returns
    (sock, acked: index -> seq, sent). Every reply must be ok and come in order. The socket
    stays open: the caller may kill the broker and collect the replies still on their way
    (take_reply)."""
    sock = broker.zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.ingest)
    acked = {}
    sent = 0
    while len(acked) < stop_after_acks:
        while sent - len(acked) < in_flight:
            sock.send(msgpack.packb(make_event(sent), use_bin_type=True))
            sent += 1
        assert sock.poll(TIMEOUT * 1000), "no ingest reply within %ss" % TIMEOUT
        take_reply(sock, acked)
    return sock, acked, sent


def take_reply(sock, acked):
    reply = msgpack.unpackb(sock.recv(), raw=False)
    assert reply.get("ok") is True, reply
    index = int(reply["id"].rsplit("-", 1)[1])
    assert index == len(acked), "replies come in order: %r after %d acks" % (reply, len(acked))
    acked[index] = reply["seq"]


def publish_window(broker, events, window=1000):
    """Publishes events (maps) pipelined, at most window unanswered; returns the seqs."""
    sock = broker.dealer()
    seqs = []
    sent = 0
    while len(seqs) < len(events):
        while sent < len(events) and sent - len(seqs) < window:
            sock.send(msgpack.packb(events[sent], use_bin_type=True))
            sent += 1
        reply = broker.recv_reply(sock)
        assert reply.get("ok") is True and reply["id"] == events[len(seqs)]["id"], reply
        seqs.append(reply["seq"])
    return seqs


class Delivered:
    """What a webhook receiver took from one subscription: the items of the POSTs to path
    it answered with a 2xx, each POST parsed once, in arrival order. A POST whose answer
    never got out (the broker died in between) may stay unfinished: it is passed over."""

    def __init__(self, receiver, path="/hook"):
        self.receiver = receiver
        self.path = path
        self.low = 0        # every request before this one is taken into account
        self.seen = set()   # request indexes taken into account at or after low
        self.posts = {}     # request index -> its items, for delivered POSTs
        self.seqs = set()

    def _update(self):
        """Called with receiver.cond held (inside receiver.wait_for) or after the fact."""
        requests = self.receiver.requests
        for index in range(self.low, len(requests)):
            req = requests[index]
            if index in self.seen or req.finished is None:
                continue
            self.seen.add(index)
            if (not req.is_validation and req.path == self.path
                    and 200 <= (req.status or 0) < 300):
                items = req.json()["value"]
                self.posts[index] = items
                self.seqs.update(item_seq(it) for it in items)
        while self.low in self.seen:
            self.seen.discard(self.low)
            self.low += 1

    def wait_seqs(self, wanted, timeout=LONG):
        """Waits until every seq in wanted was delivered."""
        wanted = set(wanted)

        def all_there():
            self._update()
            return wanted <= self.seqs

        self.receiver.wait_for(all_there, timeout,
                               "%d items (missing e.g. %r)" % (
                                   len(wanted), sorted(wanted - self.seqs)[:10]))

    def items(self):
        """Every delivered item in arrival order (duplicates included)."""
        with self.receiver.cond:
            self._update()
            return [it for index in sorted(self.posts) for it in self.posts[index]]

    def first_arrivals(self):
        """Each delivered item once, at its first arrival."""
        seen = set()
        out = []
        for it in self.items():
            if it["id"] not in seen:
                seen.add(it["id"])
                out.append(it)
        return out


def get_page(broker, path, timeout=TIMEOUT):
    """GET path (a pull endpoint page); a 503 (the store unavailable) is retried until
    timeout. Returns the parsed page."""
    tries = []

    def attempt():
        resp = broker.rest("GET", path)
        tries.append(resp.status)
        assert resp.status in (200, 503), resp
        return resp.json() if resp.status == 200 else None

    page = wait_for(attempt, timeout, what="a page of %s" % path)
    if len(tries) > 1:
        print("GET %s: answered %r before 200" % (path, tries[:-1]))
    return page


def stored_cursor(broker, store, key):
    """The cursor the store holds under key, or None."""
    if store.is_pg:
        rows = store.database.query(
            "SELECT seq FROM herold_broker.cursors WHERE key = '%s'" % key.replace("'", "''"))
        return int(rows[0][0]) if rows else None
    value = None
    path = broker.data / "subscriptions.log"
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(" ")
            if len(parts) == 3 and parts[0] == "C" and parts[1] == key:
                value = int(parts[2])
    return value


def wait_stored_cursor(broker, store, key, at_least, timeout=TIMEOUT):
    """Waits until the store holds a cursor >= at_least under key (cursors are written
    about once a second); returns it."""
    return wait_for(lambda: (lambda c: c if c is not None and c >= at_least else None)(
        stored_cursor(broker, store, key)), timeout,
        what="stored cursor %s >= %d" % (key, at_least))


async def replay_until(broker, marker_resource, query="", resume=None, user="anna"):
    """Connects (with query, e.g. "since=5"), optionally sends a resume op (resume: a
    cursor string, or False for one without cursor) and checks its answer, then publishes
    a marker event at marker_resource and returns (client, frames before the first item,
    items up to the marker, marker seq, resumed answer)."""
    c = await broker.connect(user, query=query)
    answer = None
    if resume is not None:
        msg = {"op": "resume", "ref": c.next_ref()}
        if resume is not False:
            msg["cursor"] = resume
        answer = await c.request(msg)
        assert answer.get("op") == "resumed", "resume %r answered %r" % (msg, answer)
    marker = broker.publish_ok(resource=marker_resource, actor="marker")["seq"]
    lifecycle = []
    # A `missed` lifecycle frame comes before any replayed item.
    while not c.items:
        frame = await c.recv_frame()
        if frame.get("op") == "notify":
            c._take_notify(frame)
        else:
            lifecycle.append(frame)
    items = await c.items_until(lambda it: item_seq(it) == marker)
    return c, lifecycle, items, marker, answer


# ---- kill -9 under load ----

def load_resource(i):
    """Event i of a load: a third under /load/a, the rest under /load/b."""
    return "/load/%s/%d" % ("a" if i % 3 == 0 else "b", i)


@pytest.mark.broker_args(*WEBHOOK_ARGS)
def test_kill_9_under_pipelined_load_every_acked_event_is_replayed_and_delivered(
        durable_broker, durable_receivers):
    """kill -9 with 2000 events in flight, restart on the same store: every acked event is
    still there, a persistent websocket: subscription replays exactly the matching events
    from since=0 and from a cursor in the middle, and a webhook subscription catches up
    from its stored cursor so that every event in the store has been delivered."""
    b = durable_broker
    hook = durable_receivers("hook")
    whsub = b.create(sub_body(hook.url("/hook"), resource="/load")).json()
    wssub = b.create(sub_body("websocket:", resource="/load/a")).json()
    delivered = Delivered(hook)

    def make(i):
        return b.event(id="load-%d" % i, resource=load_resource(i), actor="load")

    sock, acked, sent = pipelined_load(b, make, 4000)
    b.kill_hard()
    while sock.poll(200):  # replies already on their way count as acked too
        take_reply(sock, acked)
    sock.close()
    for i, seq in acked.items():
        assert seq == i + 1, "event %d acked with seq %d in a fresh store" % (i, seq)
    top = max(acked.values())

    first, last = b.restart()
    assert first == 1
    assert top <= last <= sent, "acked up to %d, %d sent, the store holds 1..%d" % (
        top, sent, last)
    print("acked %d of %d sent; the store kept 1..%d" % (len(acked), sent, last))

    def matching(after):
        return [s for s in range(after + 1, last + 1)
                if load_resource(s - 1).startswith("/load/a/")]

    mid = acked[len(acked) // 2]

    async def replays():
        c, lifecycle, items, marker, _ = await replay_until(b, "/load/a/marker", "since=0")
        assert lifecycle == [], "since=0 within retention: no missed frame: %r" % lifecycle
        assert marker == last + 1, "numbering goes on after the last stored event"
        assert seqs_of(items) == matching(0) + [marker], "since=0 replays exactly the store"
        for it in items[:-1]:
            assert it["subscriptionId"] == wssub["id"]
            assert it["resource"] == load_resource(item_seq(it) - 1), it
        await c.close()

        c, lifecycle, items, marker2, _ = await replay_until(b, "/load/a/marker2",
                                                             "since=%d" % mid)
        assert lifecycle == []
        assert seqs_of(items) == matching(mid) + [marker, marker2], \
            "since=<cursor> replays exactly what came after it"
        await c.close()
        return marker2

    marker2 = run(replays())
    # The webhook hears of everything under /load: every event in the store and the
    # markers, each at least once, none it never stored.
    delivered.wait_seqs(set(range(1, last + 1)) | {marker2 - 1, marker2})
    for it in delivered.items():
        seq = item_seq(it)
        assert it["subscriptionId"] == whsub["id"]
        assert seq <= marker2, "an item for seq %d, which was never stored" % seq
        if seq <= last:
            assert it["resource"] == load_resource(seq - 1), it


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
@pytest.mark.broker_args("--segment-bytes", "65536")
def test_kill_9_while_writing_into_segments_made_ahead(durable_broker):
    """Segments of 64 KiB: the journal makes each next one ahead (zeros, overwritten by the
    records) and cuts the full one to its records, many times a second under this load.
    kill -9 in the middle usually leaves the current one full of zeros past its records
    (when it came at a moment the next one was not ready yet, a segment created plainly):
    after each restart every acked event is there and the numbering goes on, and at the end
    a replay from the start has every event in order."""
    b = durable_broker
    b.create(sub_body("websocket:", resource="/ahead"))
    stored = 0
    for attempt in range(5):
        def make(i, base=stored):
            return b.event(id="ahead-%d" % i, resource="/ahead/%d" % (base + i),
                           source="load-%d" % attempt, actor="load")

        sock, acked, sent = pipelined_load(b, make, 3000, in_flight=500)
        b.kill_hard()
        while sock.poll(200):
            take_reply(sock, acked)
        sock.close()
        assert sorted(acked.values()) == list(range(stored + 1, stored + len(acked) + 1))
        first, last = b.restart()
        top = max(acked.values())
        assert (first, top <= last <= stored + sent) == (1, True), (first, top, last, sent)
        stored = last
        if "zeros where a record should be" in b.stderr_text():
            break
    else:
        pytest.fail("five crashes, none of them in a segment made ahead")

    async def replayed():
        c, _, items, marker, _ = await replay_until(b, "/ahead/marker", "since=0")
        await c.close()
        return seqs_of(items), marker

    seqs, marker = run(replayed())
    assert seqs == list(range(1, stored + 1)) + [marker] and marker == stored + 1


# ---- a failing webhook endpoint ----

@pytest.mark.broker_args(*WEBHOOK_ARGS)
def test_a_webhook_down_for_more_than_ten_thousand_events_gets_every_one_in_order(
        durable_broker, durable_receivers):
    """The endpoint answers 503 while 10300 events go by: its queue overflows and is
    dropped (memory stays bounded), and once it answers 200 again it catches up from the
    store: every item arrives, first arrivals in seq order, and no `missed`."""
    b = durable_broker
    hook = durable_receivers("hook")
    hook.default = Reply(503)
    life = durable_receivers("life")
    sub = b.create(sub_body(hook.url("/hook"), resource="/down",
                            lifecycleNotificationUrl=life.url("/life"))).json()
    delivered = Delivered(hook)
    events = [b.event(id="down-%d" % i, resource="/down/doc/%d" % i) for i in range(10300)]
    seqs = publish_window(b, events)
    assert b.pump.wait_for("catch up from the store", LONG), \
        "the queue of the failing target never overflowed"
    assert hook.wait_for(lambda: any(r.status == 503 for r in hook.posts("/hook")))
    hook.default = Reply(200)
    delivered.wait_seqs(seqs)
    firsts = seqs_of(delivered.first_arrivals())
    assert firsts == sorted(firsts), "first arrivals out of seq order"
    assert set(firsts) == set(seqs)
    assert all(it["subscriptionId"] == sub["id"] for it in delivered.items())
    assert [r for r in life.posts() if b"missed" in r.body] == [], "nothing was missed"


# ---- resume ----

def test_resume_since_the_op_and_the_stored_cursor_also_after_a_crash(durable_broker, store):
    """?since=<cursor> gets exactly what came after it; the resume op does the same and is
    answered `resumed`; resume without a cursor continues from the user's stored cursor,
    in the same run and after kill -9 and a restart; a user without one gets not_found."""
    b = durable_broker
    sub = b.create(sub_body("websocket:", resource="/r")).json()
    matching = []  # seqs of the events under /r, in order

    def publish(n, tag):
        for i in range(n):
            matching.append(b.publish_ok(resource="/r/%s/%d" % (tag, i))["seq"])
            b.publish_ok(resource="/elsewhere/%s/%d" % (tag, i))  # for nobody here

    def after(cursor):
        return [s for s in matching if s > cursor]

    async def first_run():
        live = await b.connect("anna")
        publish(3, "live")
        got = [await live.next_item() for _ in range(3)]
        assert seqs_of(got) == matching and all(it["subscriptionId"] == sub["id"] for it in got)
        cursors = list(live.cursors)
        assert cursors[-1] == str(matching[-1]), "a frame's cursor is its last item's seq"
        await live.close()
        c1 = str(matching[0])

        c, lifecycle, items, marker, _ = await replay_until(b, "/r/m1", "since=" + c1)
        matching.append(marker)
        assert lifecycle == [] and seqs_of(items) == after(int(c1))
        await c.close()

        c, lifecycle, items, marker, answer = await replay_until(b, "/r/m2", resume=c1)
        matching.append(marker)
        assert answer["cursor"] == c1
        assert lifecycle == [] and seqs_of(items) == after(int(c1))
        await c.close()

        # The user's cursor: the last notify cursor sent to any of their sessions.
        last_sent = matching[-1]
        publish(2, "offline")  # no session open: these wait in the store
        c, lifecycle, items, marker, answer = await replay_until(b, "/r/m3", resume=False)
        matching.append(marker)
        assert answer["cursor"] == str(last_sent), "resume without cursor: %r" % answer
        assert lifecycle == [] and seqs_of(items) == after(last_sent)
        await c.close()

        bob = await b.connect("bob")
        answer = await bob.request({"op": "resume", "ref": "nothing"})
        assert answer.get("op") == "error" and answer["error"]["code"] == "not_found", answer
        await bob.close()

    run(first_run())
    last_sent = matching[-1]
    wait_stored_cursor(b, store, "user:anna", last_sent)
    b.kill_hard()
    b.restart()
    publish(2, "restarted")

    async def second_run():
        c, lifecycle, items, marker, answer = await replay_until(b, "/r/m4", resume=False)
        matching.append(marker)
        assert answer["cursor"] == str(last_sent), "the stored cursor survives a crash"
        assert lifecycle == [] and seqs_of(items) == after(last_sent)
        await c.close()
        c, lifecycle, items, marker, _ = await replay_until(b, "/r/m5", "since=0")
        matching.append(marker)
        assert lifecycle == [] and seqs_of(items) == matching, "since=0: everything retained"
        await c.close()

    run(second_run())


@pytest.mark.broker_args("--retention-seconds", 1, "--segment-bytes", 65536, *WEBHOOK_ARGS)
def test_a_cursor_out_of_retention_gets_missed_first_then_the_rest(durable_broker, store,
                                                                  durable_receivers):
    """Events older than --retention-seconds are trimmed at start (embedded: whole segments
    but the current one, --segment-bytes making several; PostgreSQL, which ignores
    --segment-bytes: every row but the newest). Then since=1, the resume op with cursor 1,
    the pull endpoint and a webhook whose endpoint was down all begin with `missed` and go
    on with what is retained; since=0 (WebSocket and pull) gets the retained events only."""
    b = durable_broker
    hook = durable_receivers("hook")
    life = durable_receivers("life")
    hook.default = Reply(503)
    whsub = b.create(sub_body(hook.url("/hook"), resource="/ret",
                              lifecycleNotificationUrl=life.url("/life"))).json()
    wssub = b.create(sub_body("websocket:", resource="/ret")).json()
    pad = "x" * 2000
    events = [b.event(id="ret-%d" % i, resource="/ret/doc/%d" % i, data={"pad": pad})
              for i in range(120)]  # about 250 KB: segments to drop
    seqs = publish_window(b, events)
    published_at = time.time()
    assert hook.wait_for(lambda: any(r.status == 503 for r in hook.posts("/hook")))
    # The condition is the broker's clock: the events must be older than the retention.
    time.sleep(max(0.0, published_at + 1.2 - time.time()))
    assert b.stop() == 0
    _, last = b.restart()
    assert last == seqs[-1]
    # Ingest trims right after the start, on its own thread: wait for the first retained
    # event to move (every event here is under /ret).
    base = "%s/%s/notifications" % (SUBSCRIPTIONS, wssub["id"])
    first = wait_for(lambda: (lambda v: item_seq(v[0]) if v and item_seq(v[0]) > 1 else None)(
        get_page(b, base + "?$top=1")["value"]), TIMEOUT, what="the trim at start")
    if store.is_pg:
        assert first == last, "PostgreSQL keeps only the newest row"
    retained = [s for s in seqs if s >= first]
    # The webhook's catch-up may have read its first chunk before the trim (no loss, and no
    # `missed`); after one more restart its cursor, still 0, is surely out of retention.
    # That run keeps the default retention: its trim, which runs at the first turn of the
    # ingest loop (possibly after the first event), must not take more.
    assert b.stop() == 0
    at = b.extra_args.index("--retention-seconds")
    del b.extra_args[at:at + 2]
    b.restart()

    async def replays():
        c, lifecycle, items, marker, _ = await replay_until(b, "/ret/m1", "since=1")
        assert lifecycle == [{"op": "lifecycle", "lifecycleEvent": "missed",
                              "cursor": str(first - 1)}], lifecycle
        assert seqs_of(items) == retained + [marker]
        await c.close()
        c, lifecycle, items, marker2, answer = await replay_until(b, "/ret/m2", resume="1")
        assert answer["cursor"] == "1"
        assert [f.get("lifecycleEvent") for f in lifecycle] == ["missed"], lifecycle
        assert seqs_of(items) == retained + [marker, marker2]
        await c.close()
        c, lifecycle, items, marker3, _ = await replay_until(b, "/ret/m3", "since=0")
        assert lifecycle == [], "since=0 asks for what is retained: nothing missed"
        assert seqs_of(items) == retained + [marker, marker2, marker3]
        await c.close()
        return [marker, marker2, marker3]

    markers = run(replays())

    value = get_page(b, base + "?since=1&$top=1000")["value"]
    assert value[0].get("lifecycleEvent") == "missed", value[0]
    assert value[0]["subscriptionId"] == wssub["id"]
    assert value[0]["cursor"] == "1", "the missed item names the since it answers"
    assert seqs_of(value[1:]) == retained + markers
    value = get_page(b, base + "?since=0")["value"]
    assert "lifecycleEvent" not in json.dumps(value), value

    # The webhook never delivered anything: its cursor is before the first retained event.
    hook.default = Reply(200)
    missed = life.wait_for(lambda: [r for r in life.posts("/life") if b"missed" in r.body],
                           LONG, "a missed lifecycle notification")
    item = missed[0].json()["value"][0]
    assert item["lifecycleEvent"] == "missed" and item["subscriptionId"] == whsub["id"], item
    delivered = Delivered(hook)
    delivered.wait_seqs(retained + markers)
    assert min(delivered.seqs) == first, "only retained events are delivered"


# ---- the pull endpoint ----

@pytest.mark.broker_args(*WEBHOOK_ARGS)
def test_the_pull_endpoint_pages_to_exactly_what_the_webhook_got(durable_broker,
                                                                durable_receivers):
    """GET /v1.0/subscriptions/{id}/notifications: following @odata.nextLink until the
    @odata.deltaLink yields exactly the items the webhook was sent, in order, even across
    pages that scanned 2000 records without a match; $top and since are bounded; another
    user's subscription and a per-connection one are 404, bad parameters 400, other methods
    405."""
    b = durable_broker
    hook = durable_receivers("hook")
    sub = b.create(sub_body(hook.url("/hook"), resource="/pull", clientState="cs")).json()
    base = "%s/%s/notifications" % (SUBSCRIPTIONS, sub["id"])
    events = [b.event(id="p-%d" % i,
                      resource=("/pull/doc/%d" if i % 3 == 0 else "/nopull/%d") % i)
              for i in range(150)]
    events += [b.event(id="gap-%d" % i, resource="/nopull/gap/%d" % i) for i in range(4100)]
    events += [b.event(id="tail-%d" % i, resource="/pull/tail/%d" % i) for i in range(10)]
    seqs = publish_window(b, events)
    wanted = [s for s, ev in zip(seqs, events) if ev["resource"].startswith("/pull/")]
    delivered = Delivered(hook)
    delivered.wait_seqs(wanted)
    webhook_items = delivered.first_arrivals()
    assert seqs_of(webhook_items) == wanted

    pages = []
    path = base + "?$top=7"
    since = 0
    while path is not None:
        resp = b.rest("GET", path)
        assert resp.status == 200, resp
        page = resp.json()
        pages.append(page)
        assert len(pages) < 100, "nextLink never ends"
        assert len(page["value"]) <= 7, "page larger than $top"
        cursor = int(page["cursor"])
        assert since <= cursor <= since + 2000, "a page scans at most 2000 records"
        assert page["@odata.context"].endswith("$metadata#Collection(changeNotification)")
        link = page.get("@odata.nextLink")
        expected_link = "%s%s?since=%d&$top=7" % (b.origin, base, cursor)
        if link is None:
            assert page.get("@odata.deltaLink") == expected_link, page
            path = None
        else:
            assert "@odata.deltaLink" not in page
            assert link == expected_link, page
            path = link[len(b.origin):]
        since = cursor
    pulled = [it for page in pages for it in page["value"]]
    assert pulled == webhook_items, "the pull endpoint and the webhook carry the same items"
    assert any(p["value"] == [] and "@odata.nextLink" in p for p in pages), \
        "4100 records without a match fill a page that scanned 2000 of them"
    assert since == seqs[-1], "the deltaLink's cursor is the end of the store"

    # Polling the deltaLink later gets what came since.
    late = b.publish_ok(resource="/pull/late")["seq"]
    page = b.rest("GET", "%s?since=%d&$top=7" % (base, since)).json()
    assert seqs_of(page["value"]) == [late] and "@odata.deltaLink" in page

    # Defaults and bounds.
    page = b.rest("GET", base).json()  # since=0, $top=100
    assert seqs_of(page["value"]) == wanted[:50], "the first 2000 records hold 50 items"
    page = b.rest("GET", base + "?since=%d&$top=1" % wanted[3]).json()
    assert seqs_of(page["value"]) == [wanted[4]] and "@odata.nextLink" in page
    assert int(page["cursor"]) == wanted[4]
    page = b.rest("GET", base + "?$top=1000").json()
    assert seqs_of(page["value"]) == wanted[:50]
    for since_arg in (late, late + 1000):
        page = b.rest("GET", base + "?since=%d" % since_arg).json()
        assert page["value"] == [] and "@odata.deltaLink" in page, page
    for query in ("$top=0", "$top=1001", "$top=x", "$top=", "$top=-1", "since=-1", "since=x",
                  "since=1.5", "since=", "since=99999999999999999999999"):
        expect_error(b.rest("GET", base + "?" + query), 400, "bad_request")
    expect_error(b.rest("GET", base, user="bob"), 404, "not_found")

    async def connection_subscription():
        c = await b.connect("anna")
        sub_id = (await c.subscribe("/pull"))["subscriptionId"]
        # While the connection and its subscription live.
        expect_error(b.rest("GET", "%s/%s/notifications" % (SUBSCRIPTIONS, sub_id)), 404,
                     "not_found")
        await c.ping()
        await c.close()

    run(connection_subscription())
    expect_error(b.rest("GET", "%s/%s/notifications" % (SUBSCRIPTIONS, uuid.uuid4())), 404,
                 "not_found")
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        expect_error(b.rest(method, base, {} if method in ("POST", "PATCH", "PUT") else None),
                     405, "method_not_allowed")


# ---- an orderly stop ----

@pytest.mark.broker_args(*WEBHOOK_ARGS)
def test_an_orderly_restart_delivers_nothing_twice(durable_broker, durable_receivers):
    """SIGTERM stores where every webhook stands (the last positions, after a final MARK),
    so a planned restart repeats no item; only a crash may (at least once)."""
    b = durable_broker
    hook = durable_receivers("hook")
    sub = b.create(sub_body(hook.url("/hook"), resource="/orderly")).json()
    idle = b.create(sub_body(hook.url("/idle"), resource="/elsewhere")).json()
    delivered = Delivered(hook)
    seqs = [r["seq"] for r in b.publish_many(
        [b.event(id="o-%d" % i, resource="/orderly/doc/%d" % i) for i in range(300)])]
    delivered.wait_seqs(seqs)
    assert b.stop() == 0
    b.restart()
    marker = b.publish_ok(resource="/orderly/marker")["seq"]
    delivered.wait_seqs([marker])
    ids = [it["id"] for it in delivered.items()]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    assert repeated == [], "delivered again after an orderly restart: %r" % repeated[:10]
    assert [item_seq(it) for it in delivered.items()] == seqs + [marker]
    # The subscription that heard nothing is not sent anything either.
    assert [r for r in hook.posts() if r.path == "/idle" and not r.is_validation] == []
    assert idle["id"] != sub["id"]


# ---- dedup ----

def test_a_duplicate_after_a_crash_is_acked_with_its_seq_and_not_delivered_again(
        durable_broker):
    b = durable_broker
    b.create(sub_body("websocket:", resource="/dd"))
    first = b.publish_ok(id="same", source="dms", resource="/dd/doc")["seq"]
    b.publish_ok(id="other", source="dms", resource="/dd/other")
    b.kill_hard()
    _, last = b.restart()
    again = b.publish_ok(id="same", source="dms", resource="/dd/doc", type="deleted")
    assert again["seq"] == first, "a duplicate is acked with the original seq"
    fresh = b.publish_ok(id="same", source="files", resource="/dd/doc")["seq"]
    assert fresh == last + 1

    async def body():
        c, lifecycle, items, marker, _ = await replay_until(b, "/dd/marker", "since=0")
        assert seqs_of(items) == [first, first + 1, fresh, marker], "the duplicate never came"
        assert items[0]["changeType"] == "updated"
        await c.close()

    run(body())


# ---- a damaged journal tail (embedded only) ----

@pytest.mark.parametrize("store", ["embedded"], indirect=True)
@pytest.mark.parametrize("damage", ["torn", "flipped"])
@pytest.mark.broker_args(*WEBHOOK_ARGS)
def test_a_damaged_journal_tail_is_cut_and_delivery_goes_on(durable_broker, durable_receivers,
                                                            store, damage):
    """A torn tail (half a record after the last one) loses nothing; a flipped bit in the
    last record cuts that record. Either way the cut is never replayed, the next event
    takes the next free seq, and both the resuming client and the webhook get it."""
    damage_tail_and_go_on(durable_broker, durable_receivers("hook"), store, damage)


def damage_tail_and_go_on(b, hook, store, damage):
    """The body of the test above; returns the webhook's Delivered."""
    whsub = b.create(sub_body(hook.url("/hook"), resource="/tail")).json()
    b.create(sub_body("websocket:", resource="/tail"))
    seqs = [b.publish_ok(resource="/tail/doc/%d" % i)["seq"] for i in range(5)]
    delivered = Delivered(hook)
    delivered.wait_seqs(seqs)
    wait_stored_cursor(b, store, whsub["id"], seqs[-1])
    assert b.stop() == 0
    segment = sorted((b.data / "journal").glob("*.seg"))[-1]
    if damage == "torn":
        with open(segment, "ab") as f:
            f.write(b"\x40\x00\x00\x00\x12\x34")
        kept = seqs
    else:
        data = bytearray(segment.read_bytes())
        data[-3] ^= 0x10
        segment.write_bytes(bytes(data))
        kept = seqs[:-1]
    first, last = b.restart()
    assert (first, last) == (1, kept[-1])
    new = b.publish_ok(resource="/tail/new")["seq"]
    # The webhook's stored cursor reached seqs[-1]: a cut record's seq is not given again.
    assert new == max(last, seqs[-1]) + 1

    async def body():
        c, lifecycle, items, marker, _ = await replay_until(b, "/tail/marker", "since=0")
        assert seqs_of(items) == kept + [new, marker]
        assert items[-2]["resource"] == "/tail/new"
        await c.close()
        return marker

    marker = run(body())
    delivered.wait_seqs([new, marker])
    after_restart = [it for it in delivered.items() if it["resource"] in ("/tail/new",
                                                                          "/tail/marker")]
    assert [(item_seq(it), it["resource"]) for it in after_restart] == [
        (new, "/tail/new"), (marker, "/tail/marker")], after_restart
    return delivered


@pytest.mark.parametrize("store", ["embedded"], indirect=True)
@pytest.mark.broker_args(*WEBHOOK_ARGS)
def test_an_event_after_a_cut_record_does_not_reuse_a_delivered_item_id(durable_broker,
                                                                         durable_receivers,
                                                                         store):
    """Receivers dedupe by item id (`<subscriptionId>-<seq>`, stable across restarts). When
    a flipped bit cuts the last record after it was delivered, the broker sees the stored
    cursor past the store's end and skips those seqs: the next event gets a new one, so no
    item id names two events."""
    delivered = damage_tail_and_go_on(durable_broker, durable_receivers("hook"), store,
                                      "flipped")
    by_id = {}
    for it in delivered.items():
        by_id.setdefault(it["id"], set()).add(it["resource"])
    reused = {i: r for i, r in by_id.items() if len(r) > 1}
    assert reused == {}, "item ids that named two different events: %r" % reused


# ---- PostgreSQL goes away ----

@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
@pytest.mark.parametrize("how", ["restart", "kill"])
@pytest.mark.broker_args(*WEBHOOK_ARGS)
def test_postgresql_restarted_under_load_every_message_answered_and_nothing_lost(
        durable_broker, durable_receivers, store, how):
    """The server is restarted (fast shutdown, or SIGKILL then start) in the middle of a
    pipelined load: publishers get `unavailable` answers, never silence, and resend until
    acked; afterwards the store holds exactly the acked events at seqs 1..N (nothing of a
    failed batch kept), a webhook got each, the broker never stopped; while the server is
    down a subscription is refused with 503 and a resuming client's replay waits, and
    both work once it is back."""
    import pg

    b = durable_broker
    hook = durable_receivers("hook")
    whsub = b.create(sub_body(hook.url("/hook"), resource="/pgload")).json()
    wssub = b.create(sub_body("websocket:", resource="/pgload")).json()
    delivered = Delivered(hook)

    def make(i):
        return msgpack.packb(b.event(id="pg-%d" % i, resource="/pgload/doc/%d" % i),
                             use_bin_type=True)

    done = {}

    def bounce():
        try:
            if how == "restart":
                pg.server_restart()
            else:
                pg.server_kill()
                pg.server_start()
            done["ok"] = True
        except BaseException as e:  # reported by the main thread
            done["error"] = e

    # The load goes on until the server is back and 300 more events were acked after that.
    sock = b.zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(b.ingest)
    created = 0                  # events made so far: index 0 .. created - 1
    retry = []                   # (due time, index) of refused events, due times ascending
    in_flight = []               # indexes in send order; replies come in the same order
    acked = {}
    refused = 0
    bouncer = None
    enough = None                # acks after which no new events are made
    while True:
        if bouncer is not None and enough is None and not bouncer.is_alive():
            enough = len(acked) + 300
        # A publisher that was refused resends before it makes anything new.
        making = (enough is None or len(acked) < enough) and not retry
        now = time.monotonic()
        while len(in_flight) < 500:
            if retry and retry[0][0] <= now:
                i = retry.pop(0)[1]
            elif making:
                i = created
                created += 1
                assert created < 200000, "the server never came back"
            else:
                break
            sock.send(make(i))
            in_flight.append(i)
        if not in_flight:
            if not retry:
                break
            time.sleep(0.02)  # everything is waiting for its resend
            continue
        assert sock.poll(TIMEOUT * 1000), \
            "silence: no reply within %ss with %d in flight" % (TIMEOUT, len(in_flight))
        reply = msgpack.unpackb(sock.recv(), raw=False)
        i = in_flight.pop(0)
        assert reply.get("id") == "pg-%d" % i, "reply %r for event %d" % (reply, i)
        if reply.get("ok") is True:
            assert i not in acked, "event %d acked twice" % i
            acked[i] = reply["seq"]
        else:
            assert reply.get("error") == "unavailable", reply
            refused += 1
            retry.append((time.monotonic() + 0.2, i))
        if bouncer is None and len(acked) >= 1000:
            bouncer = threading.Thread(target=bounce, daemon=True)
            bouncer.start()
    sock.close()
    assert "error" not in done, done.get("error")
    assert done.get("ok"), "the server restart did not finish"
    total = created
    assert len(acked) == total
    assert refused > 0, "the publisher never saw `unavailable` while the server was away"
    assert b.proc.poll() is None, "the broker exited"
    print("%d events, %d refusals answered while the server was away" % (total, refused))
    assert sorted(acked.values()) == list(range(1, total + 1)), \
        "acked seqs are 1..N, each once: the seqs of a failed batch are given again"

    # Everything acked is readable, and nothing else is stored.
    pulled = []
    path = "%s/%s/notifications?$top=1000" % (SUBSCRIPTIONS, wssub["id"])
    while path is not None:
        page = get_page(b, path)
        pulled += page["value"]
        link = page.get("@odata.nextLink")
        path = link[len(b.origin):] if link else None
    by_seq = {seq: i for i, seq in acked.items()}
    assert seqs_of(pulled) == list(range(1, total + 1))
    for it in pulled:
        assert it["resource"] == "/pgload/doc/%d" % by_seq[item_seq(it)], it

    delivered.wait_seqs(range(1, total + 1))
    for it in delivered.items():
        assert it["subscriptionId"] == whsub["id"]
        assert it["resource"] == "/pgload/doc/%d" % by_seq[item_seq(it)], it

    # While the server is down: a subscription cannot be stored (503), and a client that
    # resumes waits for its replay; both work once the server is back.
    since = total - 10

    async def while_down():
        pg.server_stop()
        try:
            expect_error(b.rest("POST", SUBSCRIPTIONS,
                                sub_body("websocket:", resource="/down")), 503, "unavailable")
            c = await b.connect("anna", query="since=%d" % since)
            await c.ping()  # the session works; its replay waits for the store
        finally:
            pg.server_start()
        marker = wait_for(lambda: (lambda r: r["seq"] if r.get("ok") else None)(
            b.publish(resource="/pgload/marker")), LONG, what="an ack after the server is back")
        items = await c.items_until(lambda it: item_seq(it) == marker)
        assert seqs_of(items) == list(range(since + 1, total + 1)) + [marker]
        await c.close()

    run(while_down())
    created = wait_for(lambda: (lambda r: r if r.status == 201 else None)(
        b.rest("POST", SUBSCRIPTIONS, sub_body("websocket:", resource="/down"))),
        LONG, what="a subscription created after the server came back")
    assert b.get_sub(created.json()["id"]).status == 200
    assert b.proc.poll() is None, "the broker exited"
