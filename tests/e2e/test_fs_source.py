"""herold-fs-source end to end: files created, written in bursts, renamed and deleted in a
watched tree reach a WebSocket as created, one updated per burst, updated with
previousResource, and deleted; a new subdirectory is watched with what it already holds;
readers come from the mapping file (longest prefix); an inotify queue overflow is answered
by a rescan that reports every file."""

import asyncio
import os
import signal
import subprocess
import time

import pytest

from helpers import BUILD, TIMEOUT, run, sanitizer_problems

SOURCE = BUILD / "herold-fs-source"
PREFIX = "/files/shares/amt"
SOURCE_DRAIN_SECONDS = 10  # clients/herold-fs-source.c PENDING_DRAIN_SECONDS


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "share"
    root.mkdir()
    (root / "old.txt").write_text("there before")
    readers = tmp_path / "readers"
    readers.write_text("# path prefix, readers\n/ group:staff\nsecret group:chef,user:boss\n")
    return root, readers


@pytest.fixture
def source(broker, tree, tmp_path):
    root, readers = tree
    log = open(tmp_path / "fs-source.log", "ab")
    proc = subprocess.Popen([str(SOURCE), "--root", str(root), "--readers", str(readers),
                             "--prefix", PREFIX, "--debounce-ms", "200", "--ingest",
                             broker.ingest], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + TIMEOUT
    while b"watching" not in (tmp_path / "fs-source.log").read_bytes():
        assert time.monotonic() < deadline and proc.poll() is None, "the source did not start"
        time.sleep(0.05)
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        # It stops once what it sent is acked, waiting up to its drain time for that.
        assert proc.wait(SOURCE_DRAIN_SECONDS + TIMEOUT) == 0
    text = (tmp_path / "fs-source.log").read_text(errors="replace")
    assert not sanitizer_problems(text), text


async def expect_nothing(c, seconds):
    try:
        frame = await asyncio.wait_for(c.next_item(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError("unexpected item %r" % frame)


def test_create_burst_rename_delete(broker, tree, source):
    root, _ = tree

    async def body():
        c = await broker.connect("anna", groups=("staff",))
        await c.subscribe(PREFIX)
        (root / "a.txt").write_text("v1")
        item = await c.next_item()
        assert (item["resource"], item["changeType"]) == (PREFIX + "/a.txt", "created")

        with open(root / "a.txt", "a") as f:  # a burst of writes: one updated
            for i in range(10):
                f.write("more %d\n" % i)
                f.flush()
                await asyncio.sleep(0.015)
        item = await c.next_item()
        assert (item["resource"], item["changeType"]) == (PREFIX + "/a.txt", "updated")
        await expect_nothing(c, 0.6)

        (root / "sub").mkdir()
        (root / "sub" / "b.txt").write_text("in a new directory")
        item = await c.next_item()
        assert (item["resource"], item["changeType"]) == (PREFIX + "/sub/b.txt", "created")

        os.rename(root / "a.txt", root / "sub" / "c.txt")
        item = await c.next_item()
        assert item["changeType"] == "updated"
        assert item["resource"] == PREFIX + "/sub/c.txt"
        assert item["previousResource"] == PREFIX + "/a.txt"

        os.unlink(root / "sub" / "c.txt")
        item = await c.next_item()
        assert (item["resource"], item["changeType"]) == (PREFIX + "/sub/c.txt", "deleted")
        await c.close()

    run(body())


def test_readers_from_the_mapping_file(broker, tree, source):
    root, _ = tree

    async def body():
        staff = await broker.connect("anna", groups=("staff",))
        boss = await broker.connect("boss")
        await staff.subscribe(PREFIX)
        await boss.subscribe(PREFIX)
        (root / "secret").mkdir()
        (root / "secret" / "plan.txt").write_text("x")
        (root / "open.txt").write_text("y")
        item = await boss.next_item()
        assert item["resource"] == PREFIX + "/secret/plan.txt"
        assert (await staff.next_item())["resource"] == PREFIX + "/open.txt"
        await expect_nothing(boss, 0.5)
        await staff.close()
        await boss.close()

    run(body())


def test_queue_overflow_is_answered_by_a_rescan(broker, tree, source, tmp_path):
    root, _ = tree
    count = 17000  # more than the kernel's default queue of 16384 events

    async def body():
        c = await broker.connect("anna", groups=("staff",))
        await c.subscribe(PREFIX + "/many")
        many = root / "many"
        many.mkdir()
        await asyncio.sleep(0.3)  # the directory is watched
        source.send_signal(signal.SIGSTOP)  # the queue fills while the source sleeps
        for i in range(count):
            (many / ("f%05d" % i)).write_bytes(b"")
        source.send_signal(signal.SIGCONT)
        seen = set()
        while len(seen) < count:
            item = await asyncio.wait_for(c.next_item(), 30)
            seen.add(item["resource"])
        await c.close()

    run(body())
    log = (tmp_path / "fs-source.log").read_text(errors="replace")
    assert "rescanning" in log, "the queue never overflowed: the test proved nothing"
