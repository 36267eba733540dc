"""A client that stops reading must not cost the broker unbounded memory nor hold up
anyone else: its bounded queue overflows, it gets a `missed` lifecycle frame and a close
with 1008, and the broker keeps serving.

The slow client is a plain TCP socket speaking just enough WebSocket (RFC 6455) by hand,
with a tiny receive buffer, so that nothing on the client side soaks up what the broker
sends. Notification items do not carry the event's data map, so to fill the socket
buffers quickly the slow client holds 4 subscriptions matching every event (4 items per
event) and the events have long paths (about 3 KB per item)."""

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time

import pytest
import websockets

from helpers import MAX_BATCH_ITEMS, TIMEOUT, run

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

# ws-protocol.md section 7: the per-connection queue holds 1024 items.
QUEUE_BOUND = 8192
# Generous estimate of what the two socket buffers (the broker's send buffer, at most
# net.ipv4.tcp_wmem's maximum, plus our tiny receive buffer) can absorb.
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
ITEM_BYTES = 3000  # roughly, with the long paths below


class RawWebSocket:
    """A minimal blocking WebSocket client that reads only when told to."""

    def __init__(self, port, token, rcvbuf=4096):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Set before connect so that the advertised window stays small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            "GET /v1.0/ws HTTP/1.1\r\n"
            "Host: 127.0.0.1:%d\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Authorization: Bearer %s\r\n\r\n" % (port, key, token))
        self.sock.sendall(request.encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end + 4]
        assert head.startswith("HTTP/1.1 101"), "handshake refused: %r" % head
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert accept in head, "wrong Sec-WebSocket-Accept in %r" % head

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the broker")
        self.buf += chunk

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send_text(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x81, 0x80 | n])
        elif n < 65536:
            header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def recv_message(self):
        """(opcode, payload) of the next whole message; control frames come alone."""
        opcode = None
        data = bytearray()
        while True:
            b0, b1 = self._take(2)
            fin, op = b0 & 0x80, b0 & 0x0F
            assert not b1 & 0x80, "the server must not mask frames"
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._take(2), "big")
            elif n == 127:
                n = int.from_bytes(self._take(8), "big")
            payload = self._take(n)
            if op >= OP_CLOSE:
                if op == OP_PING:
                    continue  # lws keepalive; irrelevant here
                return op, payload
            if op != OP_CONT:
                opcode = op
            data += payload
            if fin:
                return opcode, bytes(data)

    def recv_json(self):
        op, payload = self.recv_message()
        assert op == OP_TEXT, "expected a text frame, got opcode %d: %r" % (op, payload[:100])
        return json.loads(payload)

    def close(self):
        self.sock.close()


def long_path(root, tag):
    # 31 segments, about 940 bytes: within the 32-segment, 1024-byte limits.
    return root + "".join("/%s%s" % (tag, "x" * (29 - len(tag))) for _ in range(30))


def test_slow_consumer_gets_missed_and_1008_while_the_broker_stays_healthy(broker):
    subscriptions = 4
    # Each round stays below the queue bound, so a client that reads never overflows.
    round_events = (QUEUE_BOUND * 3 // 4) // subscriptions
    # Enough rounds to fill the socket buffers and then the queue twice over.
    needed_items = SOCKET_BUFFER_BYTES // ITEM_BYTES + 2 * QUEUE_BOUND
    rounds = -(-needed_items // (round_events * subscriptions))

    async def body():
        healthy = await broker.connect("anna")
        await healthy.subscribe("/slow")

        slow = RawWebSocket(broker.http_port, broker.token("bert"))
        for i in range(subscriptions):
            slow.send_text(json.dumps({"op": "subscribe", "ref": "s%d" % i,
                                       "resource": "/slow"}))
        for i in range(subscriptions):
            answer = slow.recv_json()
            assert answer["op"] == "subscribed" and answer["ref"] == "s%d" % i, answer

        # While it reads, the slow client gets its notifications like anyone else.
        first = broker.publish_ok(resource="/slow/first", actor="first")
        seen = 0
        cursors = []
        while seen < subscriptions:
            frame = slow.recv_json()
            assert frame["op"] == "notify", frame
            seen += len(frame["value"])
            cursors.append(frame["cursor"])
        assert seen == subscriptions and cursors[-1] == str(first["seq"])
        assert [it["actor"] for it in await healthy.items_until_actor("first")] == ["first"]

        # From here on the slow client reads nothing. Events go out in rounds, each waited
        # for by the healthy client: a client that reads drains its queue between rounds,
        # so only the one that stopped reading can overflow.
        for r in range(rounds):
            events = [broker.event(resource=long_path("/slow", "e%d" % i),
                                   previous=long_path("/prev", "p%d" % i),
                                   actor="r%d-%d" % (r, i), tenant="t" * 128)
                      for i in range(round_events)]
            replies = broker.publish_many(events)
            assert all(x["ok"] for x in replies), [x for x in replies if not x["ok"]][:2]
            got = await healthy.items_until_actor("r%d-%d" % (r, round_events - 1))
            assert [it["actor"] for it in got] == ["r%d-%d" % (r, i) for i in range(round_events)]

        # Now read what the slow client was sent.
        item_count = 0
        lifecycle = None
        close_code = None
        while True:
            try:
                op, payload = slow.recv_message()
            except (socket.timeout, EOFError) as e:
                pytest.fail("%s after %d items and no close frame: the broker did not overflow "
                            "a queue of %d items (is its bound larger than ws-protocol.md "
                            "says?) or dropped the connection without the close"
                            % (type(e).__name__, item_count, QUEUE_BOUND))
            if op == OP_CLOSE:
                assert len(payload) >= 2, "close frame without a code"
                close_code = int.from_bytes(payload[:2], "big")
                break
            assert op == OP_TEXT, op
            frame = json.loads(payload)
            assert lifecycle is None, "frame after the missed frame: %r" % frame
            if frame["op"] == "notify":
                assert 1 <= len(frame["value"]) <= MAX_BATCH_ITEMS
                cursors.append(frame["cursor"])
                item_count += len(frame["value"])
            else:
                lifecycle = frame
        slow.close()

        assert lifecycle is not None, "no lifecycle frame before the close"
        assert set(lifecycle) == {"op", "lifecycleEvent", "cursor"}, lifecycle
        assert lifecycle["op"] == "lifecycle" and lifecycle["lifecycleEvent"] == "missed"
        assert lifecycle["cursor"] == cursors[-1], \
            "missed carries the cursor of the last item sent"
        assert close_code == 1008, "close code %r" % close_code
        assert item_count < rounds * round_events * subscriptions, "nothing was dropped?"
        assert [int(c) for c in cursors] == sorted(int(c) for c in cursors)

        # The broker is healthy: the other client still gets events, new clients connect.
        broker.publish_ok(resource="/slow/after", actor="after")
        assert [it["actor"] for it in await healthy.items_until_actor("after")] == ["after"]
        fresh = await broker.connect("carl")
        await fresh.subscribe("/slow")
        broker.publish_ok(resource="/slow/again", actor="again")
        assert (await fresh.next_item())["actor"] == "again"
        assert broker.http_get("/healthz") == (200, b"ok\n")
        await healthy.close()
        await fresh.close()

    run(body())


def test_reading_client_keeps_up_with_a_pipelined_burst(broker):
    """A client that reads all the time is not a slow consumer: a burst published as fast
    as a pipelining publisher can must reach it completely, without `missed`."""
    count = 5000

    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/burst")
        events = [broker.event(resource="/burst/%d" % i, actor="b%d" % i) for i in range(count)]
        publishing = asyncio.get_running_loop().run_in_executor(None, broker.publish_many, events)
        got = await c.items_until_actor("b%d" % (count - 1))
        replies = await asyncio.wait_for(publishing, 30)
        assert all(r["ok"] for r in replies)
        assert [it["actor"] for it in got] == ["b%d" % i for i in range(count)]
        await c.close()

    run(body())


def drain_then_reset(raw, reset):
    """Reads and discards everything until reset is set, then closes with linger 0 (RST)."""
    raw.sock.settimeout(0.02)
    while not reset.is_set():
        try:
            if not raw.sock.recv(1 << 16):
                return
        except socket.timeout:
            pass
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


@pytest.mark.broker_args("--max-connections-per-user", "4")
def test_clients_reset_mid_stream_end_their_sessions_and_the_others_get_everything(broker):
    """Notify frames also go out from dispatch, outside the WRITEABLE callback (ws.c,
    write_now). Clients that reset their connections (RST) while a burst is written to them
    must end their sessions, so that they stop counting against their user, and nothing
    may go missing for a client that stays."""
    count = 10000
    resetting = 4

    async def body():
        healthy = await broker.connect("anna")
        await healthy.subscribe("/reset")
        token = broker.token("dora")
        raws = []
        for _ in range(resetting):
            raw = RawWebSocket(broker.http_port, token, rcvbuf=1 << 20)
            raw.send_text(json.dumps({"op": "subscribe", "ref": "s", "resource": "/reset"}))
            assert raw.recv_json()["op"] == "subscribed"
            raws.append(raw)
        auth = {"Authorization": "Bearer " + token}
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
            await asyncio.wait_for(websockets.connect(broker.ws_url, extra_headers=auth), TIMEOUT)
        assert refused.value.status_code == 429

        # They read all the time, so the broker's sends to them go through until the reset.
        reset = threading.Event()
        drains = [threading.Thread(target=drain_then_reset, args=(raw, reset)) for raw in raws]
        for drain in drains:
            drain.start()
        events = [broker.event(resource="/reset/%d" % i, actor="r%d" % i) for i in range(count)]
        publishing = asyncio.get_running_loop().run_in_executor(None, broker.publish_many, events)
        got = await healthy.items_until_actor("r%d" % (count // 10))
        reset.set()
        for drain in drains:
            drain.join()
        got += await healthy.items_until_actor("r%d" % (count - 1))
        replies = await asyncio.wait_for(publishing, 60)
        assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:2]
        assert [it["actor"] for it in got] == ["r%d" % i for i in range(count)]

        # The reset connections no longer count: dora may open four again.
        fresh = []
        deadline = time.monotonic() + TIMEOUT
        while len(fresh) < resetting:
            try:
                fresh.append(await websockets.connect(broker.ws_url, extra_headers=auth))
            except websockets.exceptions.InvalidStatusCode as e:
                assert e.status_code == 429, e
                if time.monotonic() > deadline:
                    pytest.fail("%d of %d reset connections still count against their user"
                                % (resetting - len(fresh), resetting))
                await asyncio.sleep(0.1)
        for ws in fresh:
            await ws.close()
        broker.publish_ok(resource="/reset/after", actor="after")
        assert [it["actor"] for it in await healthy.items_until_actor("after")] == ["after"]
        await healthy.close()

    run(body())
