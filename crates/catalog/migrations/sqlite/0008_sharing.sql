-- Backup sharing (VBS `os-vendor-backup-sharing`): a record per project a backup is
-- shared with. `backups.share_count` counts a backup's records on the row itself, so
-- that the conditional update that starts a delete (`share_count = 0`) and the one
-- that shares (`status = 'available'`) lock the same row and cannot both win.

CREATE TABLE backup_shares (
    id              TEXT   NOT NULL PRIMARY KEY,
    backup_id       TEXT   NOT NULL,
    from_project_id TEXT   NOT NULL,
    to_project_id   TEXT   NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT
);
CREATE UNIQUE INDEX backup_shares_target ON backup_shares (backup_id, to_project_id);
CREATE INDEX backup_shares_to ON backup_shares (to_project_id, created_at);
CREATE INDEX backup_shares_from ON backup_shares (from_project_id, created_at);

ALTER TABLE backups ADD COLUMN share_count BIGINT NOT NULL DEFAULT 0;
