-- Example: a calendar reporting to herold. Needs ../outbox.sql. Resource paths:
-- /calendar/users/<owner>/events/<id>; readers: the owner and the attendees.

CREATE SCHEMA IF NOT EXISTS calendar;

CREATE TABLE IF NOT EXISTS calendar.events (
    id        text PRIMARY KEY,
    owner     text NOT NULL,
    title     text NOT NULL,
    starts_at timestamptz NOT NULL,
    attendees text[] NOT NULL DEFAULT '{}'
);

CREATE OR REPLACE FUNCTION calendar.events_to_herold() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e calendar.events;
BEGIN
    e := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    PERFORM herold.emit(
        'calendar',
        CASE TG_OP WHEN 'INSERT' THEN 'created' WHEN 'UPDATE' THEN 'updated' ELSE 'deleted' END,
        '/calendar/users/' || e.owner || '/events/' || e.id,
        ARRAY['user:' || e.owner] || ARRAY(SELECT 'user:' || a FROM unnest(e.attendees) a),
        'event',
        jsonb_build_object('subject', e.title, 'start', e.starts_at),
        NULL, e.owner);
    RETURN e;
END
$$;

DROP TRIGGER IF EXISTS events_to_herold ON calendar.events;
CREATE TRIGGER events_to_herold AFTER INSERT OR UPDATE OR DELETE ON calendar.events
    FOR EACH ROW EXECUTE FUNCTION calendar.events_to_herold();
