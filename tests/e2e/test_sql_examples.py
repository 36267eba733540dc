"""The example store triggers (schemas/sql/examples/) against a real PostgreSQL: each
change of a document, a calendar event or a file writes the outbox row herold-pg-source
would publish, with the resource path, readers, previous path of a move, kind and data;
a rolled-back change writes none. Installing twice is harmless."""

import json
import subprocess

import pytest

from helpers import REPO, TIMEOUT
from pg import Database

SQL = REPO / "schemas" / "sql"


@pytest.fixture
def db():
    d = Database()
    for _ in range(2):
        for f in ["outbox.sql", "examples/documents.sql", "examples/calendar.sql",
                  "examples/files.sql"]:
            subprocess.run(["/usr/bin/psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", d.uri, "-f",
                            str(SQL / f)], check=True, capture_output=True, timeout=TIMEOUT)
    yield d
    d.drop()


def outbox(db):
    rows = db.query("SELECT json_build_object('source', source, 'type', type, 'resource',"
                    " resource, 'previous', previous, 'readers', readers, 'kind', kind,"
                    " 'actor', actor, 'data', data) FROM herold.outbox ORDER BY id")
    db.query("DELETE FROM herold.outbox")
    return [json.loads(r[0]) for r in rows]


def test_documents(db):
    db.query("INSERT INTO dms.cabinets VALUES ('bau', 'Bauamt', ARRAY['group:bau']),"
             " ('it', 'IT', ARRAY['group:it', 'user:chef']);"
             "INSERT INTO dms.folders VALUES ('f1', 'bau', 'Anträge'), ('f2', 'it', 'Server');"
             "INSERT INTO dms.documents VALUES ('4711', 'f1', 'Antrag', 'anna')")
    created, = outbox(db)
    assert created == {"source": "dms", "type": "created",
                       "resource": "/dms/cabinets/bau/folders/f1/documents/4711",
                       "previous": None, "readers": ["group:bau"], "kind": "document",
                       "actor": "anna", "data": {"title": "Antrag"}}
    db.query("UPDATE dms.documents SET folder_id = 'f2', changed_by = 'bob' WHERE id = '4711'")
    moved, = outbox(db)
    assert moved["type"] == "updated"
    assert moved["resource"] == "/dms/cabinets/it/folders/f2/documents/4711"
    assert moved["previous"] == "/dms/cabinets/bau/folders/f1/documents/4711"
    assert sorted(moved["readers"]) == ["group:bau", "group:it", "user:chef"]
    db.query("DELETE FROM dms.documents WHERE id = '4711'")
    deleted, = outbox(db)
    assert deleted["type"] == "deleted" and deleted["readers"] == ["group:it", "user:chef"]
    db.query("BEGIN; INSERT INTO dms.documents VALUES ('9', 'f1', 'x', 'anna'); ROLLBACK")
    assert outbox(db) == []


def test_calendar(db):
    db.query("INSERT INTO calendar.events VALUES ('e1', 'anna', 'Jour fixe',"
             " '2026-12-01 10:00+01', ARRAY['bob', 'carla'])")
    created, = outbox(db)
    assert created["resource"] == "/calendar/users/anna/events/e1"
    assert created["readers"] == ["user:anna", "user:bob", "user:carla"]
    assert created["kind"] == "event" and created["data"]["subject"] == "Jour fixe"
    db.query("UPDATE calendar.events SET attendees = '{}' WHERE id = 'e1';"
             "DELETE FROM calendar.events WHERE id = 'e1'")
    updated, deleted = outbox(db)
    assert updated["type"] == "updated" and updated["readers"] == ["user:anna"]
    assert deleted["type"] == "deleted"


def test_files(db):
    db.query("INSERT INTO files.shares VALUES ('buergerbuero', ARRAY['group:bb']);"
             "INSERT INTO files.files (share_id, path, size)"
             " VALUES ('buergerbuero', 'Anträge/2026/a.pdf', 10)")
    created, = outbox(db)
    assert created["resource"] == "/files/shares/buergerbuero/Anträge/2026/a.pdf"
    assert created["readers"] == ["group:bb"] and created["kind"] == "driveItem"
    db.query("UPDATE files.files SET size = 20;"
             "UPDATE files.files SET path = 'Anträge/2027/a.pdf'")
    grown, renamed = outbox(db)
    assert grown["previous"] is None and grown["data"] == {"size": 20}
    assert renamed["previous"] == "/files/shares/buergerbuero/Anträge/2026/a.pdf"
    assert renamed["resource"] == "/files/shares/buergerbuero/Anträge/2027/a.pdf"
