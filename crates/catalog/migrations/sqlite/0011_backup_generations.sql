-- A project's backups generation: a fresh random value written in the same transaction
-- as every insert, update and delete of one of its backups (triggers, so no write path
-- can forget it). A page of the founding list rendered while the generation read G is
-- reused only while the generation still reads G; the generation is read before the
-- page, so a page is never older than the generation it is kept under. Random rather
-- than counted: a catalog restored to an earlier state does not bring back values
-- that pages of another state were kept under.
CREATE TABLE backup_generations (
    project_id TEXT NOT NULL PRIMARY KEY,
    generation INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO backup_generations (project_id, generation)
    SELECT project_id, random() FROM (SELECT DISTINCT project_id FROM backups);

CREATE TRIGGER backup_generations_ins AFTER INSERT ON backups BEGIN
    INSERT INTO backup_generations (project_id, generation) VALUES (new.project_id, random())
        ON CONFLICT (project_id) DO UPDATE SET generation = excluded.generation;
END;

CREATE TRIGGER backup_generations_upd AFTER UPDATE ON backups BEGIN
    INSERT INTO backup_generations (project_id, generation) VALUES (old.project_id, random())
        ON CONFLICT (project_id) DO UPDATE SET generation = excluded.generation;
    INSERT INTO backup_generations (project_id, generation)
        SELECT new.project_id, random() WHERE new.project_id IS NOT old.project_id
        ON CONFLICT (project_id) DO UPDATE SET generation = excluded.generation;
END;

CREATE TRIGGER backup_generations_del AFTER DELETE ON backups BEGIN
    INSERT INTO backup_generations (project_id, generation) VALUES (old.project_id, random())
        ON CONFLICT (project_id) DO UPDATE SET generation = excluded.generation;
END;
