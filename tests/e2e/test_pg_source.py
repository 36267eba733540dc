"""herold-pg-source end to end: rows a store's trigger emits into herold.outbox
(schemas/sql/outbox.sql) reach a WebSocket within a second; a row leaves the outbox only
once the broker acked it, so killing the source, the broker or the database loses
nothing; a row the broker refuses moves to herold.outbox_refused and does not block the
rest."""

import signal
import subprocess
import time

import pytest

from helpers import BUILD, REPO, TIMEOUT, run, sanitizer_problems, sub_body
from pg import Database, psql, server_restart

SOURCE = BUILD / "herold-pg-source"
OUTBOX_SQL = REPO / "schemas" / "sql" / "outbox.sql"


@pytest.fixture
def store_db():
    db = Database()
    subprocess.run(["/usr/bin/psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.uri, "-f",
                    str(OUTBOX_SQL)], check=True, capture_output=True, timeout=TIMEOUT)
    yield db
    db.drop()


class Source:
    def __init__(self, db, broker, tmp_path):
        self.args = [str(SOURCE), "--db", db.uri, "--ingest", broker.ingest]
        self.log = tmp_path / "pg-source.log"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))

    def kill(self):
        self.proc.kill()
        self.proc.wait(TIMEOUT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(TIMEOUT) == 0, self.log.read_text()


@pytest.fixture
def source(store_db, broker, tmp_path):
    s = Source(store_db, broker, tmp_path)
    s.start()
    yield s
    s.stop()
    text = s.log.read_text(errors="replace")
    assert not sanitizer_problems(text), text


def emit(db, resource, readers="group:bau", type_="created"):
    db.query("SELECT herold.emit('dms', '%s', '%s', ARRAY['%s'], 'document', "
             "'{\"title\": \"T\", \"pages\": [1, 2.5, null, true]}')"
             % (type_, resource, readers))


def outbox_count(db):
    return int(db.query("SELECT count(*) FROM herold.outbox")[0][0])


def wait_until(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_emitted_row_reaches_a_websocket_and_leaves_the_outbox(broker, store_db, source):
    async def body():
        c = await broker.connect("anna", groups=("bau",))
        await c.subscribe("/dms/bau")
        start = time.monotonic()
        emit(store_db, "/dms/bau/doc1")
        item = await c.next_item()
        delay = time.monotonic() - start
        assert item["resource"] == "/dms/bau/doc1"
        assert item["changeType"] == "created"
        assert delay < 1.0, "a committed row took %.2f s to arrive" % delay
        assert wait_until(lambda: outbox_count(store_db) == 0)
        await c.close()

    run(body())


def test_nothing_is_lost_when_source_broker_or_database_die(broker, store_db, source):
    broker.create(sub_body(resource="/dms/bau"), user="anna", groups=("bau",))
    emitted = []

    def emit_some(tag, n):
        for i in range(n):
            r = "/dms/bau/%s-%d" % (tag, i)
            emit(store_db, r)
            emitted.append(r)

    emit_some("first", 5)
    source.kill()                      # the source dies with rows in flight or not
    emit_some("source-down", 10)
    source.start()
    assert wait_until(lambda: outbox_count(store_db) == 0)

    broker.kill_hard()                 # the broker dies; rows wait in the outbox
    emit_some("broker-down", 10)
    time.sleep(0.5)
    assert outbox_count(store_db) >= 10, "rows left the outbox without an ack"
    broker.restart()
    assert wait_until(lambda: outbox_count(store_db) == 0, 30)

    server_restart()                   # the database restarts under the source
    emit_some("db-restarted", 10)
    assert wait_until(lambda: outbox_count(store_db) == 0, 30)

    async def body():
        c = await broker.connect("anna", groups=("bau",), query="since=0")
        got = set()
        while not set(emitted) <= got:
            item = await c.next_item()
            got.add(item["resource"])
        await c.close()

    run(body())


def test_refused_row_moves_aside_and_the_rest_flow(broker, store_db, source):
    async def body():
        c = await broker.connect("anna", groups=("bau",))
        await c.subscribe("/dms/bau")
        emit(store_db, "dms/no-leading-slash")
        emit(store_db, "/dms/bau/after")
        assert (await c.next_item())["resource"] == "/dms/bau/after"
        await c.close()

    run(body())
    assert wait_until(lambda: outbox_count(store_db) == 0)
    rows = store_db.query("SELECT resource, error FROM herold.outbox_refused")
    assert len(rows) == 1 and rows[0][0] == "dms/no-leading-slash", rows
    assert "bad_path" in rows[0][1], rows
