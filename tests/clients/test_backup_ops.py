"""Backups end to end through the real, unmodified clients: `openstack volume backup
create/restore/delete`, `cinder backup-*` and openstacksdk against vbs in noauth mode, on
SQLite and PostgreSQL.

Volumes are sparse images `<data_dir>/volumes/<id>.img`; the tests write seeded bytes
into them directly, back them up through the API, restore to new and to existing volumes
and compare the restored images byte for byte (holes included) with what was written.
Each test works in a project of its own, so the seeded backups of other suites never mix in.

What the clients send (python-openstackclient 10.5.0 / openstacksdk 4.22.0 /
python-cinderclient 9.10.0; see /work/shared/notes/real-clients.md):

* `openstack volume backup create [--incremental] [--force] --name N VOL`:
  `POST /v3/P/backups`, mv 3.64, `{"backup": {"name": N, "volume_id": V,
  "description": null, "container": null, "force": bool, "incremental": bool}}`.
* `openstack volume backup restore B NEWNAME` (NEWNAME not an existing volume):
  `POST /v3/P/backups/B/restore` **without a microversion header**, `{"restore":
  {"name": NEWNAME}}` (the server creates the volume). `restore --force B EXISTING`:
  `{"restore": {"volume_id": V}}`. Without --force on an existing volume the client
  refuses by itself; nothing is sent.
* `openstack volume backup delete B`: `DELETE /v3/P/backups/B`, mv 3.64.
* `cinder --os-volume-api-version 3.45 backup-create --name N [--incremental] VOL`:
  `{"backup": {"volume_id": V, "container": null, "name": N, "description": null,
  "incremental": bool, "force": false, "snapshot_id": null}}`, mv 3.45;
  `backup-restore --name N B` → `{"restore": {"volume_id": null, "name": N}}`,
  `backup-restore --volume V B` → `{"restore": {"volume_id": V, "name": null}}`, mv 3.45.
* openstacksdk: `create_backup(volume_id=, name=, is_incremental=)` → mv 3.64, body with
  only the given keys (`is_incremental` renamed to `incremental`); `restore_backup` → no
  microversion, `{"restore": {"name": …}}` or `{"restore": {"volume_id": …}}`.
* os-attach (no client command without Nova): plain POST of
  `{"os-attach": {"instance_uuid": U, "mountpoint": "/dev/vdb"}}` to `…/volumes/V/action`.
"""
import random
import time
import uuid
from pathlib import Path

import requests

from conftest import Project, cinder_noauth, ok, openstack_json, openstack_noauth, parse_tables, sdk_connection

GIB = 1 << 30
MIB = 1 << 20
PAGE = 4096
CHUNK = 4 * MIB
ZERO_CHUNK = bytes(CHUNK)
POLL = 0.2
TIMEOUT = 60


def fresh_project(user="backupuser"):
    return Project("backups", uuid.uuid4().hex, user)


def data_dir(vbs):
    args = vbs.server.proc.args
    return Path(args[args.index("--data-dir") + 1])


class Image:
    """A volume image and a model of what it must hold: the bytes written, zeros elsewhere."""

    def __init__(self, vbs, volume_id, size_gib=1):
        self.path = data_dir(vbs) / "volumes" / f"{volume_id}.img"
        self.size = size_gib * GIB
        self.model = bytearray()  # the written prefix of the model; beyond it, zeros
        self.extents = {}  # offset -> bytes, everything written

    def write(self, offset, data):
        assert offset + len(data) <= self.size
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)
        self.extents[offset] = bytes(data)

    def expected(self):
        """A frozen copy of the model: a sorted list of (offset, bytes), later writes win."""
        return sorted(self.extents.items())


def expected_chunk(extents, start, length):
    buf = bytearray(length)
    for off, data in extents:  # in offset order; overlapping writes are avoided by the tests
        lo, hi = max(off, start), min(off + len(data), start + length)
        if lo < hi:
            buf[lo - start:hi - start] = data[lo - off:hi - off]
    return bytes(buf)


def assert_image(path, extents, size=GIB):
    """The file at path is exactly `extents` over zeros, `size` bytes long."""
    path = Path(path)
    assert path.stat().st_size == size, (path, path.stat().st_size)
    with open(path, "rb") as f:
        for start in range(0, size, CHUNK):
            got = f.read(CHUNK)
            touched = any(off < start + CHUNK and off + len(d) > start for off, d in extents)
            want = expected_chunk(extents, start, CHUNK) if touched else ZERO_CHUNK
            if got != want:
                bad = next(i for i in range(len(want)) if got[i:i + 1] != want[i:i + 1])
                raise AssertionError(f"{path}: first difference at byte {start + bad}")


def seeded(rng, n):
    return rng.randbytes(n)


def fill(image, rng):
    """A few MiB spread over the volume, with holes between: 3 MiB at 0, 1 MiB at
    100 MiB, 512 KiB right at the end."""
    image.write(0, seeded(rng, 3 * MIB))
    image.write(100 * MIB, seeded(rng, MIB))
    image.write(GIB - 512 * 1024, seeded(rng, 512 * 1024))


def change_pages(image, rng, pages):
    """Rewrites the given 4 KiB page numbers with new bytes (in the model too)."""
    for page in pages:
        off = page * PAGE
        data = seeded(rng, PAGE)
        # keep the model free of overlaps: split the extent that holds this page, if any
        for start, old in list(image.extents.items()):
            if start <= off < start + len(old):
                del image.extents[start]
                if off > start:
                    image.extents[start] = old[:off - start]
                if off + PAGE < start + len(old):
                    image.extents[off + PAGE] = old[off + PAGE - start:]
        image.write(off, data)


def wait_until(fetch, want, timeout=TIMEOUT, bad=("error",)):
    """Calls fetch() until its status is `want`; fails at once on a `bad` status."""
    deadline = time.monotonic() + timeout
    while True:
        got = fetch()
        status = got["status"]
        if status == want:
            return got
        assert status not in bad, got
        assert time.monotonic() < deadline, f"still {status} after {timeout}s: {got}"
        time.sleep(POLL)


def wait_gone(check, timeout=TIMEOUT):
    """Calls check() until it returns True (the resource is gone)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still there after {timeout}s"
        time.sleep(POLL)


def api(vbs, project, method, path, body=None, version=None):
    headers = {"X-Auth-Token": project.token}
    if version:
        headers["OpenStack-API-Version"] = f"volume {version}"
    return requests.request(method, vbs.server.endpoint(project) + path, json=body, headers=headers, timeout=60)


def attach(vbs, project, volume_id):
    resp = api(vbs, project, "POST", f"/volumes/{volume_id}/action",
               {"os-attach": {"instance_uuid": str(uuid.uuid4()), "mountpoint": "/dev/vdb"}})
    assert resp.status_code == 202, (resp.status_code, resp.text)


def detach(vbs, project, volume_id):
    resp = api(vbs, project, "POST", f"/volumes/{volume_id}/action", {"os-detach": {}})
    assert resp.status_code == 202, (resp.status_code, resp.text)


# --------------------------------------------------------------------------- openstack

def osc(vbs, p, *args):
    return openstack_json(vbs, p, *args)


def osc_fails(vbs, p, *args):
    done = openstack_noauth(vbs, p, *args)
    assert done.returncode != 0, f"`{done.cmdline}` succeeded:\n{done.stdout}"
    return done.stdout + done.stderr


def backup_show(vbs, p, ref):
    return osc(vbs, p, "volume", "backup", "show", ref)


def volume_show(vbs, p, ref):
    return osc(vbs, p, "volume", "show", ref)


def test_openstack_backup_create_incremental_force_restore_delete(vbs):
    p = fresh_project()
    rng = random.Random(7001)
    v1 = osc(vbs, p, "volume", "create", "--size", "1", "v1")
    assert v1["status"] == "available"
    img = Image(vbs, v1["id"])
    fill(img, rng)
    state_a = img.expected()

    # 1. a full backup
    created = osc(vbs, p, "volume", "backup", "create", "--name", "b1", "v1")
    assert (created["name"], created["volume_id"]) == ("b1", v1["id"])
    b1 = wait_until(lambda: backup_show(vbs, p, "b1"), "available")
    assert b1["id"] == created["id"]
    assert (b1["size"], b1["is_incremental"], b1["volume_id"]) == (1, False, v1["id"])
    assert b1["has_dependent_backups"] is False
    assert b1["snapshot_id"] is None
    assert b1["object_count"] >= 1, b1
    assert wait_until(lambda: volume_show(vbs, p, "v1"), "available")

    # 2. some pages change (in the data, and one in a former hole); an incremental
    change_pages(img, rng, [0, 17, 300, 100 * MIB // PAGE + 5, 50 * MIB // PAGE, GIB // PAGE - 1])
    state_b = img.expected()
    created = osc(vbs, p, "volume", "backup", "create", "--incremental", "--name", "b2", "v1")
    b2 = wait_until(lambda: backup_show(vbs, p, "b2"), "available")
    assert b2["id"] == created["id"]
    assert (b2["size"], b2["is_incremental"], b2["volume_id"]) == (1, True, v1["id"])
    assert backup_show(vbs, p, "b1")["has_dependent_backups"] is True
    wait_until(lambda: volume_show(vbs, p, "v1"), "available")

    # 3. in-use (attached by the API action): a backup needs --force
    attach(vbs, p, v1["id"])
    assert volume_show(vbs, p, "v1")["status"] == "in-use"
    change_pages(img, rng, [1, 2, 3, 700 * MIB // PAGE])
    state_c = img.expected()
    out = osc_fails(vbs, p, "volume", "backup", "create", "v1")
    # Cinder: 400 InvalidVolume "Invalid volume: Backing up an in-use volume must use the force flag."
    assert "Invalid volume: Backing up an in-use volume must use the force flag." in out, out
    assert "BadRequestException: 400" in out, out  # OSC on the SDK words it so
    created = osc(vbs, p, "volume", "backup", "create", "--force", "v1")
    assert created["name"] is None and created["volume_id"] == v1["id"]
    b3 = wait_until(lambda: backup_show(vbs, p, created["id"]), "available")
    assert (b3["is_incremental"], b3["size"]) == (False, 1)
    # the source goes back to where it was: in-use, still attached
    v1_now = wait_until(lambda: volume_show(vbs, p, "v1"), "in-use")
    assert len(v1_now["attachments"]) == 1, v1_now

    # 4. restores. To a name that is no volume yet: the server creates it.
    out = osc(vbs, p, "volume", "backup", "restore", "b2", "v2")
    assert (out["id"], out["volume_name"]) == (b2["id"], "v2")
    v2 = wait_until(lambda: volume_show(vbs, p, "v2"), "available", bad=("error", "error_restoring"))
    assert out["volume_id"] == v2["id"] and v2["size"] == 1
    # spec 01 §8.2: restored from another volume's backup → metadata src_backup_id
    assert v2["properties"] == {"src_backup_id": b2["id"]}, v2
    assert v2["description"] == "auto-created_from_restore_from_backup"
    assert_image(Image(vbs, v2["id"]).path, state_b)

    # to an existing volume that holds other bytes, where b1 has holes and data: the
    # client refuses without --force, and with it the volume ends up exactly b1
    v3 = osc(vbs, p, "volume", "create", "--size", "1", "v3")
    img3 = Image(vbs, v3["id"])
    img3.write(50 * MIB, seeded(rng, MIB))
    img3.write(MIB, seeded(rng, 64 * 1024))
    out = osc_fails(vbs, p, "volume", "backup", "restore", "b1", "v3")
    assert "Volume 'v3' already exists" in out, out
    out = osc(vbs, p, "volume", "backup", "restore", "--force", "b1", "v3")
    assert (out["id"], out["volume_id"]) == (b1["id"], v3["id"])
    v3 = wait_until(lambda: volume_show(vbs, p, "v3"), "available", bad=("error", "error_restoring"))
    assert v3["properties"] == {"src_backup_id": b1["id"]}, v3
    wait_until(lambda: backup_show(vbs, p, "b1"), "available")
    assert_image(img3.path, state_a)

    # the forced backup of the in-use volume, to another new volume
    out = osc(vbs, p, "volume", "backup", "restore", b3["id"], "v4")
    v4 = wait_until(lambda: volume_show(vbs, p, "v4"), "available", bad=("error", "error_restoring"))
    assert out["volume_id"] == v4["id"]
    assert_image(Image(vbs, v4["id"]).path, state_c)
    # the source was never touched by any of it
    assert_image(img.path, state_c)

    # 5. deletes: b1 has an incremental child, so it is refused until b2 is gone
    wait_until(lambda: backup_show(vbs, p, "b2"), "available")
    out = osc_fails(vbs, p, "volume", "backup", "delete", "b1")
    # Cinder: 400 InvalidBackup "Invalid backup: Incremental backups exist for this backup."
    assert "Invalid backup: Incremental backups exist for this backup." in out, out
    assert backup_show(vbs, p, "b1")["status"] == "available"
    ok(openstack_noauth(vbs, p, "volume", "backup", "delete", "b2"))
    wait_gone(lambda: openstack_noauth(vbs, p, "volume", "backup", "show", "b2").returncode != 0)
    assert "No Backup found for b2" in osc_fails(vbs, p, "volume", "backup", "show", "b2")
    assert backup_show(vbs, p, "b1")["has_dependent_backups"] is False
    ok(openstack_noauth(vbs, p, "volume", "backup", "delete", "b1"))
    wait_gone(lambda: openstack_noauth(vbs, p, "volume", "backup", "show", "b1").returncode != 0)
    left = osc(vbs, p, "volume", "backup", "list")
    assert [b["ID"] for b in left] == [b3["id"]]
    # the restored volumes do not depend on the deleted backups
    assert_image(Image(vbs, v2["id"]).path, state_b)
    detach(vbs, p, v1["id"])
    wait_until(lambda: volume_show(vbs, p, "v1"), "available")
    # leave no backup behind: the admin listings of the other client tests see every
    # project of this shared server
    ok(openstack_noauth(vbs, p, "volume", "backup", "delete", b3["id"]))
    wait_gone(lambda: openstack_noauth(vbs, p, "volume", "backup", "show", b3["id"]).returncode != 0)


# --------------------------------------------------------------------------- cinder

def props(out):
    tables, _ = parse_tables(out)
    return {r["Property"]: r["Value"] for r in tables[0]}


def cinder(vbs, p, *args):
    return ok(cinder_noauth(vbs, p, *args))


def cinder_show(vbs, p, kind, ref):
    return props(cinder(vbs, p, kind, ref))


def test_cinder_backup_create_restore_delete(vbs):
    p = fresh_project("cinderuser")
    rng = random.Random(7002)
    vol = props(cinder(vbs, p, "create", "--name", "cv", "1"))
    img = Image(vbs, vol["id"])
    fill(img, rng)
    state_a = img.expected()

    # an incremental needs an available backup of the volume to build on
    refused = cinder_noauth(vbs, p, "backup-create", "--incremental", "cv")
    assert refused.returncode != 0
    assert ("Invalid backup: No backups available to do an incremental backup. (HTTP 400)"
            in refused.stderr), refused.stderr

    out = props(cinder(vbs, p, "backup-create", "--name", "cb1", "cv"))
    assert (out["name"], out["volume_id"]) == ("cb1", vol["id"])
    cb1 = wait_until(lambda: cinder_show(vbs, p, "backup-show", "cb1"), "available")
    assert (cb1["id"], cb1["size"], cb1["is_incremental"]) == (out["id"], "1", "False")
    wait_until(lambda: cinder_show(vbs, p, "show", vol["id"]), "available")

    change_pages(img, rng, [5, 200 * MIB // PAGE])
    state_b = img.expected()
    out = props(cinder(vbs, p, "backup-create", "--incremental", "--name", "cb2", "cv"))
    cb2 = wait_until(lambda: cinder_show(vbs, p, "backup-show", out["id"]), "available")
    assert (cb2["is_incremental"], cb2["volume_id"]) == ("True", vol["id"])
    assert cinder_show(vbs, p, "backup-show", "cb1")["has_dependent_backups"] == "True"
    wait_until(lambda: cinder_show(vbs, p, "show", vol["id"]), "available")

    # restore to a new volume by name, and to an existing one by --volume
    restored = props(cinder(vbs, p, "backup-restore", "--name", "crv", cb2["id"]))
    assert (restored["backup_id"], restored["volume_name"]) == (cb2["id"], "crv")
    rv = wait_until(lambda: cinder_show(vbs, p, "show", restored["volume_id"]), "available",
                    bad=("error", "error_restoring"))
    assert rv["name"] == "crv"
    assert_image(Image(vbs, restored["volume_id"]).path, state_b)
    target = props(cinder(vbs, p, "create", "--name", "ctarget", "1"))
    Image(vbs, target["id"]).write(200 * MIB, seeded(rng, PAGE))
    restored = props(cinder(vbs, p, "backup-restore", "--volume", target["id"], cb1["id"]))
    assert (restored["backup_id"], restored["volume_id"]) == (cb1["id"], target["id"])
    wait_until(lambda: cinder_show(vbs, p, "show", target["id"]), "available", bad=("error", "error_restoring"))
    assert_image(Image(vbs, target["id"]).path, state_a)
    wait_until(lambda: cinder_show(vbs, p, "backup-show", cb1["id"]), "available")

    # delete the child, then the parent
    refused = cinder_noauth(vbs, p, "backup-delete", cb1["id"])
    assert refused.returncode != 0
    assert "Incremental backups exist for this backup." in refused.stdout + refused.stderr, refused.stderr
    out = cinder(vbs, p, "backup-delete", cb2["id"])
    assert f"Request to delete backup {cb2['id']} has been accepted." in out, out
    wait_gone(lambda: cinder_noauth(vbs, p, "backup-show", cb2["id"]).returncode != 0)
    cinder(vbs, p, "backup-delete", "cb1")
    wait_gone(lambda: cinder_noauth(vbs, p, "backup-show", cb1["id"]).returncode != 0)
    tables, _ = parse_tables(cinder(vbs, p, "backup-list"))
    assert not tables or tables[0] == []


# --------------------------------------------------------------------------- openstacksdk

def test_sdk_backup_create_restore_delete(vbs):
    p = fresh_project("sdkuser")
    rng = random.Random(7003)
    conn = sdk_connection(vbs, p)
    bs = conn.block_storage
    wait = {"interval": POLL, "wait": TIMEOUT}
    vol = bs.wait_for_status(bs.create_volume(size=1, name="sv"), status="available", **wait)
    img = Image(vbs, vol.id)
    fill(img, rng)
    state_a = img.expected()

    full = bs.create_backup(volume_id=vol.id, name="sb1", description="sdk full")
    full = bs.wait_for_status(full, status="available", failures=["error"], **wait)
    assert (full.name, full.volume_id, full.size, full.is_incremental) == ("sb1", vol.id, 1, False)
    assert full.description == "sdk full"
    bs.wait_for_status(bs.get_volume(vol.id), status="available", **wait)

    change_pages(img, rng, [9, 10, 11])
    state_b = img.expected()
    incr = bs.create_backup(volume_id=vol.id, name="sb2", is_incremental=True)
    incr = bs.wait_for_status(incr, status="available", failures=["error"], **wait)
    assert incr.is_incremental is True
    assert bs.get_backup(full.id).has_dependent_backups is True
    bs.wait_for_status(bs.get_volume(vol.id), status="available", **wait)

    restored = bs.restore_backup(incr, name="srv")
    assert restored.id == incr.id and restored.volume_id
    new = bs.wait_for_status(bs.get_volume(restored.volume_id), status="available",
                             failures=["error", "error_restoring"], **wait)
    assert new.name == "srv"
    assert_image(Image(vbs, new.id).path, state_b)
    bs.wait_for_status(bs.get_backup(incr.id), status="available", **wait)

    target = bs.wait_for_status(bs.create_volume(size=2, name="starget"), status="available", **wait)
    # other bytes where the backup has a hole; the second GiB stays a fresh hole (what
    # Cinder leaves past the backup's end of a larger target is not defined)
    Image(vbs, target.id, 2).write(300 * MIB, seeded(rng, PAGE))
    bs.restore_backup(full, volume=target.id)
    target = bs.wait_for_status(bs.get_volume(target.id), status="available",
                                failures=["error", "error_restoring"], **wait)
    # a larger target keeps its size
    assert target.size == 2
    assert_image(Image(vbs, target.id, 2).path, state_a, size=2 * GIB)
    bs.wait_for_status(bs.get_backup(full.id), status="available", **wait)

    bs.delete_backup(incr)
    bs.wait_for_delete(incr, **wait)
    bs.delete_backup(full)
    bs.wait_for_delete(full, **wait)
    assert list(bs.backups()) == []
    conn.close()
