#!/usr/bin/python3
"""make demo: herold with all three kinds of store feeding it, and the live-alert page.

Starts, in a temporary directory:
  - a throwaway PostgreSQL (tests/pg-server, as a non-root user) holding the example store
    tables of schemas/sql/examples/ (documents, calendar events, files) and the outbox;
  - herold on http://127.0.0.1:8080 (or a free port), serving the page;
  - herold-pg-source, publishing the outbox;
  - a shared directory watched by herold-fs-source;
  - a little script that changes a document, a calendar event or a file every few seconds.
Then prints the page's address and tokens for two users with different groups, and runs
until Ctrl-C, when it stops everything and removes the directory.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, os.environ.get("HEROLD_BUILD", "build"))


def free_port(preferred):
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise SystemExit("demo: no free port")


def psql(conninfo, sql):
    subprocess.run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c",
                    sql], check=True, capture_output=True)


def psql_file(conninfo, path):
    subprocess.run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f",
                    path], check=True, capture_output=True)


def main():
    work = tempfile.mkdtemp(prefix="herold-demo-")
    os.chmod(work, 0o755)  # the database server runs as another user
    children = []
    pg_dir = os.path.join(work, "pg")
    os.mkdir(pg_dir)
    try:
        server = subprocess.run([os.path.join(REPO, "tests", "pg-server"), "start", pg_dir],
                                check=True, capture_output=True, text=True).stdout.strip()
        fields = dict(f.split("=", 1) for f in server.split())
        psql(server, "CREATE DATABASE stadt")
        store = " ".join("%s=%s" % (k, v) for k, v in dict(fields, dbname="stadt").items())
        for f in ["outbox.sql", "examples/documents.sql", "examples/calendar.sql",
                  "examples/files.sql"]:
            psql_file(store, os.path.join(REPO, "schemas", "sql", f))
        psql(store, "INSERT INTO dms.cabinets VALUES ('bau', 'Bauamt', ARRAY['group:bau']),"
                    " ('it', 'IT-Dienste', ARRAY['group:it']);"
                    "INSERT INTO dms.folders VALUES ('antraege', 'bau', 'Anträge'),"
                    " ('server', 'it', 'Server');"
                    "INSERT INTO dms.documents VALUES ('4711', 'antraege', 'Bauantrag', 'anna'),"
                    " ('42', 'server', 'Wartungsplan', 'bob')")

        data = os.path.join(work, "data")
        http = free_port(8080)
        ingest = "tcp://127.0.0.1:%d" % free_port(5560)
        log = open(os.path.join(work, "demo.log"), "ab")
        herold = subprocess.Popen([os.path.join(BUILD, "herold"), "--data", data, "--http",
                                   "127.0.0.1:%d" % http, "--ingest", ingest, "--web",
                                   os.path.join(REPO, "clients", "web")],
                                  stdout=log, stderr=log)
        children.append(herold)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", http), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        children.append(subprocess.Popen([os.path.join(BUILD, "herold-pg-source"), "--db",
                                          store, "--ingest", ingest], stdout=log, stderr=log))
        share = os.path.join(work, "share", "buergerbuero")
        os.makedirs(os.path.join(share, "Anträge"))
        readers = os.path.join(work, "share-readers")
        with open(readers, "w") as f:
            f.write("/ group:bau,group:it\n")
        children.append(subprocess.Popen([os.path.join(BUILD, "herold-fs-source"), "--root",
                                          share, "--readers", readers, "--prefix",
                                          "/files/shares/buergerbuero", "--ingest", ingest],
                                         stdout=log, stderr=log))

        def token(user, groups):
            return subprocess.run([os.path.join(BUILD, "herold"), "token", user, "--groups",
                                   groups, "--ttl", "86400", "--data", data], check=True,
                                  capture_output=True, text=True).stdout.strip()

        print("\nherold demo: open http://127.0.0.1:%d/ and paste a token.\n" % http)
        print("anna (group bau): follow /dms/cabinets/bau, /calendar/users/anna or /files\n  %s\n"
              % token("anna", "bau"))
        print("bob (group it): follow /dms/cabinets/it or /files; he never hears of bau's "
              "documents\n  %s\n" % token("bob", "it"))
        print("Changes are made every few seconds; logs in %s. Ctrl-C stops it all.\n"
              % os.path.join(work, "demo.log"))
        sys.stdout.flush()

        stop = []
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        step = 0
        while not stop:
            step += 1
            what = step % 4
            if what == 0:
                psql(store, "UPDATE dms.documents SET title = 'Bauantrag (Fassung %d)',"
                            " changed_by = 'carla' WHERE id = '4711'" % step)
            elif what == 1:
                psql(store, "INSERT INTO calendar.events VALUES ('termin-%d', 'anna',"
                            " 'Ortstermin %d', now() + interval '1 day', ARRAY['bob'])"
                            % (step, step))
            elif what == 2:
                with open(os.path.join(share, "Anträge", "antrag-%d.pdf" % step), "wb") as f:
                    f.write(os.urandom(1000 + random.randrange(5000)))
            else:
                psql(store, "UPDATE dms.documents SET title = 'Wartungsplan %d',"
                            " changed_by = 'dora' WHERE id = '42'" % step)
            for _ in range(30):
                if stop:
                    break
                time.sleep(0.1)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
        subprocess.run([os.path.join(REPO, "tests", "pg-server"), "stop", pg_dir, "--remove"],
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        print("herold demo: stopped")


if __name__ == "__main__":
    main()
