-- Volumes, snapshots and attachments as the volume API writes them: the columns the
-- views and status rules need beyond 0001, attachments, snapshot metadata, and the
-- indexes behind admin listing, snapshot checks and "already managed".

ALTER TABLE volumes ADD COLUMN host TEXT;
ALTER TABLE volumes ADD COLUMN snapshot_id TEXT;
ALTER TABLE volumes ADD COLUMN source_volid TEXT;
ALTER TABLE volumes ADD COLUMN migration_status TEXT;

-- Admin all_tenants listing in the default order.
CREATE INDEX volumes_created ON volumes (created_at, id) WHERE deleted = 0;
-- One live volume per managed file or device.
CREATE UNIQUE INDEX volumes_managed_location ON volumes (provider_location)
    WHERE deleted = 0 AND managed = 1;

CREATE TABLE volume_attachment (
    pk            INTEGER PRIMARY KEY,
    id            TEXT    NOT NULL UNIQUE,
    volume_id     TEXT    NOT NULL,
    instance_uuid TEXT,
    attached_host TEXT,
    mountpoint    TEXT,
    attach_mode   TEXT,
    attach_status TEXT    NOT NULL,
    attach_time   BIGINT,
    detach_time   BIGINT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT,
    deleted_at    BIGINT,
    deleted       BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX volume_attachment_volume ON volume_attachment (volume_id) WHERE deleted = 0;

CREATE TABLE snapshot_metadata (
    snapshot_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, key)
);
