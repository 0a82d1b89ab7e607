-- The vbs catalog on SQLite. Timestamps are microseconds since the Unix epoch (UTC);
-- ids are text. `deleted` soft-deletes a row; every list index is partial on
-- `deleted = 0` so soft-deleted rows cost the hot paths nothing.

CREATE TABLE backups (
    pk                    INTEGER PRIMARY KEY,
    id                    TEXT    NOT NULL UNIQUE,
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
    deleted               BIGINT  NOT NULL DEFAULT 0
);

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

-- Substring search on names: a trigram index (case-insensitive), kept by triggers.
CREATE VIRTUAL TABLE backups_name_fts USING fts5(
    display_name, content = 'backups', content_rowid = 'pk', tokenize = 'trigram'
);
CREATE TRIGGER backups_name_fts_ins AFTER INSERT ON backups BEGIN
    INSERT INTO backups_name_fts (rowid, display_name) VALUES (new.pk, new.display_name);
END;
CREATE TRIGGER backups_name_fts_del AFTER DELETE ON backups BEGIN
    INSERT INTO backups_name_fts (backups_name_fts, rowid, display_name)
        VALUES ('delete', old.pk, old.display_name);
END;
CREATE TRIGGER backups_name_fts_upd AFTER UPDATE OF display_name ON backups BEGIN
    INSERT INTO backups_name_fts (backups_name_fts, rowid, display_name)
        VALUES ('delete', old.pk, old.display_name);
    INSERT INTO backups_name_fts (rowid, display_name) VALUES (new.pk, new.display_name);
END;

-- Live backups per (project, volume, status): `count` without a scan, and the distinct
-- values that `status~` / `volume_id~` expand to. Rows may reach n = 0; readers use n > 0.
CREATE TABLE backup_counts (
    project_id TEXT   NOT NULL,
    volume_id  TEXT   NOT NULL,
    status     TEXT   NOT NULL,
    n          BIGINT NOT NULL,
    PRIMARY KEY (project_id, volume_id, status)
);
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

-- Whether rowids follow (created_at, id) among live backups. Rows are normally
-- appended newest last, so they do; then a trigram match read in rowid order is already
-- in list order and a page stops early instead of sorting every candidate. Any insert
-- out of order, any change of a key, or a revived row clears the flag for good (a bulk
-- load sets it from what it loaded).
CREATE TABLE catalog_flags (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO catalog_flags (key, value) VALUES ('backups_in_creation_order', 1);
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

CREATE TABLE backup_metadata (
    backup_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (backup_id, key)
);

CREATE TABLE volumes (
    pk                INTEGER PRIMARY KEY,
    id                TEXT    NOT NULL UNIQUE,
    project_id        TEXT    NOT NULL,
    user_id           TEXT,
    display_name      TEXT,
    display_description TEXT,
    size              BIGINT  NOT NULL DEFAULT 0,
    status            TEXT    NOT NULL,
    previous_status   TEXT,
    attach_status     TEXT    NOT NULL DEFAULT 'detached',
    availability_zone TEXT,
    volume_type       TEXT,
    bootable          BIGINT  NOT NULL DEFAULT 0,
    provider_location TEXT,
    managed           BIGINT  NOT NULL DEFAULT 0,
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT,
    deleted_at        BIGINT,
    deleted           BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX volumes_project_created ON volumes (project_id, created_at, id) WHERE deleted = 0;

CREATE TABLE volume_metadata (
    volume_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (volume_id, key)
);

CREATE TABLE snapshots (
    pk                  INTEGER PRIMARY KEY,
    id                  TEXT    NOT NULL UNIQUE,
    project_id          TEXT    NOT NULL,
    user_id             TEXT,
    volume_id           TEXT    NOT NULL,
    display_name        TEXT,
    display_description TEXT,
    size                BIGINT  NOT NULL DEFAULT 0,
    status              TEXT    NOT NULL,
    progress            TEXT,
    provider_location   TEXT,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT,
    deleted_at          BIGINT,
    deleted             BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX snapshots_project_created ON snapshots (project_id, created_at, id) WHERE deleted = 0;
CREATE INDEX snapshots_volume ON snapshots (volume_id) WHERE deleted = 0;
