"""Client operations over the WebSocket: answers, error codes, limits and sizes.

After every error answer the test sends a ping and expects its pong: an error never costs
the client its connection."""

from helpers import run

MAX_MESSAGE = 16384


async def expect_error(c, message, code, ref="<from message>"):
    """Sends message (a dict or raw text), expects an error answer with code, then proves
    the connection still works with a ping."""
    await c.send(message)
    answer = await c.answer()
    assert answer.get("op") == "error", "expected error %s for %r, got %r" % (code, message, answer)
    assert set(answer) == {"op", "ref", "error"}, answer
    assert answer["error"]["code"] == code, "for %r: %r" % (message, answer)
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    if ref == "<from message>":
        ref = message.get("ref") if isinstance(message, dict) else None
    assert answer["ref"] == ref, "ref of %r: %r" % (message, answer)
    await c.ping()
    return answer


def padded_ping(ref, size):
    """A ping of exactly size bytes: JSON allows whitespace after the value."""
    text = '{"op":"ping","ref":"%s"}' % ref
    return text + " " * (size - len(text))


def test_ping_is_answered_with_pong_and_ref_null_when_absent(broker):
    async def body():
        c = await broker.connect("anna")
        await c.ping("p1")
        answer = await c.request({"op": "ping"})
        assert answer == {"op": "pong", "ref": None}
        await c.close()

    run(body())


def test_answers_come_in_the_order_the_ops_arrived(broker):
    async def body():
        c = await broker.connect("anna")
        ops = []
        for i in range(30):
            if i % 3 == 0:
                ops.append({"op": "subscribe", "ref": "o%d" % i, "resource": "/o/%d" % i})
            elif i % 3 == 1:
                ops.append({"op": "ping", "ref": "o%d" % i})
            else:
                ops.append({"op": "nope", "ref": "o%d" % i})
        for op in ops:
            await c.send(op)
        answers = [await c.answer() for _ in ops]
        assert [a["ref"] for a in answers] == [op["ref"] for op in ops]
        assert [a["op"] for a in answers] == ["subscribed", "pong", "error"] * 10
        await c.close()

    run(body())


def test_bad_json_and_non_object_json_answer_bad_json_with_ref_null(broker):
    async def body():
        c = await broker.connect("anna")
        for text in ['{"op":"ping"', "not json", '[{"op":"ping","ref":"x"}]', '"ping"',
                     "42", "null", '{"op":"ping","ref":"a"} trailing']:
            await expect_error(c, text, "bad_json", ref=None)
        await c.close()

    run(body())


def test_empty_text_message_answers_bad_json(broker):
    async def body():
        c = await broker.connect("anna")
        await expect_error(c, "", "bad_json", ref=None)
        await c.close()

    run(body())


def test_unknown_op_and_bad_resume_answer_errors_with_ref_echoed(broker):
    async def body():
        c = await broker.connect("anna")
        await expect_error(c, {"op": "fly", "ref": "u1"}, "unknown_op")
        await expect_error(c, {"op": "resume", "ref": "u2", "cursor": "x1"}, "bad_request")
        await expect_error(c, {"op": "resume", "ref": "u4", "cursor": 5}, "bad_request")
        await expect_error(c, {"op": "resume", "ref": "u5", "cursor": "1" * 21}, "bad_request")
        # No cursor given and none stored for a user who was never sent anything.
        await expect_error(c, {"op": "resume", "ref": "u6"}, "not_found")
        await expect_error(c, {"op": "PING", "ref": "u3"}, "unknown_op")
        await c.close()

    run(body())


def test_missing_or_mistyped_members_answer_bad_request(broker):
    async def body():
        c = await broker.connect("anna")
        await expect_error(c, {"op": "subscribe", "ref": "m1"}, "bad_request")
        await expect_error(c, {"op": "subscribe", "ref": "m2", "resource": 7}, "bad_request")
        await expect_error(c, {"op": "subscribe", "ref": "m3", "resource": ["/a"]},
                           "bad_request")
        await expect_error(c, {"op": "subscribe", "ref": "m4", "resource": "/a",
                               "changeType": ["created"]}, "bad_request")
        await expect_error(c, {"op": "unsubscribe", "ref": "m5"}, "bad_request")
        await expect_error(c, {"op": "unsubscribe", "ref": "m6", "subscriptionId": 1},
                           "bad_request")
        await expect_error(c, {"ref": "m7"}, "bad_request")
        await expect_error(c, {"op": 1, "ref": "m8"}, "bad_request")
        await c.close()

    run(body())


def test_bad_pattern_answers_bad_path(broker):
    async def body():
        c = await broker.connect("anna")
        for i, resource in enumerate(["dms/x", "/dms//x", "/dms/x/", "/", "", "/dms/../x",
                                      "/dms/./x", "/a\u0001b", "/" + "/".join(["s"] * 33),
                                      "/" + "x" * 1024]):
            await expect_error(c, {"op": "subscribe", "ref": "b%d" % i, "resource": resource},
                               "bad_path")
        # Just inside the limits: 32 segments, 1024 bytes.
        await c.subscribe("/" + "/".join(["s"] * 32))
        await c.subscribe("/" + "x" * 1023)
        await c.close()

    run(body())


def test_bad_change_type_answers_bad_change_type(broker):
    async def body():
        c = await broker.connect("anna")
        for i, change in enumerate(["moved", "", "created,", ",created",
                                    "created,created", "created,,updated"]):
            await expect_error(c, {"op": "subscribe", "ref": "t%d" % i, "resource": "/a",
                                   "changeType": change}, "bad_change_type")
        answer = await c.subscribe("/a", "deleted,created")
        assert set(answer["changeType"].split(",")) == {"created", "deleted"}
        await c.close()

    run(body())


def test_message_of_16384_bytes_is_accepted_and_16385_is_too_large(broker):
    async def body():
        c = await broker.connect("anna")
        inside = padded_ping("edge", MAX_MESSAGE)
        assert len(inside.encode()) == MAX_MESSAGE
        await c.send(inside)
        assert await c.answer() == {"op": "pong", "ref": "edge"}

        outside = padded_ping("over", MAX_MESSAGE + 1)
        assert len(outside.encode()) == MAX_MESSAGE + 1
        answer = await expect_error(c, outside, "too_large", ref=None)
        assert answer["ref"] is None
        # Far over the limit too.
        await expect_error(c, padded_ping("far", 200000), "too_large", ref=None)
        await c.close()

    run(body())


def test_message_size_limit_counts_after_reassembling_fragments(broker):
    async def body():
        c = await broker.connect("anna")
        inside = padded_ping("frag-edge", MAX_MESSAGE)
        await c.ws.send([inside[i:i + 4000] for i in range(0, len(inside), 4000)])
        assert await c.answer() == {"op": "pong", "ref": "frag-edge"}

        outside = padded_ping("frag-over", MAX_MESSAGE + 1)
        await c.ws.send([outside[i:i + 4000] for i in range(0, len(outside), 4000)])
        answer = await c.answer()
        assert answer["op"] == "error" and answer["error"]["code"] == "too_large", answer
        await c.ping()
        # A small fragmented message still works after the oversize one.
        await c.ws.send(['{"op":"pi', 'ng","ref":"', 'small"}'])
        assert await c.answer() == {"op": "pong", "ref": "small"}
        await c.close()

    run(body())


def test_ref_is_echoed_up_to_128_bytes(broker):
    async def body():
        c = await broker.connect("anna")
        ref = "r" * 128
        answer = await c.request({"op": "ping", "ref": ref})
        assert answer == {"op": "pong", "ref": ref}
        err = await c.request({"op": "subscribe", "ref": ref, "resource": "bad"})
        assert err["op"] == "error" and err["ref"] == ref
        await c.close()

    run(body())


def test_ref_over_128_bytes_or_not_a_string_answers_bad_request(broker):
    async def body():
        c = await broker.connect("anna")
        await expect_error(c, {"op": "ping", "ref": "r" * 129}, "bad_request", ref=None)
        await expect_error(c, {"op": "ping", "ref": 5}, "bad_request", ref=None)
        await c.close()

    run(body())


def test_binary_frame_answers_bad_request(broker):
    async def body():
        c = await broker.connect("anna")
        await c.ws.send(b'{"op":"ping","ref":"bin"}')
        answer = await c.answer()
        assert answer["op"] == "error" and answer["error"]["code"] == "bad_request", answer
        await c.ping()
        await c.close()

    run(body())


def test_subscription_limit_256_per_connection_then_limit_exceeded(broker):
    async def body():
        c = await broker.connect("anna")
        for i in range(256):
            await c.send({"op": "subscribe", "ref": "s%d" % i, "resource": "/lim/%d" % i})
        answers = [await c.answer() for _ in range(256)]
        assert [a["op"] for a in answers] == ["subscribed"] * 256
        assert len({a["subscriptionId"] for a in answers}) == 256, "ids are unique"

        over = await expect_error(c, {"op": "subscribe", "ref": "s256", "resource": "/lim/x"},
                                  "limit_exceeded")
        assert over["ref"] == "s256"

        # Freeing one makes room for exactly one more.
        gone = await c.request({"op": "unsubscribe", "ref": "u",
                                "subscriptionId": answers[0]["subscriptionId"]})
        assert gone["op"] == "unsubscribed"
        await c.subscribe("/lim/again")
        await expect_error(c, {"op": "subscribe", "ref": "s257", "resource": "/lim/y"},
                           "limit_exceeded")

        # The limit is per connection: another connection of the same user is not affected.
        other = await broker.connect("anna")
        await other.subscribe("/lim/other")

        # The refused subscriptions do not exist: an event under /lim/x reaches nobody here.
        broker.publish_ok(resource="/lim/x/1", actor="refused")
        broker.publish_ok(resource="/lim/again/1", actor="control")
        got = await c.items_until_actor("control")
        assert [it["actor"] for it in got] == ["control"]
        await c.close()
        await other.close()

    run(body())
