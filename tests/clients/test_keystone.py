"""vbs in keystone mode against a real Keystone (scripts/keystone.sh, from PyPI).

Keystone is seeded with projects alpha (user alice) and beta (user bob), both members,
the bootstrap admin, and a `vbs` service user whose credentials go into vbs's config.
vbs validates each user token with Keystone; the tests use real fernet tokens.
"""
import json
import random
import socket
import subprocess
import time
import uuid
from pathlib import Path

import openstack
import pytest
import requests

from conftest import (REPO, Dataset, client_env, import_backups, ok, parse_tables, run, BIN_DIR, start_vbs,
                      vbs_bin)

KEYSTONE_SH = REPO / "scripts" / "keystone.sh"
UNAUTHORIZED = {"error": {"code": 401, "title": "Unauthorized",
                          "message": "The request you have made requires authentication."}}
MALFORMED_URL = {"badRequest": {"code": 400, "message": "Malformed request url"}}
CACHE_TTL = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(path, *args, env=None):
    """Runs one of the project's scripts; it must succeed."""
    done = subprocess.run(["bash", str(path), *args], capture_output=True, text=True,
                          env=client_env(**(env or {})), timeout=900)
    assert done.returncode == 0, f"{path.name} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def keystone_sh(*args, env=None):
    script(KEYSTONE_SH, *args, env=env)


@pytest.fixture(scope="module")
def keystone(tmp_path_factory):
    """A running Keystone; its seed.json (auth_url, principals with ids and passwords)."""
    state = tmp_path_factory.mktemp("keystone")
    try:
        keystone_sh("start", str(state), env={"KEYSTONE_PORT": str(free_port())})
        seed = json.loads((state / "seed.json").read_text())
        seed["state_dir"] = str(state)
        yield seed
    finally:
        keystone_sh("stop", str(state))


@pytest.fixture(scope="module")
def deployment(keystone, tmp_path_factory):
    """vbs in keystone mode with alpha's and beta's backups; the catalog points at it."""
    data = Dataset(seed=4242)
    alice, bob = keystone["projects"]
    data.alpha = data.add_project("alpha", 25, 2, lambda i: f"alpha-{i:03d}", alice["project_id"], alice["user_id"])
    data.beta = data.add_project("beta", 18, 0, lambda i: f"beta-{i:03d}", bob["project_id"], bob["user_id"])
    work = tmp_path_factory.mktemp("vbs-keystone")
    data_dir = work / "data"
    data_dir.mkdir()
    import_backups(data_dir, None, data.rows(), work)
    config = write_config(work / "vbs.toml", keystone, with_password=True)
    server = start_vbs(data_dir, work / "vbs.log", auth="keystone", config=config)
    try:
        keystone_sh("endpoint", keystone["state_dir"], server.url)
        yield server, data
    finally:
        server.stop()


def write_config(path, keystone, with_password):
    svc = keystone["service"]
    lines = ["[keystone]", f'auth_url = "{keystone["auth_url"]}"', f'username = "{svc["user"]}"',
             f'project_name = "{svc["project"]}"', 'user_domain_name = "Default"',
             'project_domain_name = "Default"',
             # vbs caches validated tokens; keep that short so revocation is seen in the test
             f'token_cache_ttl = "{CACHE_TTL}s"']
    if with_password:
        lines.append(f'password = "{svc["password"]}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def issue_token(keystone, principal):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": principal["user"], "domain": {"id": "default"}, "password": principal["password"]}}},
        "scope": {"project": {"id": principal["project_id"]}}}}
    resp = requests.post(f"{keystone['auth_url']}/auth/tokens", json=body, timeout=60)
    assert resp.status_code == 201, resp.text
    return resp.headers["X-Subject-Token"]


def list_backups(server, project_id, token, query=""):
    headers = {"OpenStack-API-Version": "volume 3.64"}
    if token is not None:
        headers["X-Auth-Token"] = token
    return requests.get(f"{server.url}/v3/{project_id}/backups/detail{query}", headers=headers, timeout=60)


def listed_ids(resp):
    assert resp.status_code == 200, resp.text
    return [b["id"] for b in resp.json()["backups"]]


def password_env(keystone, principal):
    return client_env(OS_AUTH_URL=keystone["auth_url"], OS_IDENTITY_API_VERSION="3",
                      OS_USERNAME=principal["user"], OS_PASSWORD=principal["password"],
                      OS_PROJECT_NAME=principal["project"], OS_USER_DOMAIN_NAME="Default",
                      OS_PROJECT_DOMAIN_NAME="Default")


def test_each_token_sees_only_its_own_project(keystone, deployment):
    server, data = deployment
    alice, bob = keystone["projects"]
    for principal, project in ((alice, data.alpha), (bob, data.beta)):
        token = issue_token(keystone, principal)
        assert listed_ids(list_backups(server, project.id, token)) == project.ids
        # all_tenants is silently ignored for a member
        assert listed_ids(list_backups(server, project.id, token, "?all_tenants=1")) == project.ids
        resp = requests.get(f"{server.url}/v3/{project.id}/backups/{project.ids[0]}",
                            headers={"X-Auth-Token": token}, timeout=60)
        assert resp.status_code == 200 and resp.json()["backup"]["id"] == project.ids[0], resp.text
    # alice cannot see bob's backup, even by id (404, as if it did not exist)
    token = issue_token(keystone, alice)
    resp = requests.get(f"{server.url}/v3/{data.alpha.id}/backups/{data.beta.ids[0]}",
                        headers={"X-Auth-Token": token}, timeout=60)
    assert resp.status_code == 404, resp.text
    assert resp.json()["itemNotFound"]["code"] == 404


def test_admin_with_all_tenants_sees_both_projects(keystone, deployment):
    server, data = deployment
    admin = keystone["admin"]
    token = issue_token(keystone, admin)
    assert listed_ids(list_backups(server, admin["project_id"], token)) == []
    resp = list_backups(server, admin["project_id"], token, "?all_tenants=1")
    assert listed_ids(resp) == [r["id"] for r in data.all_visible()]
    owners = {b["id"]: b["os-backup-project-attr:project_id"] for b in resp.json()["backups"]}
    assert {owners[i] for i in data.alpha.ids} == {data.alpha.id}
    assert {owners[i] for i in data.beta.ids} == {data.beta.id}


@pytest.mark.parametrize("token", [None, "", "not-a-token", "gAAAAABm" + "A" * 180])
def test_missing_or_bad_token_is_401(keystone, deployment, token):
    server, data = deployment
    resp = list_backups(server, data.alpha.id, token)
    assert resp.status_code == 401, resp.text
    assert resp.json() == UNAUTHORIZED
    assert resp.headers.get("WWW-Authenticate", "").startswith("Keystone uri="), resp.headers


def revoke(keystone, token):
    resp = requests.delete(f"{keystone['auth_url']}/auth/tokens",
                           headers={"X-Auth-Token": token, "X-Subject-Token": token}, timeout=60)
    assert resp.status_code == 204, resp.text


def test_revoked_token_is_401(keystone, deployment):
    server, data = deployment
    alice = keystone["projects"][0]
    token = issue_token(keystone, alice)
    revoke(keystone, token)
    resp = list_backups(server, data.alpha.id, token)
    assert resp.status_code == 401, resp.text
    assert resp.json() == UNAUTHORIZED


def test_token_revoked_after_use_stops_working_once_the_cache_lapses(keystone, deployment):
    server, data = deployment
    bob = keystone["projects"][1]
    token = issue_token(keystone, bob)
    assert listed_ids(list_backups(server, data.beta.id, token)) == data.beta.ids
    revoke(keystone, token)
    time.sleep(CACHE_TTL + 0.5)
    resp = list_backups(server, data.beta.id, token)
    assert resp.status_code == 401, resp.text
    assert resp.json() == UNAUTHORIZED


def test_service_password_from_environment(keystone, tmp_path):
    """The service password may come from VBS_KEYSTONE__PASSWORD instead of the file."""
    (tmp_path / "data").mkdir()
    config = write_config(tmp_path / "vbs.toml", keystone, with_password=False)
    env = client_env(VBS_KEYSTONE__PASSWORD=keystone["service"]["password"])
    server = start_vbs(tmp_path / "data", tmp_path / "vbs.log", auth="keystone", config=config, env=env)
    try:
        alice = keystone["projects"][0]
        assert listed_ids(list_backups(server, alice["project_id"], issue_token(keystone, alice))) == []
    finally:
        server.stop()


def test_token_for_another_project_is_malformed_url(keystone, deployment):
    server, data = deployment
    alice = keystone["projects"][0]
    token = issue_token(keystone, alice)
    for project_id in (data.beta.id, keystone["admin"]["project_id"], uuid.uuid4().hex):
        resp = list_backups(server, project_id, token)
        assert resp.status_code == 400, resp.text
        assert resp.json() == MALFORMED_URL


def test_openstack_cli_through_the_keystone_catalog(keystone, deployment):
    _, data = deployment
    for principal, project in zip(keystone["projects"], (data.alpha, data.beta)):
        cmd = [str(BIN_DIR / "openstack"), "volume", "backup", "list", "-f", "json"]
        rows = json.loads(ok(run(cmd, password_env(keystone, principal))))
        assert [r["ID"] for r in rows] == project.ids


def test_cinder_and_sdk_through_the_keystone_catalog(keystone, deployment):
    _, data = deployment
    alice = keystone["projects"][0]
    cmd = [str(BIN_DIR / "cinder"), "--os-volume-api-version", "3.45", "backup-list", "--with-count"]
    out = ok(run(cmd, password_env(keystone, alice)))
    (rows,), others = parse_tables(out)
    assert sorted(r["ID"] for r in rows) == sorted(data.alpha.ids)
    assert f"Backup in total: {len(data.alpha.ids)}" in others

    conn = openstack.connect(auth_url=keystone["auth_url"], username=alice["user"], password=alice["password"],
                             project_name=alice["project"], user_domain_name="Default",
                             project_domain_name="Default", load_yaml_config=False, load_envvars=False)
    try:
        assert [b.id for b in conn.block_storage.backups(limit=10)] == data.alpha.ids
    finally:
        conn.close()


# --------------------------------------------------------------------------- repository on Swift with Keystone

SWIFT_AIO = REPO / "scripts" / "swift-aio.sh"


def swift_aio(*args, env=None):
    script(SWIFT_AIO, *args, env=env)


@pytest.fixture(scope="module")
def keystone_swift(keystone):
    """The test Swift (scripts/swift-aio.sh, started by scripts/test.sh) behind a second
    proxy whose users are this Keystone's (authtoken + keystoneauth); the catalog's
    object-store endpoint points at it. Yields the proxy's base URL."""
    port = free_port()
    svc = keystone["service"]
    swift_aio("keystone-proxy", "start", env={
        "SWIFT_AIO_KEYSTONE_PROXY_PORT": str(port), "SWIFT_AIO_KEYSTONE_AUTH_URL": keystone["auth_url"],
        "SWIFT_AIO_KEYSTONE_USER": svc["user"], "SWIFT_AIO_KEYSTONE_PASSWORD": svc["password"],
        "SWIFT_AIO_KEYSTONE_PROJECT": svc["project"]})
    try:
        base = f"http://127.0.0.1:{port}"
        keystone_sh("object-store", keystone["state_dir"], base + "/v1/AUTH_%(project_id)s")
        yield base
    finally:
        swift_aio("keystone-proxy", "stop")


def engine(args, env):
    return subprocess.run([vbs_bin(), "admin", "engine", *args], capture_output=True, text=True,
                          env=dict(env, RUST_BACKTRACE="0"), timeout=300)


def test_swift_repository_with_keystone_auth(keystone, keystone_swift, tmp_path):
    """`swift+keystone://` on a real Swift whose tokens a real Keystone issues and checks:
    vbs logs in with the user's password, scoped to the project, takes the project's
    Swift account from the token's catalog, and a backup written there restores
    byte-identical. The objects sit in that project's account, which another project's
    user may not read; a wrong password is a clear error that does not show it."""
    alice, bob = keystone["projects"]
    rng = random.Random(7)
    volume = tmp_path / "vol.img"
    with open(volume, "wb") as f:
        f.write(rng.randbytes(3 << 20))
        f.seek(5 << 20)                                   # a 2 MiB hole
        f.write(b"vbs keystone " * 80_000)                # compressible
        f.write(rng.randbytes(1 << 20))
    container = "vbs-ks-" + uuid.uuid4().hex[:8]
    host = keystone["auth_url"].split("://", 1)[1].split("/", 1)[0]
    repo = f"swift+keystone://{host}/{container}"
    env = password_env(keystone, alice)

    done = engine(["backup", "--repository", repo, "--volume", str(volume)], env)
    assert done.returncode == 0, done.stderr
    backup_id = json.loads(done.stdout.strip().splitlines()[-1])["id"]
    restored = tmp_path / "restored.img"
    done = engine(["restore", "--repository", repo, "--backup", backup_id, "--target", str(restored)], env)
    assert done.returncode == 0, done.stderr
    assert restored.read_bytes() == volume.read_bytes()

    # Stored in alice's project account, under the container named in the URL.
    listing_url = f"{keystone_swift}/v1/AUTH_{alice['project_id']}/{container}"
    token = issue_token(keystone, alice)
    resp = requests.get(listing_url, headers={"X-Auth-Token": token, "Accept": "application/json"}, timeout=60)
    assert resp.status_code == 200, resp.text
    names = [o["name"] for o in resp.json()]
    assert f"manifests/{backup_id}" in names
    assert any(n.startswith("packs/") for n in names), names
    # bob's token is for another project: keystoneauth refuses alice's account
    resp = requests.get(listing_url, headers={"X-Auth-Token": issue_token(keystone, bob)}, timeout=60)
    assert resp.status_code == 403, resp.text

    wrong = dict(env, OS_PASSWORD="not-" + alice["password"])
    done = engine(["restore", "--repository", repo, "--backup", backup_id, "--target", str(tmp_path / "x.img")], wrong)
    assert done.returncode != 0
    assert "Keystone" in done.stderr and "refused" in done.stderr, done.stderr
    assert alice["password"] not in done.stderr

    for name in names:
        requests.delete(f"{listing_url}/{name}", headers={"X-Auth-Token": token}, timeout=60)
    assert requests.delete(listing_url, headers={"X-Auth-Token": token}, timeout=60).status_code == 204


def test_vbs_backup_apis_over_http_with_keystone_tokens(keystone, deployment):
    """The VBS calls as the VBS SDKs make them: plain HTTP with a real Keystone token.
    alice backs up a disk through /cloudbackups, follows the job from INIT to SUCCESS,
    restores it onto another disk (the bytes compared) and deletes it; bob's token sees
    none of it."""
    server, _ = deployment
    alice, bob = keystone["projects"]
    a_token, b_token = issue_token(keystone, alice), issue_token(keystone, bob)
    data_dir = Path(server.log_path).parent / "data"

    def call(method, path, token, body=None):
        headers = {"X-Auth-Token": token, "Content-Type": "application/json"}
        resp = requests.request(method, f"{server.url}{path}", headers=headers,
                                data=None if body is None else json.dumps(body), timeout=60)
        return resp.status_code, (resp.json() if resp.content else None)

    def volume(name):
        st, body = call("POST", f"/v3/{alice['project_id']}/volumes", a_token,
                        {"volume": {"size": 1, "name": name}})
        assert st == 202, body
        return body["volume"]["id"]

    def follow(job_id):
        seen = []
        for _ in range(3000):
            st, job = call("GET", f"/v1/{alice['project_id']}/jobs/{job_id}", a_token)
            assert st == 200, job
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            if job["status"] in ("SUCCESS", "FAIL"):
                assert set(seen) <= {"INIT", "RUNNING", "SUCCESS"}, (seen, job)
                return job
            time.sleep(0.02)
        pytest.fail(f"job {job_id} never ended")

    src, dst = volume("vbs-src"), volume("vbs-dst")
    src_img = data_dir / "volumes" / f"{src}.img"
    rng = random.Random(77)
    with open(src_img, "r+b") as f:
        for off in (0, 5 << 20, 600 << 20):
            f.seek(off)
            f.write(rng.randbytes(1 << 20))
    expected = src_img.read_bytes()

    st, body = call("POST", f"/v2/{alice['project_id']}/cloudbackups", a_token,
                    {"backup": {"volume_id": src, "name": "sdk-style",
                                "tags": [{"key": "origin", "value": "keystone"}]}})
    assert st == 200, body
    job = follow(body["job_id"])
    assert job["status"] == "SUCCESS" and job["job_type"] == "bksCreateBackup", job
    backup_id = job["entities"]["backup_id"]

    # bob: not his job, not his backup, not his project.
    st, body = call("GET", f"/v1/{bob['project_id']}/jobs/{job['job_id']}", b_token)
    assert (st, body["error"]["code"]) == (404, "common.0011"), body
    st, body = call("POST", f"/v2/{bob['project_id']}/cloudbackups/{backup_id}", b_token)
    assert (st, body["error"]["code"]) == (404, "VolumeBackup.0111"), body
    st, body = call("GET", f"/v1/{alice['project_id']}/jobs/{job['job_id']}", b_token)
    assert (st, body["error"]["code"]) == (403, "VolumeBackup.0042"), body

    st, body = call("POST", f"/v2/{alice['project_id']}/cloudbackups/{backup_id}/restore", a_token,
                    {"restore": {"volume_id": dst}})
    assert st == 200, body
    assert follow(body["job_id"])["status"] == "SUCCESS"
    assert (data_dir / "volumes" / f"{dst}.img").read_bytes() == expected

    st, body = call("POST", f"/v2/{alice['project_id']}/cloudbackups/{backup_id}", a_token)
    assert st == 200, body
    assert follow(body["job_id"])["status"] == "SUCCESS"
    st, _ = call("GET", f"/v3/{alice['project_id']}/backups/{backup_id}", a_token)
    assert st == 404


def _quota_rows(out):
    """`openstack quota show -f json`: a dict of limits, or rows of Resource/Limit."""
    data = json.loads(out)
    if isinstance(data, dict):
        return data
    return {row["Resource"]: row.get("Limit", row.get("limit")) for row in data}


def test_openstack_quota_show_and_set(keystone, deployment):
    """`openstack quota set --backups N --backup-gigabytes M PROJECT` as the admin, then
    `openstack quota show --volume PROJECT` as the project's member, unmodified clients
    through the Keystone catalog; the new limit is enforced at once."""
    server, _ = deployment
    admin, bob = keystone["admin"], keystone["projects"][1]
    openstack = str(BIN_DIR / "openstack")
    ok(run([openstack, "quota", "set", "--backups", "7", "--backup-gigabytes", "70", bob["project"]],
           password_env(keystone, admin)))
    # A member may not look projects up by name in Keystone: by id.
    shown = _quota_rows(ok(run([openstack, "quota", "show", "--volume", bob["project_id"], "-f", "json"],
                               password_env(keystone, bob))))
    assert shown["backups"] == 7 and shown["backup-gigabytes" if "backup-gigabytes" in shown
                                           else "backup_gigabytes"] == 70, shown
    # A member may not change quotas.
    refused = run([openstack, "quota", "set", "--backups", "100", bob["project_id"]], password_env(keystone, bob))
    assert refused.returncode != 0 and "403" in refused.stderr + refused.stdout, refused.stderr
    # Enforced: with the limit at the project's current count, a create is refused.
    token = issue_token(keystone, bob)
    headers = {"X-Auth-Token": token, "Content-Type": "application/json"}
    url = f"{server.url}/v3/{bob['project_id']}"
    used = requests.get(f"{url}/os-quota-sets/{bob['project_id']}?usage=True", headers=headers, timeout=60).json()
    in_use = used["quota_set"]["backups"]["in_use"]
    ok(run([openstack, "quota", "set", "--backups", str(in_use), bob["project"]], password_env(keystone, admin)))
    vol = requests.post(f"{url}/volumes", headers=headers, json={"volume": {"size": 1}}, timeout=60).json()
    resp = requests.post(f"{url}/backups", headers=headers,
                         json={"backup": {"volume_id": vol["volume"]["id"]}}, timeout=60)
    assert resp.status_code == 413, resp.text
    assert resp.json()["overLimit"]["message"] == \
        f"BackupLimitExceeded: Maximum number of backups allowed ({in_use}) exceeded"
    ok(run([openstack, "quota", "set", "--backups", "-1", "--backup-gigabytes", "-1", bob["project"]],
           password_env(keystone, admin)))
