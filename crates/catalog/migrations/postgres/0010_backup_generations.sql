-- A project's backups generation (see the SQLite migration of the same name): a fresh
-- random value written in the same transaction as every insert, update and delete of
-- one of its backups, so that a cached page of the founding list is reused only while
-- nothing it shows can have changed.
CREATE TABLE backup_generations (
    project_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    generation BIGINT NOT NULL
);

INSERT INTO backup_generations (project_id, generation)
    SELECT project_id, floor(random() * 9007199254740991)::bigint
    FROM (SELECT DISTINCT project_id FROM backups) p;

CREATE FUNCTION backup_generations_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO backup_generations (project_id, generation)
            VALUES (OLD.project_id, floor(random() * 9007199254740991)::bigint)
            ON CONFLICT (project_id) DO UPDATE SET generation = EXCLUDED.generation;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.project_id IS DISTINCT FROM OLD.project_id) THEN
        INSERT INTO backup_generations (project_id, generation)
            VALUES (NEW.project_id, floor(random() * 9007199254740991)::bigint)
            ON CONFLICT (project_id) DO UPDATE SET generation = EXCLUDED.generation;
    END IF;
    RETURN NULL;
END
$$;

-- Deferred to the commit, so that the project's row is always the last lock a
-- transaction takes: fired with each statement, an incremental backup (its row, then its
-- parent's) and the parent's delete (the parent, then the project's row) deadlocked.
CREATE CONSTRAINT TRIGGER backup_generations_bump
    AFTER INSERT OR DELETE OR UPDATE ON backups
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION backup_generations_bump();
