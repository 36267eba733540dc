"""The ingest socket (ZeroMQ ROUTER): acks, refusals with their error codes, REQ and DEALER
publishers. Refused events must never reach a subscriber, and good events before and
after a refusal must still flow."""

import msgpack
import zmq

from helpers import TIMEOUT, run


def pack(value, **kwargs):
    return msgpack.packb(value, use_bin_type=True, **kwargs)


def pack_pairs(pairs):
    """A msgpack map built from (key, value) pairs, so that keys may repeat."""
    packer = msgpack.Packer(use_bin_type=True)
    return packer.pack_map_header(len(pairs)) + b"".join(
        packer.pack(k) + packer.pack(v) for k, v in pairs)


def assert_refused(reply, code):
    assert reply.get("ok") is False, "expected refusal %s, got %r" % (code, reply)
    assert reply.get("error") == code, "expected %s, got %r" % (code, reply)
    assert isinstance(reply.get("message"), str) and reply["message"], reply
    assert "seq" not in reply, reply


def test_ack_carries_id_and_increasing_seq(broker):
    r1 = broker.publish(id="a-1", resource="/ing/1")
    r2 = broker.publish(id="a-2", resource="/ing/2")
    assert r1 == {"id": "a-1", "ok": True, "seq": r1["seq"]}
    assert r2 == {"id": "a-2", "ok": True, "seq": r2["seq"]}
    assert isinstance(r1["seq"], int) and r1["seq"] > 0
    assert r2["seq"] > r1["seq"]


def test_bad_events_are_refused_with_their_code_and_good_events_still_flow(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/ing")
        good = broker.event(resource="/ing/good", actor="good-1")

        def bad(**changes):
            return pack(dict(good, **changes))

        def without(key):
            return pack({k: v for k, v in good.items() if k != key})

        cases = [
            ("malformed", b"\x85\xa2id"),                         # truncated map
            ("malformed", b"\xc1"),                               # never-used msgpack byte
            ("malformed", pack([1, 2, 3])),                       # not a map
            ("malformed", pack("a string")),
            ("malformed", pack(good) + b"\x00"),                  # bytes after the map
            ("missing_field", without("source")),
            ("missing_field", without("id")),
            ("missing_field", without("type")),
            ("missing_field", without("resource")),
            ("missing_field", without("time")),
            ("missing_field", without("readers")),
            ("unknown_field", bad(colour="blue")),
            ("duplicate_field", pack_pairs(list(good.items()) + [("actor", "again")])),
            ("field_type", bad(time="now")),
            ("field_type", bad(readers="*")),
            ("field_type", bad(id=b"bin-not-str")),               # bin where str expected
            ("field_type", bad(actor=7)),
            ("field_type", bad(data=[1, 2])),
            ("bad_path", bad(resource="ing/x")),
            ("bad_path", bad(resource="/ing//x")),
            ("bad_path", bad(resource="/ing/x/")),
            ("bad_path", bad(resource="/ing/*")),                 # * only in patterns
            ("bad_path", bad(resource="/ing/../x")),
            ("bad_path", bad(previous="/a/./b")),
            ("bad_path", bad(resource="/" + "/".join(["s"] * 33))),
            ("bad_change_type", bad(type="moved")),
            ("bad_change_type", bad(type="Updated")),
            ("bad_principal", bad(readers=["admin"])),
            ("bad_principal", bad(readers=["user:"])),
            ("bad_principal", bad(readers=["*", "group:a b"])),
            ("too_many_readers", bad(readers=["user:u%d" % i for i in range(1025)])),
            ("bad_time", bad(time=0)),
            ("bad_time", bad(time=-5)),
            ("field_too_long", bad(actor="x" * 129)),
            ("field_too_long", bad(tenant="t" * 129)),
            ("field_too_long", bad(id="i" * 129)),
            ("field_too_long", bad(source="s" * 129)),
            ("bad_utf8", msgpack.packb(dict(good, actor=b"\xff\xfe"), use_bin_type=False)),
            ("too_large", bad(readers=["user:" + "u" * 100 + str(i) for i in range(700)])),
        ]

        first = broker.publish_event(good)
        assert first["ok"] is True, first
        last_seq = first["seq"]
        for i, (code, payload) in enumerate(cases):
            reply = broker.publish_raw(payload)
            assert_refused(reply, code)
            # A good event right after every refusal is accepted with a higher seq.
            ok = broker.publish(resource="/ing/ok", actor="ok-%d" % i)
            assert ok["ok"] is True, "good event after case %d (%s) refused: %r" % (i, code, ok)
            assert ok["seq"] > last_seq
            last_seq = ok["seq"]

        # Just inside the limits.
        inside = broker.publish(resource="/ing/edge", actor="a" * 128, tenant="t" * 128,
                                id="i" * 128,
                                readers=["user:u%d" % i for i in range(1023)] + ["*"])
        assert inside["ok"] is True, inside
        broker.publish_ok(resource="/ing/last", actor="last")

        got = await c.items_until_actor("last")
        assert [it["actor"] for it in got] == (
            ["good-1"] + ["ok-%d" % i for i in range(len(cases))] + ["a" * 128, "last"]), \
            "only accepted events are delivered, in order"
        await c.close()

    run(body())


def test_oversize_data_map_is_refused_not_truncated(broker):
    reply = broker.publish(resource="/ing/d", data={"blob": "x" * 5000})
    assert reply.get("ok") is False, reply
    assert reply.get("error") in ("too_large", "field_too_long"), reply
    small = broker.publish(resource="/ing/d", data={"blob": "x" * 3000})
    assert small.get("ok") is True, small


def test_refusal_echoes_the_id_when_it_could_be_read(broker):
    reply = broker.publish(id="bad-type-1", resource="/ing/x", type="moved")
    assert_refused(reply, "bad_change_type")
    assert reply.get("id") in ("bad-type-1", None), reply
    malformed = broker.publish_raw(b"\xc1")
    assert_refused(malformed, "malformed")
    assert malformed.get("id") is None, malformed


def test_pipelined_dealer_gets_replies_in_order(broker):
    events = []
    for i in range(200):
        if i % 10 == 5:
            events.append(broker.event(id="p%d" % i, resource="bad/path"))
        else:
            events.append(broker.event(id="p%d" % i, resource="/ing/%d" % i))
    replies = broker.publish_many(events)
    assert [r["id"] for r in replies if r["ok"]] == [
        "p%d" % i for i in range(200) if i % 10 != 5]
    assert [r["ok"] for r in replies] == [i % 10 != 5 for i in range(200)]
    seqs = [r["seq"] for r in replies if r["ok"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_copy_arriving_while_its_original_is_synced_gets_the_original_seq(
        slow_disk_broker):
    """3,000 events pipelined in blocks of 47, each block followed by copies of its events,
    on a disk whose syncs take 50 ms longer: ingest reads and appends the next batch while
    the last one is synced, so wherever a batch ends inside a block, copies arrive while
    their originals are still on their way to disk. The publisher queues everything at once
    (no send limit), so the broker's socket always holds the next messages when a sync
    starts. Each copy is acked with its original's seq, and none takes a seq of its own."""
    broker = slow_disk_broker
    block = 47
    messages = []
    for start in range(0, 3008, block):
        originals = [broker.event(id="twice-%d" % i, resource="/ing/twice/%d" % i)
                     for i in range(start, min(start + block, 3000))]
        messages += originals + originals
    sock = broker.zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(broker.ingest)
    for message in messages:
        sock.send(msgpack.packb(message, use_bin_type=True))
    replies = [broker.recv_reply(sock) for _ in messages]
    sock.close()
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
    seq_of = {}
    for message, reply in zip(messages, replies):
        assert reply["id"] == message["id"]
        assert seq_of.setdefault(message["id"], reply["seq"]) == reply["seq"], (
            "a copy of %s was acked with another seq" % message["id"])
    first = seq_of["twice-0"]
    assert [seq_of["twice-%d" % i] for i in range(3000)] == list(range(first, first + 3000))


def test_req_socket_publisher_works(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/req")
        req = broker.zctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(broker.ingest)
        try:
            seqs = []
            for i in range(3):
                req.send(pack(broker.event(id="req-%d" % i, resource="/req/%d" % i,
                                           actor="req-%d" % i)))
                assert req.poll(TIMEOUT * 1000, zmq.POLLIN), "no reply to REQ"
                frames = req.recv_multipart()
                assert len(frames) == 1, "REQ sees exactly the reply frame: %r" % frames
                reply = msgpack.unpackb(frames[0], raw=False)
                assert reply["ok"] is True and reply["id"] == "req-%d" % i, reply
                seqs.append(reply["seq"])
            assert seqs == sorted(seqs)
            req.send(b"\xc1")
            assert req.poll(TIMEOUT * 1000, zmq.POLLIN)
            assert_refused(msgpack.unpackb(req.recv(), raw=False), "malformed")
        finally:
            req.close(linger=0)
        got = await c.items_until_actor("req-2")
        assert [it["actor"] for it in got] == ["req-0", "req-1", "req-2"]
        await c.close()

    run(body())


def test_dealer_with_extra_frames_gets_bad_envelope(broker):
    dealer = broker.zctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(broker.ingest)
    try:
        dealer.send_multipart([b"junk", pack(broker.event(resource="/ing/env"))])
        assert dealer.poll(TIMEOUT * 1000, zmq.POLLIN), "no reply to a two-frame message"
        reply = msgpack.unpackb(dealer.recv_multipart()[-1], raw=False)
        assert_refused(reply, "bad_envelope")
        dealer.send(pack(broker.event(resource="/ing/env")))
        assert dealer.poll(TIMEOUT * 1000, zmq.POLLIN)
        assert msgpack.unpackb(dealer.recv_multipart()[-1], raw=False)["ok"] is True
    finally:
        dealer.close(linger=0)


def test_two_publishers_each_get_their_own_replies(broker):
    other = broker.zctx.socket(zmq.DEALER)
    other.setsockopt(zmq.LINGER, 0)
    other.connect(broker.ingest)
    try:
        other.send(pack(broker.event(id="other-1", resource="/ing/o")))
        mine = broker.publish(id="mine-1", resource="/ing/m")
        assert mine["id"] == "mine-1" and mine["ok"] is True
        assert other.poll(TIMEOUT * 1000, zmq.POLLIN)
        theirs = msgpack.unpackb(other.recv(), raw=False)
        assert theirs["id"] == "other-1" and theirs["ok"] is True
        assert theirs["seq"] != mine["seq"]
    finally:
        other.close(linger=0)
