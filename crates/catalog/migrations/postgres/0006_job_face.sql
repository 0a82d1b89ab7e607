-- Jobs as users see them (VBS `GET /v1/{project_id}/jobs/{job_id}`): the work queue's
-- rows get a public id, the project that asked, the backup's name at the time, and
-- how the work ended. `outcome` is written by the transaction that moves the backup to
-- its end status where one exists, so a job never says SUCCESS for work that is not
-- durable; `finished_at` doubles as the job's end time.

ALTER TABLE jobs ADD COLUMN id TEXT COLLATE "C";
ALTER TABLE jobs ADD COLUMN project_id TEXT COLLATE "C";
ALTER TABLE jobs ADD COLUMN entities TEXT;
ALTER TABLE jobs ADD COLUMN outcome TEXT;
ALTER TABLE jobs ADD COLUMN error_code TEXT;
ALTER TABLE jobs ADD COLUMN fail_reason TEXT;
ALTER TABLE jobs ADD COLUMN parent_id TEXT COLLATE "C";
CREATE UNIQUE INDEX jobs_id ON jobs (id);
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

-- VBS backup tags (`/cloudbackups` create), apart from Cinder's metadata.
CREATE TABLE backup_tags (
    backup_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (backup_id, key)
);
