"""The embedded journal behind ingest: an ack means the event is on disk.

These tests crash the broker (SIGKILL) and damage its journal, then restart it on the
same data directory. Until subscriptions and cursors are persisted, what a restarted
broker proves is its journal: it reports the sequence range it recovered, and numbering
continues after the last record that survived.
"""

import re
import subprocess

import msgpack
import pytest
import zmq

from helpers import HEROLD, START_TIMEOUT, free_ports, run, sub_body
from receiver import check_signed

RECOVERED = re.compile(r"store holds events (\d+)\.\.(\d+)")


def restart(broker):
    """Starts the broker again on the same data directory; returns the recovered range."""
    broker.returncode = None
    broker.start()
    line = broker.pump.wait_for("store holds events", START_TIMEOUT)
    assert line is not None, broker.stderr_text()
    first, last = RECOVERED.search(line).groups()
    return int(first), int(last)


def kill_hard(broker):
    broker.proc.kill()
    broker.proc.wait()


def segment_files(broker):
    return sorted((broker.data / "journal").glob("*.seg"))


def test_acked_events_survive_kill_9_under_pipelined_load(broker):
    sock = broker.zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(broker.ingest)
    acked = []
    sent = 0
    # Keep up to 2000 events in flight and kill the broker while they are: what was acked
    # before the kill must all be there after the restart.
    while len(acked) < 6000:
        while sent - len(acked) < 2000:
            sock.send(msgpack.packb(broker.event(id="load-%d" % sent, resource="/load/doc")))
            sent += 1
        reply = msgpack.unpackb(sock.recv(), raw=False)
        assert reply["ok"] is True, reply
        acked.append(reply["seq"])
    kill_hard(broker)
    # Replies that were already on their way count as acked too.
    while sock.poll(200):
        reply = msgpack.unpackb(sock.recv(), raw=False)
        if reply.get("ok"):
            acked.append(reply["seq"])
    sock.close()
    assert acked == sorted(acked) and len(set(acked)) == len(acked)

    first, last = restart(broker)
    assert first == 1
    assert last >= max(acked), "acked up to %d, recovered only up to %d" % (max(acked), last)
    assert last <= sent
    reply = broker.publish_ok(resource="/load/after")
    assert reply["seq"] == last + 1


def test_a_torn_tail_is_cut_at_start_and_numbering_goes_on(broker):
    for i in range(10):
        broker.publish_ok(resource="/torn/doc/%d" % i)
    assert broker.stop() == 0
    segment = segment_files(broker)[-1]
    size = segment.stat().st_size
    # Half a record header: what a crash in the middle of a write leaves behind.
    with open(segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x12\x34")
    first, last = restart(broker)
    assert (first, last) == (1, 10)
    assert "journal: cut" in broker.stderr_text()
    assert segment.stat().st_size == size, "the torn bytes are cut from the file"
    assert broker.publish_ok(resource="/torn/after")["seq"] == 11


def test_a_flipped_bit_in_the_last_record_cuts_that_record(broker):
    for i in range(5):
        broker.publish_ok(resource="/flip/doc/%d" % i)
    assert broker.stop() == 0
    segment = segment_files(broker)[-1]
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0x10  # inside the payload of the last record
    segment.write_bytes(bytes(data))
    first, last = restart(broker)
    assert (first, last) == (1, 4), "the damaged record is cut, never replayed"
    assert re.search(r"journal: cut .* CRC|journal: cut .*crc", broker.stderr_text(),
                     re.IGNORECASE), broker.stderr_text()
    assert broker.publish_ok(resource="/flip/after")["seq"] == 5


def test_a_second_broker_on_the_same_data_directory_is_refused(broker):
    broker.publish_ok(resource="/lock/doc")
    http_port, ingest_port = free_ports(2)
    done = subprocess.run(
        [str(HEROLD), "--http", "127.0.0.1:%d" % http_port,
         "--ingest", "tcp://127.0.0.1:%d" % ingest_port, "--data", str(broker.data)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=START_TIMEOUT)
    assert done.returncode != 0 and "ready" not in done.stderr, done.stderr
    assert "journal" in done.stderr, done.stderr
    assert broker.publish_ok(resource="/lock/after")["seq"] == 2, "the first one goes on"


def test_a_duplicate_is_acked_with_the_original_seq_and_delivered_once(broker):
    async def body():
        c = await broker.connect("anna")
        await c.subscribe("/dup")
        first = broker.publish_ok(id="same", source="dms", resource="/dup/doc")
        again = broker.publish_ok(id="same", source="dms", resource="/dup/doc", type="deleted")
        other = broker.publish_ok(id="same", source="files", resource="/dup/doc")
        assert again["seq"] == first["seq"], "a duplicate gets the original seq"
        assert other["seq"] == first["seq"] + 1, "the same id from another source is new"
        # The next item after the first is the other source's: the duplicate never came.
        item = await c.next_item()
        assert item["id"].endswith("-%d" % first["seq"]) and item["changeType"] == "updated"
        item = await c.next_item()
        assert item["id"].endswith("-%d" % other["seq"]), item
        await c.close()

    run(body())


def test_duplicates_within_one_pipelined_batch_share_one_seq(broker):
    replies = broker.publish_many(
        [broker.event(id="twin", source="dms", resource="/batch/doc")] * 3 +
        [broker.event(id="single", source="dms", resource="/batch/doc")])
    assert [r["ok"] for r in replies] == [True] * 4
    seqs = [r["seq"] for r in replies]
    assert seqs[0] == seqs[1] == seqs[2] and seqs[3] == seqs[0] + 1, seqs


def test_duplicates_are_recognised_after_a_crash(broker):
    first = broker.publish_ok(id="keep", source="dms", resource="/crash/doc")
    kill_hard(broker)
    restart(broker)
    assert "1 retained events known for deduplication" in broker.stderr_text()
    assert broker.publish_ok(id="keep", source="dms", resource="/crash/doc")["seq"] == first["seq"]
    assert broker.publish_ok(id="fresh", source="dms", resource="/crash/doc")["seq"] == \
        first["seq"] + 1


@pytest.mark.broker_args("--webhook-allow-private")
def test_subscriptions_survive_a_crash_and_keep_their_secret(broker, receivers):
    """REST subscriptions are in the store: after kill -9 they are all there, a deleted one
    stays deleted, and a webhook's deliveries are signed with the secret it was given."""
    hook = receivers("hook")
    created = broker.create(sub_body(hook.url(), resource="/persist/hook",
                                     clientState="cs-1")).json()
    kept = broker.create(sub_body("websocket:", resource="/persist/ws")).json()
    gone = broker.create(sub_body("websocket:", resource="/persist/gone")).json()
    assert broker.rest("DELETE", "/v1.0/subscriptions/" + gone["id"]).status == 204
    kill_hard(broker)
    restart(broker)
    assert "2 subscriptions restored" in broker.stderr_text()
    listed = broker.rest("GET", "/v1.0/subscriptions").json()["value"]
    assert [s["id"] for s in listed] == [created["id"], kept["id"]], "creation order kept"
    one = broker.rest("GET", "/v1.0/subscriptions/" + created["id"]).json()
    for key in ("resource", "changeType", "notificationUrl", "expirationDateTime", "creatorId"):
        assert one[key] == created[key], key
    assert one["clientState"] == "cs-1"
    assert broker.rest("GET", "/v1.0/subscriptions/" + gone["id"]).status == 404

    reply = broker.publish_ok(resource="/persist/hook/doc", readers=["*"])
    request = hook.wait_posts(1)[0]
    check_signed(request, created["signingSecret"])  # the secret from before the crash
    item = request.json()["value"][0]
    assert item["id"] == "%s-%d" % (created["id"], reply["seq"])
    assert item["clientState"] == "cs-1"
