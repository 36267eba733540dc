-- herold's outbox: install into a store's own database (psql -f outbox.sql).
--
-- A store's triggers call herold.emit(...) in the same transaction as the change they
-- report, so an event exists exactly when its change was committed. herold-pg-source
-- reads the outbox in id order, publishes each row to herold and deletes it only after the
-- broker acknowledged it: a crash of the source, the broker or the database loses
-- nothing, and a row published twice (the source died between the ack and the delete)
-- carries the same event id both times, which the broker's dedup absorbs.
--
-- A row the broker refuses (a path it does not accept, a reader that is not a principal)
-- moves to herold.outbox_refused with the broker's error, so that it never blocks the
-- rows behind it.
--
-- Re-running this file is harmless.

CREATE SCHEMA IF NOT EXISTS herold;

CREATE TABLE IF NOT EXISTS herold.outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid NOT NULL DEFAULT gen_random_uuid(),
    source     text NOT NULL CHECK (octet_length(source) BETWEEN 1 AND 128),
    type       text NOT NULL CHECK (type IN ('created', 'updated', 'deleted')),
    resource   text NOT NULL,
    previous   text,
    readers    text[] NOT NULL,
    kind       text,
    actor      text,
    data       jsonb,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The outbox's columns (without its defaults and checks), the broker's error, and when.
CREATE TABLE IF NOT EXISTS herold.outbox_refused (
    LIKE herold.outbox,
    error      text NOT NULL,
    refused_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);

-- source: the store (dms, calendar, files); type: created, updated or deleted; resource:
-- the object's path; readers: who may read it (user:<id>, group:<id>, *); kind: its type
-- (becomes @odata.type); data: small resource data; previous: the old path of a move;
-- actor: who made the change.
CREATE OR REPLACE FUNCTION herold.emit(source text, type text, resource text, readers text[],
                                       kind text DEFAULT NULL, data jsonb DEFAULT NULL,
                                       previous text DEFAULT NULL, actor text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO herold.outbox (source, type, resource, previous, readers, kind, actor, data)
    VALUES (emit.source, emit.type, emit.resource, emit.previous, emit.readers, emit.kind,
            emit.actor, emit.data);
    -- Delivered at commit, once per transaction however many rows it emitted.
    PERFORM pg_notify('herold_outbox', '');
END
$$;
