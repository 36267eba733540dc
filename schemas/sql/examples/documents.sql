-- Example: a document store (cabinets, folders, documents) reporting to herold.
-- Needs ../outbox.sql. Resource paths: /dms/cabinets/<cabinet>/folders/<folder>/documents/<id>;
-- readers: the cabinet's. A document moved to another folder is an `updated` event with
-- `previous`, so followers of either folder hear of it.

CREATE SCHEMA IF NOT EXISTS dms;

CREATE TABLE IF NOT EXISTS dms.cabinets (
    id      text PRIMARY KEY,
    name    text NOT NULL,
    readers text[] NOT NULL -- user:<id>, group:<id>
);

CREATE TABLE IF NOT EXISTS dms.folders (
    id         text PRIMARY KEY,
    cabinet_id text NOT NULL REFERENCES dms.cabinets,
    name       text NOT NULL
);

CREATE TABLE IF NOT EXISTS dms.documents (
    id         text PRIMARY KEY,
    folder_id  text NOT NULL REFERENCES dms.folders,
    title      text NOT NULL,
    changed_by text
);

CREATE OR REPLACE FUNCTION dms.document_path(folder text, document text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT '/dms/cabinets/' || f.cabinet_id || '/folders/' || f.id || '/documents/' || document
    FROM dms.folders f WHERE f.id = folder
$$;

CREATE OR REPLACE FUNCTION dms.document_readers(folder text) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT c.readers FROM dms.folders f JOIN dms.cabinets c ON c.id = f.cabinet_id
    WHERE f.id = folder
$$;

CREATE OR REPLACE FUNCTION dms.documents_to_herold() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM herold.emit('dms', 'deleted', dms.document_path(OLD.folder_id, OLD.id),
                            dms.document_readers(OLD.folder_id), 'document',
                            jsonb_build_object('title', OLD.title), NULL, OLD.changed_by);
        RETURN OLD;
    END IF;
    PERFORM herold.emit('dms', CASE TG_OP WHEN 'INSERT' THEN 'created' ELSE 'updated' END,
                        dms.document_path(NEW.folder_id, NEW.id),
                        -- a move: readers of both cabinets may hear of it
                        CASE WHEN TG_OP = 'UPDATE' AND OLD.folder_id <> NEW.folder_id
                             THEN dms.document_readers(NEW.folder_id)
                                  || dms.document_readers(OLD.folder_id)
                             ELSE dms.document_readers(NEW.folder_id) END,
                        'document', jsonb_build_object('title', NEW.title),
                        CASE WHEN TG_OP = 'UPDATE' AND OLD.folder_id <> NEW.folder_id
                             THEN dms.document_path(OLD.folder_id, OLD.id) END,
                        NEW.changed_by);
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS documents_to_herold ON dms.documents;
CREATE TRIGGER documents_to_herold AFTER INSERT OR UPDATE OR DELETE ON dms.documents
    FOR EACH ROW EXECUTE FUNCTION dms.documents_to_herold();
