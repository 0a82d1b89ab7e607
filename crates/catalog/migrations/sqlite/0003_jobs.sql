-- The work queue (backup, restore and delete work, claimed by workers with a lease)
-- and the live progress of a running backup or restore.

CREATE TABLE jobs (
    pk          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    backup_id   TEXT    NOT NULL,
    volume_id   TEXT,
    state       TEXT    NOT NULL,
    worker      TEXT,
    lease_until BIGINT,
    attempts    BIGINT  NOT NULL DEFAULT 0,
    options     TEXT,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX jobs_claim ON jobs (state, pk);
CREATE INDEX jobs_backup ON jobs (backup_id);

ALTER TABLE backups ADD COLUMN progress TEXT;
