"""PostgreSQL for the end-to-end tests: a fresh database per test on the throwaway server
that tests/with-pg starts, and the means to crash and restart that server.

tests/with-pg exports HEROLD_TEST_PG, a libpq conninfo
`host=DIR port=P user=herold dbname=postgres` (a unix socket in DIR), and
HEROLD_TEST_PG_DIR, the directory `tests/pg-server stop|kill|restart DIR` works on. Without
them a PostgreSQL test fails and says how to run it: a test that silently skipped would
look like a store that passed.

Everything goes through /usr/bin/psql (no Python driver is installed), one process per
statement, which is fast enough for the few statements a test makes.
"""

import contextlib
import os
import re
import select
import subprocess
import time
import urllib.parse
import uuid

import pytest

from helpers import REPO, START_TIMEOUT, TIMEOUT

PSQL = "/usr/bin/psql"
PG_SERVER = REPO / "tests" / "pg-server"
PG_ISREADY = "/usr/lib/postgresql/15/bin/pg_isready"

# pg-server start/stop/restart wait for the server themselves (up to 60 s).
SERVER_TIMEOUT = 90.0

RUN_UNDER = ("PostgreSQL tests need a server: run them under tests/with-pg, e.g.\n"
             "  tests/with-pg env HEROLD_BUILD=build python3 -m pytest tests/e2e/...\n"
             "(it exports HEROLD_TEST_PG and HEROLD_TEST_PG_DIR)")


def server_conninfo():
    """The conninfo of the test server as a dict (host, port, user, dbname); fails the
    test when there is no server."""
    text = os.environ.get("HEROLD_TEST_PG")
    if not text or not os.environ.get("HEROLD_TEST_PG_DIR"):
        pytest.fail(RUN_UNDER, pytrace=False)
    fields = dict(re.findall(r"(\w+)=(\S+)", text))
    missing = {"host", "port", "user"} - set(fields)
    assert not missing, "HEROLD_TEST_PG=%r lacks %s" % (text, ", ".join(sorted(missing)))
    return fields


def server_dir():
    server_conninfo()
    return os.environ["HEROLD_TEST_PG_DIR"]


def _conninfo_text(fields, dbname):
    return " ".join("%s=%s" % (k, v) for k, v in dict(fields, dbname=dbname).items())


def psql(sql, dbname="postgres", timeout=TIMEOUT):
    """Runs sql (one statement or several) with psql against dbname; returns the rows as
    lists of strings (unaligned, tuples only). Fails the test when psql does."""
    fields = server_conninfo()
    done = subprocess.run(
        [PSQL, _conninfo_text(fields, dbname), "-X", "-q", "-A", "-t", "-F", "\t",
         "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, "psql %r failed (%d): %s" % (sql, done.returncode, done.stderr)
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def _pg_server(command):
    done = subprocess.run([str(PG_SERVER), command, server_dir()], capture_output=True,
                          text=True, timeout=SERVER_TIMEOUT)
    assert done.returncode == 0, "tests/pg-server %s failed (%d): %s%s" % (
        command, done.returncode, done.stdout, done.stderr)
    return done.stdout.strip()


def is_ready():
    fields = server_conninfo()
    done = subprocess.run([PG_ISREADY, "-q", "-h", fields["host"], "-p", fields["port"],
                           "-U", fields["user"], "-d", "postgres"],
                          capture_output=True, timeout=TIMEOUT)
    return done.returncode == 0


def server_kill():
    """SIGKILL of the postmaster (a crash); returns when its backends are gone too."""
    _pg_server("kill")


def server_stop():
    """A fast shutdown: sessions are ended, the server is down when this returns."""
    _pg_server("stop")


def server_start():
    """Starts the server (after a stop or a kill: crash recovery) and waits until it
    accepts connections. A no-op when it runs."""
    line = _pg_server("start")
    fields = server_conninfo()
    assert "port=%s" % fields["port"] in line, \
        "the server came back on another socket: %r (expected port %s)" % (line, fields["port"])


def server_restart():
    """Stops the server if it runs and starts it again on the same data and socket."""
    _pg_server("restart")


def ensure_server():
    """Leaves the server running and accepting connections, whatever a test did to it."""
    if not is_ready():
        server_start()
    deadline = time.monotonic() + START_TIMEOUT
    while not is_ready():
        assert time.monotonic() < deadline, "the PostgreSQL test server does not come back"
        time.sleep(0.1)


class Database:
    """A database of its own on the test server, for one test."""

    def __init__(self):
        fields = server_conninfo()
        self.name = "herold_e2e_" + uuid.uuid4().hex[:16]
        self.host = fields["host"]
        self.port = fields["port"]
        self.user = fields["user"]
        psql('CREATE DATABASE "%s"' % self.name)
        self.dropped = False

    @property
    def uri(self):
        """The --store URI: postgresql://USER@/NAME?host=DIR&port=P (a unix socket
        directory goes in the host parameter, percent-encoded)."""
        query = urllib.parse.urlencode({"host": self.host, "port": self.port},
                                       quote_via=urllib.parse.quote, safe="")
        return "postgresql://%s@/%s?%s" % (urllib.parse.quote(self.user, safe=""),
                                           urllib.parse.quote(self.name, safe=""), query)

    def query(self, sql):
        """Rows of sql run in this database (lists of strings)."""
        return psql(sql, dbname=self.name)

    @contextlib.contextmanager
    def locked(self, table):
        """Holds an ACCESS EXCLUSIVE lock on table, in a session of its own, for the with
        block: every statement of the broker's on the table waits until the block ends."""
        fields = server_conninfo()
        session = subprocess.Popen(
            [PSQL, _conninfo_text(fields, self.name), "-X", "-q", "-A", "-t",
             "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            session.stdin.write("BEGIN;\nLOCK TABLE %s IN ACCESS EXCLUSIVE MODE;\n"
                                "\\echo locked\n" % table)
            session.stdin.flush()
            ready, _, _ = select.select([session.stdout], [], [], TIMEOUT)
            assert ready and session.stdout.readline().strip() == "locked", \
                "psql did not take the lock on %s: %s" % (table, session.stderr.read())
            yield
        finally:
            if session.poll() is None:
                session.stdin.write("COMMIT;\n")
                session.stdin.close()
                session.wait(timeout=TIMEOUT)

    def waiting_for_locks(self):
        """The number of sessions in this database waiting for a lock."""
        return int(self.query("SELECT count(*) FROM pg_stat_activity "
                              "WHERE datname = current_database() "
                              "AND wait_event_type = 'Lock'")[0][0])

    def drop(self):
        """Drops the database (ending any session still in it). Safe to call twice."""
        if not self.dropped:
            ensure_server()
            psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % self.name)
            self.dropped = True

    def __repr__(self):
        return "<Database %s>" % self.name
