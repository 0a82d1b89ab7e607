-- The backups table again, for two reasons.
--
-- 1. `id` is unique through a named index instead of an inline UNIQUE constraint, so
--    that a bulk import can drop it with the other indexes and build it once, sorted,
--    instead of updating it a million times in random order (1.8 s of a 21 s load).
--
-- 2. `name~` inside one project: the trigram index also holds a project tag, so that a
--    search ANDs the needle's trigram with the project's tag inside the index instead of
--    fetching every matching row of every project to read its project_id (measured on a
--    million rows where another project's 10,000 matches come first in list order:
--    8 ms of row lookups against 2 ms). The tag is the last three characters of the
--    project id, padded; projects may share one (it only narrows the candidates: rows
--    are still checked against project_id).

DROP TRIGGER backups_name_fts_ins;
DROP TRIGGER backups_name_fts_del;
DROP TRIGGER backups_name_fts_upd;
DROP TABLE backups_name_fts;

CREATE TABLE backups_new (
    pk                    INTEGER PRIMARY KEY,
    id                    TEXT    NOT NULL,
    project_id            TEXT    NOT NULL,
    user_id               TEXT,
    volume_id             TEXT    NOT NULL,
    snapshot_id           TEXT,
    parent_id             TEXT,
    display_name          TEXT,
    display_description   TEXT,
    status                TEXT    NOT NULL,
    fail_reason           TEXT,
    host                  TEXT,
    availability_zone     TEXT,
    container             TEXT,
    service               TEXT,
    service_metadata      TEXT,
    size                  BIGINT  NOT NULL DEFAULT 0,
    object_count          BIGINT  NOT NULL DEFAULT 0,
    num_dependent_backups BIGINT  NOT NULL DEFAULT 0,
    temp_volume_id        TEXT,
    temp_snapshot_id      TEXT,
    restore_volume_id     TEXT,
    encryption_key_id     TEXT,
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT,
    deleted_at            BIGINT,
    data_timestamp        BIGINT,
    deleted               BIGINT  NOT NULL DEFAULT 0,
    progress              TEXT,
    name_scope            TEXT    GENERATED ALWAYS AS (substr('~~~' || project_id, -3, 3)) VIRTUAL
);

INSERT INTO backups_new (pk, id, project_id, user_id, volume_id, snapshot_id, parent_id, display_name, display_description, status, fail_reason, host, availability_zone, container, service, service_metadata, size, object_count, num_dependent_backups, temp_volume_id, temp_snapshot_id, restore_volume_id, encryption_key_id, created_at, updated_at, deleted_at, data_timestamp, deleted, progress)
    SELECT pk, id, project_id, user_id, volume_id, snapshot_id, parent_id, display_name, display_description, status, fail_reason, host, availability_zone, container, service, service_metadata, size, object_count, num_dependent_backups, temp_volume_id, temp_snapshot_id, restore_volume_id, encryption_key_id, created_at, updated_at, deleted_at, data_timestamp, deleted, progress FROM backups;
-- Its indexes and triggers go with it.
DROP TABLE backups;
ALTER TABLE backups_new RENAME TO backups;

CREATE UNIQUE INDEX backups_id ON backups (id);
-- Default order (created_at desc, id desc) inside a project, and keyset paging on it.
-- The name (and `deleted`, which the partial-index condition reads) ride along so that
-- a summary list is answered from the index alone, without touching the table.
CREATE INDEX backups_project_created ON backups (project_id, created_at, id, display_name, deleted) WHERE deleted = 0;
-- Exact filters keep the default order: equality prefix, then created_at.
CREATE INDEX backups_project_status ON backups (project_id, status, created_at, id, display_name, deleted) WHERE deleted = 0;
CREATE INDEX backups_project_volume ON backups (project_id, volume_id, created_at, id, display_name, deleted) WHERE deleted = 0;
-- name: exact filter and sort=name (NULL sorts as '', as markers compare it).
CREATE INDEX backups_project_name ON backups (project_id, (COALESCE(display_name, '')), created_at, id, display_name, deleted) WHERE deleted = 0;
-- Admin all_tenants listing, and parent lookups.
CREATE INDEX backups_created ON backups (created_at, id, display_name, deleted) WHERE deleted = 0;
CREATE INDEX backups_parent ON backups (parent_id) WHERE parent_id IS NOT NULL;

CREATE TRIGGER backup_counts_ins AFTER INSERT ON backups WHEN new.deleted = 0 BEGIN
    INSERT INTO backup_counts (project_id, volume_id, status, n)
        VALUES (new.project_id, new.volume_id, new.status, 1)
        ON CONFLICT (project_id, volume_id, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER backup_counts_del AFTER DELETE ON backups WHEN old.deleted = 0 BEGIN
    UPDATE backup_counts SET n = n - 1
        WHERE project_id = old.project_id AND volume_id = old.volume_id AND status = old.status;
END;
CREATE TRIGGER backup_counts_upd AFTER UPDATE OF project_id, volume_id, status, deleted ON backups BEGIN
    UPDATE backup_counts SET n = n - 1
        WHERE old.deleted = 0 AND project_id = old.project_id
          AND volume_id = old.volume_id AND status = old.status;
    INSERT INTO backup_counts (project_id, volume_id, status, n)
        SELECT new.project_id, new.volume_id, new.status, 1 WHERE new.deleted = 0
        ON CONFLICT (project_id, volume_id, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER backups_creation_order_ins AFTER INSERT ON backups
WHEN new.deleted = 0 AND (
    EXISTS (SELECT 1 FROM backups o WHERE o.deleted = 0 AND o.pk < new.pk
            AND (o.created_at, o.id) > (new.created_at, new.id))
    OR EXISTS (SELECT 1 FROM backups o WHERE o.pk > new.pk))
BEGIN
    UPDATE catalog_flags SET value = 0 WHERE key = 'backups_in_creation_order';
END;
CREATE TRIGGER backups_creation_order_upd AFTER UPDATE OF pk, id, created_at, deleted ON backups
WHEN new.deleted = 0
BEGIN
    UPDATE catalog_flags SET value = 0 WHERE key = 'backups_in_creation_order';
END;

-- Queries are single trigrams (and the tag) filtered by column, with every candidate
-- checked with instr(): no positions (detail = column) and no column sizes (those are
-- for ranking) need storing.
CREATE VIRTUAL TABLE backups_name_fts USING fts5(
    display_name, name_scope, content = 'backups', content_rowid = 'pk', tokenize = 'trigram',
    detail = column, columnsize = 0
);
CREATE TRIGGER backups_name_fts_ins AFTER INSERT ON backups BEGIN
    INSERT INTO backups_name_fts (rowid, display_name, name_scope)
        VALUES (new.pk, new.display_name, new.name_scope);
END;
CREATE TRIGGER backups_name_fts_del AFTER DELETE ON backups BEGIN
    INSERT INTO backups_name_fts (backups_name_fts, rowid, display_name, name_scope)
        VALUES ('delete', old.pk, old.display_name, old.name_scope);
END;
CREATE TRIGGER backups_name_fts_upd AFTER UPDATE OF display_name, project_id ON backups BEGIN
    INSERT INTO backups_name_fts (backups_name_fts, rowid, display_name, name_scope)
        VALUES ('delete', old.pk, old.display_name, old.name_scope);
    INSERT INTO backups_name_fts (rowid, display_name, name_scope)
        VALUES (new.pk, new.display_name, new.name_scope);
END;
INSERT INTO backups_name_fts (backups_name_fts) VALUES ('rebuild');
