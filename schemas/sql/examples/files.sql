-- Example: file shares kept in a database (the metadata of a file service) reporting to
-- herold. Needs ../outbox.sql. Resource paths: /files/shares/<share>/<path>; readers: the
-- share's. A rename or move is `updated` with `previous`.

CREATE SCHEMA IF NOT EXISTS files;

CREATE TABLE IF NOT EXISTS files.shares (
    id      text PRIMARY KEY,
    readers text[] NOT NULL
);

CREATE TABLE IF NOT EXISTS files.files (
    id       bigserial PRIMARY KEY,
    share_id text NOT NULL REFERENCES files.shares,
    path     text NOT NULL, -- within the share, without a leading slash: "Anträge/2026/a.pdf"
    size     bigint NOT NULL DEFAULT 0,
    UNIQUE (share_id, path)
);

CREATE OR REPLACE FUNCTION files.files_to_herold() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM herold.emit('files', 'deleted', '/files/shares/' || OLD.share_id || '/' || OLD.path,
                            (SELECT readers FROM files.shares WHERE id = OLD.share_id), 'driveItem',
                            jsonb_build_object('size', OLD.size));
        RETURN OLD;
    END IF;
    PERFORM herold.emit('files', CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END,
                        '/files/shares/' || NEW.share_id || '/' || NEW.path,
                        (SELECT readers FROM files.shares WHERE id = NEW.share_id), 'driveItem',
                        jsonb_build_object('size', NEW.size),
                        CASE WHEN TG_OP = 'UPDATE' AND (OLD.path, OLD.share_id)
                                                       IS DISTINCT FROM (NEW.path, NEW.share_id)
                             THEN '/files/shares/' || OLD.share_id || '/' || OLD.path END);
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS files_to_herold ON files.files;
CREATE TRIGGER files_to_herold AFTER INSERT OR UPDATE OR DELETE ON files.files
    FOR EACH ROW EXECUTE FUNCTION files.files_to_herold();
