-- Quotas: per-project limits set by admins (others take the configured defaults) and
-- what each project uses, kept exact by triggers on every row change, whichever path
-- wrote it. A create checks the usage row inside its own transaction, after its
-- insert moved it: over a limit, the transaction rolls back (crates/catalog/src/quotas.rs).

CREATE TABLE quota_limits (
    project_id TEXT   NOT NULL,
    resource   TEXT   NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);

CREATE TABLE quota_usages (
    project_id TEXT   NOT NULL,
    resource   TEXT   NOT NULL,
    in_use     BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);

INSERT INTO quota_usages (project_id, resource, in_use)
    SELECT project_id, 'backups', COUNT(*) FROM backups WHERE deleted = 0 GROUP BY project_id;
INSERT INTO quota_usages (project_id, resource, in_use)
    SELECT project_id, 'backup_gigabytes', SUM(size) FROM backups WHERE deleted = 0 GROUP BY project_id;
INSERT INTO quota_usages (project_id, resource, in_use)
    SELECT project_id, 'volumes', COUNT(*) FROM volumes WHERE deleted = 0 GROUP BY project_id;
INSERT INTO quota_usages (project_id, resource, in_use)
    SELECT project_id, 'snapshots', COUNT(*) FROM snapshots WHERE deleted = 0 GROUP BY project_id;
INSERT INTO quota_usages (project_id, resource, in_use)
    SELECT project_id, 'gigabytes', SUM(size) FROM (
        SELECT project_id, size FROM volumes WHERE deleted = 0
        UNION ALL SELECT project_id, size FROM snapshots WHERE deleted = 0)
    GROUP BY project_id;

CREATE TRIGGER quota_backups_ins AFTER INSERT ON backups WHEN new.deleted = 0 BEGIN
    INSERT INTO quota_usages (project_id, resource, in_use) VALUES (new.project_id, 'backups', 1)
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + 1;
    INSERT INTO quota_usages (project_id, resource, in_use) VALUES (new.project_id, 'backup_gigabytes', new.size)
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + excluded.in_use;
END;
CREATE TRIGGER quota_backups_del AFTER DELETE ON backups WHEN old.deleted = 0 BEGIN
    UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = old.project_id AND resource = 'backups';
    UPDATE quota_usages SET in_use = in_use - old.size WHERE project_id = old.project_id AND resource = 'backup_gigabytes';
END;
CREATE TRIGGER quota_backups_upd AFTER UPDATE OF project_id, size, deleted ON backups BEGIN
    UPDATE quota_usages SET in_use = in_use - 1
        WHERE old.deleted = 0 AND project_id = old.project_id AND resource = 'backups';
    UPDATE quota_usages SET in_use = in_use - old.size
        WHERE old.deleted = 0 AND project_id = old.project_id AND resource = 'backup_gigabytes';
    INSERT INTO quota_usages (project_id, resource, in_use)
        SELECT new.project_id, 'backups', 1 WHERE new.deleted = 0
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + 1;
    INSERT INTO quota_usages (project_id, resource, in_use)
        SELECT new.project_id, 'backup_gigabytes', new.size WHERE new.deleted = 0
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + excluded.in_use;
END;

CREATE TRIGGER quota_volumes_ins AFTER INSERT ON volumes WHEN new.deleted = 0 BEGIN
    INSERT INTO quota_usages (project_id, resource, in_use) VALUES (new.project_id, 'volumes', 1)
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + 1;
    INSERT INTO quota_usages (project_id, resource, in_use) VALUES (new.project_id, 'gigabytes', new.size)
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + excluded.in_use;
END;
CREATE TRIGGER quota_volumes_del AFTER DELETE ON volumes WHEN old.deleted = 0 BEGIN
    UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = old.project_id AND resource = 'volumes';
    UPDATE quota_usages SET in_use = in_use - old.size WHERE project_id = old.project_id AND resource = 'gigabytes';
END;
CREATE TRIGGER quota_volumes_upd AFTER UPDATE OF project_id, size, deleted ON volumes BEGIN
    UPDATE quota_usages SET in_use = in_use - 1
        WHERE old.deleted = 0 AND project_id = old.project_id AND resource = 'volumes';
    UPDATE quota_usages SET in_use = in_use - old.size
        WHERE old.deleted = 0 AND project_id = old.project_id AND resource = 'gigabytes';
    INSERT INTO quota_usages (project_id, resource, in_use)
        SELECT new.project_id, 'volumes', 1 WHERE new.deleted = 0
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + 1;
    INSERT INTO quota_usages (project_id, resource, in_use)
        SELECT new.project_id, 'gigabytes', new.size WHERE new.deleted = 0
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + excluded.in_use;
END;

CREATE TRIGGER quota_snapshots_ins AFTER INSERT ON snapshots WHEN new.deleted = 0 BEGIN
    INSERT INTO quota_usages (project_id, resource, in_use) VALUES (new.project_id, 'snapshots', 1)
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + 1;
    INSERT INTO quota_usages (project_id, resource, in_use) VALUES (new.project_id, 'gigabytes', new.size)
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + excluded.in_use;
END;
CREATE TRIGGER quota_snapshots_del AFTER DELETE ON snapshots WHEN old.deleted = 0 BEGIN
    UPDATE quota_usages SET in_use = in_use - 1 WHERE project_id = old.project_id AND resource = 'snapshots';
    UPDATE quota_usages SET in_use = in_use - old.size WHERE project_id = old.project_id AND resource = 'gigabytes';
END;
CREATE TRIGGER quota_snapshots_upd AFTER UPDATE OF project_id, size, deleted ON snapshots BEGIN
    UPDATE quota_usages SET in_use = in_use - 1
        WHERE old.deleted = 0 AND project_id = old.project_id AND resource = 'snapshots';
    UPDATE quota_usages SET in_use = in_use - old.size
        WHERE old.deleted = 0 AND project_id = old.project_id AND resource = 'gigabytes';
    INSERT INTO quota_usages (project_id, resource, in_use)
        SELECT new.project_id, 'snapshots', 1 WHERE new.deleted = 0
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + 1;
    INSERT INTO quota_usages (project_id, resource, in_use)
        SELECT new.project_id, 'gigabytes', new.size WHERE new.deleted = 0
        ON CONFLICT (project_id, resource) DO UPDATE SET in_use = in_use + excluded.in_use;
END;
