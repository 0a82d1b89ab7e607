-- Backup policies (VBS spec 03 §5): when to back up which disks and how many backups
-- to keep. A slot (a policy's start time on a due day) fires exactly once however many
-- schedulers run: each claims it by inserting its row in policy_slots, whose key
-- refuses a second claim, in the transaction that queues the run's job. A run's
-- backups record their task in the transaction that creates them; the key of
-- policy_tasks refuses a second backup of one disk for one slot when a run is taken
-- over by another worker.

CREATE TABLE backup_policies (
    id                  TEXT   NOT NULL PRIMARY KEY,
    project_id          TEXT   NOT NULL,
    user_id             TEXT,
    name                TEXT   NOT NULL,
    start_time          TEXT   NOT NULL,
    frequency           BIGINT,
    week_frequency      TEXT,
    retention_num       BIGINT,
    retention_day       BIGINT,
    keep_first_of_month TEXT,
    status              TEXT   NOT NULL,
    time_zone           TEXT,
    -- Slots at or before this instant are never fired (creation, or the last change of
    -- the schedule or of the status to ON).
    scheduled_from      BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT
);
CREATE INDEX backup_policies_project ON backup_policies (project_id, created_at);
CREATE INDEX backup_policies_status ON backup_policies (status);

-- A disk belongs to at most one policy.
CREATE TABLE policy_resources (
    volume_id  TEXT   NOT NULL PRIMARY KEY,
    policy_id  TEXT   NOT NULL,
    project_id TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX policy_resources_policy ON policy_resources (policy_id);

CREATE TABLE policy_tags (
    policy_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (policy_id, key)
);

-- One row per fired (or skipped) slot: the claim.
CREATE TABLE policy_slots (
    policy_id  TEXT   NOT NULL,
    slot       BIGINT NOT NULL,
    state      TEXT   NOT NULL,
    job_id     TEXT,
    node       TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (policy_id, slot)
);

-- One row per disk per run: the backup it made (its job says how that went), or why
-- there is none (`SKIP`, `EXECUTE_FAIL` with a message).
CREATE TABLE policy_tasks (
    id          TEXT   NOT NULL PRIMARY KEY,
    policy_id   TEXT   NOT NULL,
    slot        BIGINT NOT NULL,
    volume_id   TEXT   NOT NULL,
    run_job_id  TEXT,
    status      TEXT   NOT NULL,
    message     TEXT,
    backup_id   TEXT,
    backup_name TEXT,
    vbs_job_id  TEXT,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE UNIQUE INDEX policy_tasks_run ON policy_tasks (policy_id, slot, volume_id);
CREATE INDEX policy_tasks_policy ON policy_tasks (policy_id, created_at, id);
CREATE INDEX policy_tasks_backup ON policy_tasks (backup_id) WHERE backup_id IS NOT NULL;
-- Every finished job looks for its task (the task ends with its backup's job).
CREATE INDEX policy_tasks_job ON policy_tasks (vbs_job_id) WHERE vbs_job_id IS NOT NULL;
