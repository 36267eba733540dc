"""When delivery falls behind, acks slow down the publishers, and nothing acked is lost.

The service thread (dispatch and the WebSocket writes) is stopped at its next send() by a
gate (tests/e2e/send_gate.c, the gated_broker fixture). Ingest then goes on acking only
until the dispatch channel is full: what it holds in memory is bounded by the channel, one
dispatch turn and one ingest batch, and the rest waits unread in ZeroMQ's bounded queues
and the publisher's socket. Once the gate opens, every event is acked, and every one the
client follows is delivered, in order."""

import asyncio
import time

import msgpack
import zmq

from helpers import TIME_SCALE, run

# The broker's bounds on events taken from the publishers and not yet delivered:
DISPATCH_QUEUE = 4096     # broker/main.c HEROLD_DISPATCH_QUEUE: the channel to dispatch
EVENTS_PER_TURN = 256     # broker/dispatch.h DISPATCH_EVENTS_PER_TURN: taken by a turn
INGEST_BATCH_MAX = 4096   # broker/ingest.h INGEST_BATCH_MAX: acked before it is handed over
ACKED_UNDELIVERED_MAX = DISPATCH_QUEUE + EVENTS_PER_TURN + INGEST_BATCH_MAX

EVENTS = 20000            # well past that bound
# The client follows one event in FOLLOWED_EVERY. It reads in Python, and a reader that
# falls WS_QUEUE_MAX_ENTRIES (8192) behind the broker is cut off as a slow consumer, by
# design (test_slow_consumer.py): following all 20,000, it once fell behind at 9,682 in a
# loaded suite run, while ingest, let go, took the rest at full speed.
FOLLOWED_EVERY = 4
QUIET_SECONDS = 2.0 * TIME_SCALE  # no ack for this long: ingest has stopped reading
STALL_LIMIT_SECONDS = 60.0 * TIME_SCALE


def take_replies(broker, sock, replies, want, quiet_seconds, limit_seconds):
    """Adds replies to the list until want have come, or none came for quiet_seconds."""
    deadline = time.monotonic() + limit_seconds
    while len(replies) < want and time.monotonic() < deadline:
        if not sock.poll(quiet_seconds * 1000, zmq.POLLIN):
            return
        replies.append(broker.recv_reply(sock))


def test_acks_wait_for_a_delivery_that_fell_behind_and_every_acked_event_arrives(
        gated_broker):
    broker = gated_broker

    async def body():
        c = await broker.connect("anna")
        subscribed = await c.subscribe("/bp/followed")
        broker.send_gate.touch()

        sock = broker.zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.connect(broker.ingest)
        events = [broker.event(id="bp-%d" % i, readers=["*"], resource="/bp/%s/%d" % (
            "followed" if i % FOLLOWED_EVERY == 0 else "other", i)) for i in range(EVENTS)]
        for ev in events:
            sock.send(msgpack.packb(ev, use_bin_type=True))

        replies = []
        take_replies(broker, sock, replies, EVENTS, QUIET_SECONDS, STALL_LIMIT_SECONDS)
        acked_while_stalled = len(replies)
        # Ingest filled the channel before it stopped (more than the channel holds were
        # acked), and stopped there (not everything was).
        assert DISPATCH_QUEUE < acked_while_stalled <= ACKED_UNDELIVERED_MAX, (
            "%d events acked while delivery was stopped; the bound is %d" % (
                acked_while_stalled, ACKED_UNDELIVERED_MAX))

        # The client reads while the rest is acked: one that stopped reading would be cut
        # off as a slow consumer (test_slow_consumer.py).
        broker.send_gate.unlink()
        acking = asyncio.create_task(asyncio.to_thread(
            take_replies, broker, sock, replies, EVENTS, STALL_LIMIT_SECONDS,
            STALL_LIMIT_SECONDS))
        items = [await c.next_item() for _ in range(EVENTS // FOLLOWED_EVERY)]
        await acking
        sock.close()
        assert len(replies) == EVENTS, "%d of %d acked after the gate opened" % (
            len(replies), EVENTS)
        assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
        assert [r["id"] for r in replies] == [ev["id"] for ev in events]
        first = replies[0]["seq"]
        assert [r["seq"] for r in replies] == list(range(first, first + EVENTS))

        followed = range(0, EVENTS, FOLLOWED_EVERY)
        assert [item["resource"] for item in items] == [events[i]["resource"] for i in followed]
        assert [item["id"] for item in items] == [
            "%s-%d" % (subscribed["subscriptionId"], replies[i]["seq"]) for i in followed]

    run(body())
