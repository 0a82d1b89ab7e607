"""Shared fixtures of the real-client suite: a seeded data set, the vbs server on
SQLite and on PostgreSQL, and runners for `openstack`, `cinder` and openstacksdk.

The server is the real binary ($VBS_BIN, default target/release/vbs) started with
`serve --listen 127.0.0.1:0`; its URL is read from the `listening on` line it prints.
Records are loaded with `vbs admin import-backups` before the server starts.

Nothing here skips: a missing binary or a missing PostgreSQL fails the run.
"""
import datetime
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent  # the venv that runs pytest also holds the clients
PG_ADMIN = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]
PG_URL = "postgres://postgres@127.0.0.1:5432/{}"
SEED = 20240611
CLI_TIMEOUT = 180


def pytest_configure(config):
    # openstacksdk warns about its own deprecations thousands of times per listing
    config.addinivalue_line("filterwarnings", "ignore:::openstack")


def vbs_bin():
    path = Path(os.environ.get("VBS_BIN", REPO / "target" / "release" / "vbs"))
    if not path.is_absolute():
        path = REPO / path
    if not os.access(path, os.X_OK):
        pytest.fail(f"vbs binary not found at {path}: build it (cargo build --release) or set VBS_BIN")
    return str(path)


# --------------------------------------------------------------------------- data set

def hex32(rng):
    return "%032x" % rng.getrandbits(128)


def uuid4(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def db_time(t):
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def api_ts(db_value):
    """A catalog timestamp ('YYYY-MM-DD HH:MM:SS.ffffff') as the API renders it."""
    return db_value.replace(" ", "T") if db_value else None


class Project:
    """One project's seeded backups; `visible` is in the API's default order."""

    def __init__(self, name, project_id, user_id):
        self.name = name
        self.id = project_id
        self.user = user_id
        self.rows = []  # every imported row, deleted ones included

    @property
    def token(self):
        return f"{self.user}:{self.id}"

    @property
    def visible(self):
        live = [r for r in self.rows if not r["deleted"]]
        return sorted(live, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    @property
    def ids(self):
        return [r["id"] for r in self.visible]

    @property
    def deleted(self):
        return [r for r in self.rows if r["deleted"]]

    def by_id(self, backup_id):
        return next(r for r in self.rows if r["id"] == backup_id)


class Dataset:
    """Deterministic backups rows (seeded random) for any number of projects."""

    def __init__(self, seed=SEED):
        self.rng = random.Random(seed)
        self.seed = seed
        self.clock = datetime.datetime(2024, 3, 1, 8, 0, 0)
        self.projects = []

    def add_project(self, name, live, deleted, name_of, project_id=None, user_id=None):
        """A project with `live` backups named name_of(i) and `deleted` soft-deleted rows.

        Statuses, volumes (4 per project), zones and containers vary; every 7th live
        backup is an incremental child of the previous one when that one is available.
        """
        rng = self.rng
        project = Project(name, project_id or hex32(rng), user_id or hex32(rng))
        volumes = [uuid4(rng) for _ in range(4)]
        for i in range(live + deleted):
            # strictly increasing creation times: the default order is well defined
            self.clock += datetime.timedelta(seconds=rng.randint(5, 600), microseconds=rng.randint(0, 999999))
            created = self.clock
            is_deleted = i >= live
            status = "deleted" if is_deleted else rng.choices(
                ["available", "error", "creating", "restoring"], weights=[80, 10, 5, 5])[0]
            size = rng.randint(1, 64)
            row = {
                "id": uuid4(rng),
                "volume_id": rng.choice(volumes),
                "snapshot_id": None,
                "parent_id": None,
                "restore_volume_id": None,
                "temp_volume_id": None,
                "temp_snapshot_id": None,
                "encryption_key_id": None,
                "project_id": project.id,
                "user_id": hex32(rng),
                "display_name": name_of(i),
                "display_description": rng.choice([None, f"seeded backup {i} of {project.name}"]),
                "status": status,
                "fail_reason": "seeded failure" if status == "error" else None,
                "host": "vbs-test-host",
                "availability_zone": rng.choice(["az-1", "az-2"]),
                "container": rng.choice(["volumebackups", "bucket-a"]),
                "service": "vbs.backup.local",
                "service_metadata": None,
                "size": size,
                "object_count": size * 4 if status == "available" else 0,
                "num_dependent_backups": 0,
                "created_at": db_time(created),
                "updated_at": db_time(created + datetime.timedelta(seconds=rng.randint(1, 90))),
                "deleted_at": db_time(created + datetime.timedelta(days=1)) if is_deleted else None,
                "data_timestamp": db_time(created),
                "deleted": 1 if is_deleted else 0,
            }
            prev = project.rows[-1] if project.rows else None
            if (not is_deleted and prev is not None and i % 7 == 6 and not prev["deleted"]
                    and prev["status"] == "available"):
                row["parent_id"] = prev["id"]
                row["volume_id"] = prev["volume_id"]
                prev["num_dependent_backups"] += 1
            project.rows.append(row)
        self.projects.append(project)
        return project

    def rows(self):
        """All rows in a shuffled import order (the server must sort, not rely on rowid)."""
        rows = [r for p in self.projects for r in p.rows]
        random.Random(self.seed + 1).shuffle(rows)
        return rows

    def all_visible(self):
        """Every project's live backups in the default order (what admin + all_tenants sees)."""
        every = [r for p in self.projects for r in p.visible]
        return sorted(every, key=lambda r: (r["created_at"], r["id"]), reverse=True)


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def noauth_dataset():
    """The data set of the noauth suites.

    small: 60 live backups named <word>-NNNN plus 5 soft-deleted rows;
    big:   1,500 live backups (more than one 1,000-item page) plus 3 deleted rows;
    other: 12 backups of a third project, never visible to the others;
    admin: the project of user `admin` (noauth gives that user the admin role), empty.
    """
    data = Dataset()
    pick = random.Random(SEED + 2).choice
    data.small = data.add_project("small", 60, 5, lambda i: f"{pick(WORDS)}-{i:04d}")
    data.big = data.add_project("big", 1500, 3, lambda i: f"bulk-{i:05d}")
    data.other = data.add_project("other", 12, 0, lambda i: f"other-{i:03d}")
    data.admin = data.add_project("admin", 0, 0, str, user_id="admin")
    return data


@pytest.fixture(scope="session")
def dataset():
    return noauth_dataset()


# --------------------------------------------------------------------------- the server

class VbsServer:
    """A running `vbs serve`; `url` is http://127.0.0.1:PORT."""

    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self._first_line(timeout=30)
        prefix = "listening on "
        if not line.startswith(prefix):
            self.stop()
            pytest.fail(f"vbs serve printed {line!r} instead of 'listening on ADDR'; log:\n{self.log_tail()}")
        self.url = "http://" + line[len(prefix):].strip()
        # keep draining stdout so a chatty server never blocks on a full pipe
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def _first_line(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            pytest.fail(f"vbs serve printed nothing within {timeout}s; log:\n{self.log_tail()}")
        line = self.proc.stdout.readline().decode(errors="replace")
        if not line:
            self.stop()
            pytest.fail(f"vbs serve exited ({self.proc.returncode}) before listening; log:\n{self.log_tail()}")
        return line

    def log_tail(self, n=40):
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])

    def endpoint(self, project):
        return f"{self.url}/v3/{project.id}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def catalog_args(catalog):
    return ["--catalog", catalog] if catalog else []


def import_backups(data_dir, catalog, rows, work_dir):
    path = Path(work_dir) / "backups.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [vbs_bin(), "admin", "import-backups", "--data-dir", str(data_dir), *catalog_args(catalog), str(path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


def start_vbs(data_dir, log_path, auth="noauth", catalog=None, config=None, env=None):
    args = [vbs_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--auth", auth,
            *catalog_args(catalog)]
    if config:
        args += ["--config", str(config)]
    return VbsServer(args, log_path, env=env)


class Deployment:
    """A seeded vbs server plus the data set it serves."""

    def __init__(self, backend, server, dataset, data_dir=None):
        self.backend = backend
        self.server = server
        self.data = dataset
        self.data_dir = data_dir

    def __repr__(self):
        return f"<vbs on {self.backend}>"


def deploy(backend, tmp_path_factory, dataset, catalog=None):
    work = tmp_path_factory.mktemp(f"vbs-{backend}")
    data_dir = work / "data"
    data_dir.mkdir()
    import_backups(data_dir, catalog, dataset.rows(), work)
    return Deployment(backend, start_vbs(data_dir, work / "vbs.log", catalog=catalog), dataset, data_dir)


@pytest.fixture(scope="session")
def sqlite_vbs(tmp_path_factory, dataset):
    deployment = deploy("sqlite", tmp_path_factory, dataset)
    yield deployment
    deployment.server.stop()


def psql(sql):
    try:
        done = subprocess.run(PG_ADMIN + ["-c", sql], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.fail("psql not found: PostgreSQL client tools are required (never skipped)")
    if done.returncode != 0:
        pytest.fail(f"psql {sql!r} failed: {done.stderr.strip()} (PostgreSQL on 127.0.0.1:5432 is required)")


@pytest.fixture(scope="session")
def pg_database():
    """A fresh PostgreSQL database for this session, dropped at the end."""
    name = f"vbs_clients_{os.getpid()}_{random.randrange(16**6):06x}"
    psql(f"CREATE DATABASE {name}")
    yield PG_URL.format(name)
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_vbs(tmp_path_factory, dataset, pg_database):
    deployment = deploy("postgres", tmp_path_factory, dataset, catalog=pg_database)
    yield deployment
    deployment.server.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def vbs(request):
    """The seeded server, once per catalog backend (for the main list assertions)."""
    return request.getfixturevalue(f"{request.param}_vbs")


# --------------------------------------------------------------------------- clients

def client_env(**extra):
    """The environment for a client process: no OS_*/CINDER_* leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "CINDER_", "OPENSTACK_"))}
    env.update(extra)
    return env


def run(args, env):
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=CLI_TIMEOUT)
    done.cmdline = " ".join(args)
    return done


def ok(done):
    assert done.returncode == 0, f"`{done.cmdline}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def openstack_noauth(deployment, project, *args):
    """`openstack` with admin_token auth, token USER:PROJECT and endpoint .../v3/PROJECT."""
    cmd = [str(BIN_DIR / "openstack"), "--os-auth-type", "admin_token", "--os-token", project.token,
           "--os-endpoint", deployment.server.endpoint(project), *args]
    return run(cmd, client_env())


def openstack_json(deployment, project, *args):
    return json.loads(ok(openstack_noauth(deployment, project, *args, "-f", "json")))


def cinder_noauth(deployment, project, *args, version="3.45"):
    """`cinder` with its noauth plugin: token USER:PROJECT, CINDER_ENDPOINT .../v3/PROJECT."""
    env = client_env(OS_AUTH_TYPE="noauth", OS_USER_ID=project.user, OS_PROJECT_ID=project.id,
                     CINDER_ENDPOINT=deployment.server.endpoint(project))
    return run([str(BIN_DIR / "cinder"), "--os-volume-api-version", version, *args], env)


def parse_tables(text):
    """Parse prettytable output into (tables, other_lines); a table is a list of row dicts."""
    tables, others, header, rows = [], [], None, None
    for line in text.splitlines():
        if line.startswith("+") and line.endswith("+"):
            continue
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if header is None:
                header, rows = cells, []
                tables.append(rows)
            else:
                rows.append(dict(zip(header, cells)))
            continue
        header = None
        if line.strip():
            others.append(line.strip())
    return tables, others


def sdk_connection(deployment, project):
    import openstack

    return openstack.connect(auth_type="admin_token",
                             auth={"endpoint": deployment.server.endpoint(project), "token": project.token},
                             load_yaml_config=False, load_envvars=False)
