-- herold broker schema, version 1: the events log, persistent subscriptions and delivery
-- cursors (see README.md). store_pg_open applies it in one transaction; broker/store_pg.c
-- holds a byte-identical copy, which a unit test compares with this file.
CREATE SCHEMA IF NOT EXISTS herold_broker;

CREATE TABLE herold_broker.schema_version (
    version integer NOT NULL
);
INSERT INTO herold_broker.schema_version (version) VALUES (1);

-- One row per accepted event; seq is consecutive from 1, assigned by the broker.
CREATE TABLE herold_broker.events (
    seq bigint PRIMARY KEY,
    time_ms bigint NOT NULL,
    payload bytea NOT NULL
);

-- created orders the load at start-up: an upsert keeps it, so a replaced document loads
-- where it was first put.
CREATE TABLE herold_broker.subscriptions (
    id text PRIMARY KEY,
    document text NOT NULL,
    created bigserial NOT NULL
);

-- The last seq delivered, per webhook subscription id or "user:<id>"; it only grows.
CREATE TABLE herold_broker.cursors (
    key text PRIMARY KEY,
    seq bigint NOT NULL
);
