-- Quotas: per-project limits set by admins (others take the configured defaults) and
-- what each project uses, kept exact by triggers on every row change, whichever path
-- wrote it. A create checks the usage row inside its own transaction, after its
-- insert moved it: over a limit, the transaction rolls back (crates/catalog/src/quotas.rs).

CREATE TABLE quota_limits (
    project_id TEXT COLLATE "C" NOT NULL,
    resource   TEXT COLLATE "C" NOT NULL,
    hard_limit BIGINT NOT NULL,
    PRIMARY KEY (project_id, resource)
);

CREATE TABLE quota_usages (
    project_id TEXT COLLATE "C" NOT NULL,
    resource   TEXT COLLATE "C" NOT NULL,
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
        UNION ALL SELECT project_id, size FROM snapshots WHERE deleted = 0) AS sized
    GROUP BY project_id;

-- TG_ARGV: the resource counted (one per live row) and the one summed (its size).
CREATE FUNCTION quota_maintain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.deleted = 0 THEN
        UPDATE quota_usages SET in_use = in_use - 1
            WHERE project_id = OLD.project_id AND resource = TG_ARGV[0];
        UPDATE quota_usages SET in_use = in_use - OLD.size
            WHERE project_id = OLD.project_id AND resource = TG_ARGV[1];
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.deleted = 0 THEN
        INSERT INTO quota_usages (project_id, resource, in_use) VALUES (NEW.project_id, TG_ARGV[0], 1)
            ON CONFLICT (project_id, resource) DO UPDATE SET in_use = quota_usages.in_use + 1;
        INSERT INTO quota_usages (project_id, resource, in_use) VALUES (NEW.project_id, TG_ARGV[1], NEW.size)
            ON CONFLICT (project_id, resource) DO UPDATE SET in_use = quota_usages.in_use + EXCLUDED.in_use;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER quota_backups
    AFTER INSERT OR DELETE OR UPDATE OF project_id, size, deleted ON backups
    FOR EACH ROW EXECUTE FUNCTION quota_maintain('backups', 'backup_gigabytes');
CREATE TRIGGER quota_volumes
    AFTER INSERT OR DELETE OR UPDATE OF project_id, size, deleted ON volumes
    FOR EACH ROW EXECUTE FUNCTION quota_maintain('volumes', 'gigabytes');
CREATE TRIGGER quota_snapshots
    AFTER INSERT OR DELETE OR UPDATE OF project_id, size, deleted ON snapshots
    FOR EACH ROW EXECUTE FUNCTION quota_maintain('snapshots', 'gigabytes');
