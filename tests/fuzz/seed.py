"""Seeds a running vbs with one of each resource for scripts/fuzz.sh, so that fuzzed
requests can name real ids; prints them as `param=id` pairs (the OpenAPI path parameter
names).

    seed.py BASE TOKEN PROJECT          create the resources, print `name=id ...`
    seed.py --keystone-token SEED_JSON  log in as Keystone's admin, print `TOKEN PROJECT_ID`

Only the standard library: it runs in the schemathesis venv.
"""

import json
import sys
import time
import urllib.error
import urllib.request


def call(base, token, method, path, body=None, expect=(200, 201, 202, 204)):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("OpenStack-API-Version", "volume 3.71")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as err:
        raise SystemExit(f"{method} {path}: HTTP {err.code}: {err.read()[:300]!r}")
    if status not in expect:
        raise SystemExit(f"{method} {path}: unexpected HTTP {status}")
    return json.loads(raw) if raw else {}


def wait(base, token, path, key, want, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        status = call(base, token, "GET", path)[key]["status"]
        if status == want:
            return
        if status.startswith("error"):
            raise SystemExit(f"{path} went to {status}")
        time.sleep(0.2)
    raise SystemExit(f"{path} did not become {want}")


def seed(base, token, project):
    p = f"/v3/{project}"
    vol = call(base, token, "POST", f"{p}/volumes", {"volume": {"size": 1, "name": "fuzz-source"}})["volume"]["id"]
    wait(base, token, f"{p}/volumes/{vol}", "volume", "available")
    snap = call(base, token, "POST", f"{p}/snapshots", {"snapshot": {"volume_id": vol, "name": "fuzz-snap"}})["snapshot"]["id"]
    wait(base, token, f"{p}/snapshots/{snap}", "snapshot", "available")
    backup = call(base, token, "POST", f"{p}/backups", {"backup": {"volume_id": vol, "name": "fuzz-backup"}})["backup"]["id"]
    wait(base, token, f"{p}/backups/{backup}", "backup", "available")
    v2 = f"/v2/{project}"
    policy = call(base, token, "POST", f"{v2}/backuppolicy", {
        "backup_policy_name": "fuzz_policy",
        "scheduled_policy": {"start_time": "12:00", "frequency": 1, "rentention_num": 3,
                             "remain_first_backup_of_curMonth": "N", "status": "OFF"},
        "tags": [{"key": "fuzz", "value": "yes"}]})["backup_policy_id"]
    other = "f0220000000000000000000000000002"
    share = call(base, token, "POST", f"{v2}/os-vendor-backup-sharing",
                 {"shared": {"backup_id": backup, "to_project_ids": [other]}})["shared"][0]["id"]
    job = call(base, token, "POST", f"{v2}/cloudbackups", {"backup": {
        "volume_id": vol, "name": "fuzz_job", "extend_param": {"FullBackup": "true"}}})["job_id"]
    ids = {"volume_id": vol, "snapshot_id": snap, "backup_id": backup, "policy_id": policy,
           "id": share, "job_id": job, "target": project, "key": "fuzz"}
    print(" ".join(f"{k}={v}" for k, v in ids.items()))


def keystone_token(seed_path):
    with open(seed_path) as f:
        s = json.load(f)
    admin = s["admin"]
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": admin["user"], "domain": {"id": "default"}, "password": admin["password"]}}},
        "scope": {"project": {"name": admin["project"], "domain": {"id": "default"}}}}}
    req = urllib.request.Request(s["auth_url"].rstrip("/") + "/auth/tokens",
                                 data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        token = resp.headers["X-Subject-Token"]
    print(token, admin["project_id"])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--keystone-token":
        keystone_token(sys.argv[2])
    elif len(sys.argv) == 4:
        seed(*sys.argv[1:])
    else:
        raise SystemExit(__doc__)
