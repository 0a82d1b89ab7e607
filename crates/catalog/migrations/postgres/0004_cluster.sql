-- Many nodes on one catalog: who is alive and with which roles, the repository lock
-- that keeps garbage collection away from backups being written, and a history of
-- finished jobs (which node ran what).

CREATE TABLE nodes (
    name        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    instance    TEXT NOT NULL,
    roles       TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);

-- One row per holder: 'shared' (a backup writing packs), 'exclusive' (a GC sweeping)
-- or 'intent' (a GC waiting for the writers to finish; it keeps new ones out).
CREATE TABLE repository_locks (
    holder      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    mode        TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);

ALTER TABLE jobs ADD COLUMN finished_at BIGINT;
