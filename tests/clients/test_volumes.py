"""Volumes and snapshots through the real clients: `openstack volume …`, `cinder …` and
openstacksdk against vbs in noauth mode, on SQLite and PostgreSQL.

Each test works in a project of its own (a fresh id), so the seeded backups of the
other suites never see these volumes.
"""
import time
import uuid

import pytest

from conftest import Project, cinder_noauth, ok, openstack_json, openstack_noauth, parse_tables, sdk_connection


def fresh_project(user="voluser"):
    return Project("volumes", uuid.uuid4().hex, user)


def osc(vbs, project, *args):
    return openstack_json(vbs, project, *args)


def wait_for(fetch, want, timeout=60):
    """Calls fetch() until its 'status' is want (fails on error or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fetch()
        status = got["status"]
        if status == want:
            return got
        assert status != "error", got
        assert time.monotonic() < deadline, f"still {status} after {timeout}s: {got}"
        time.sleep(0.2)


def test_openstack_volume_lifecycle(vbs):
    p = fresh_project()
    created = osc(vbs, p, "volume", "create", "--size", "1", "--description", "made by osc", "osc-vol")
    assert (created["name"], created["size"], created["status"]) == ("osc-vol", 1, "available")
    vid = created["id"]

    # show by name (OSC tries GET /volumes/osc-vol, then ?name=) and by id
    for ref in ("osc-vol", vid):
        shown = osc(vbs, p, "volume", "show", ref)
        assert (shown["id"], shown["size"], shown["status"]) == (vid, 1, "available")
        assert shown["description"] == "made by osc"
        assert shown["availability_zone"] == "nova"
        assert shown["bootable"] is False  # OSC turns "false" into a boolean

    listed = osc(vbs, p, "volume", "list")
    assert [(v["ID"], v["Name"], v["Status"], v["Size"]) for v in listed] == [(vid, "osc-vol", "available", 1)]
    assert [v["ID"] for v in osc(vbs, p, "volume", "list", "--long")] == [vid]

    # extend through `volume set --size`
    ok(openstack_noauth(vbs, p, "volume", "set", "--size", "2", "osc-vol"))
    assert osc(vbs, p, "volume", "show", vid)["size"] == 2

    # snapshots of it
    snap = osc(vbs, p, "volume", "snapshot", "create", "--volume", "osc-vol", "--description", "s", "osc-snap")
    assert (snap["name"], snap["volume_id"], snap["size"]) == ("osc-snap", vid, 2)
    shown = wait_for(lambda: osc(vbs, p, "volume", "snapshot", "show", "osc-snap"), "available")
    assert shown["id"] == snap["id"]
    assert (shown["size"], shown["volume_id"], shown["description"]) == (2, vid, "s")
    listed = osc(vbs, p, "volume", "snapshot", "list")
    assert [(s["ID"], s["Name"], s["Status"]) for s in listed] == [(snap["id"], "osc-snap", "available")]

    # a volume with a snapshot cannot be deleted; the client reports the server's reason
    refused = openstack_noauth(vbs, p, "volume", "delete", "osc-vol")
    assert refused.returncode != 0
    assert "must not be migrating, attached, belong to a group, have snapshots" in refused.stderr + refused.stdout

    ok(openstack_noauth(vbs, p, "volume", "snapshot", "delete", "osc-snap"))
    assert osc(vbs, p, "volume", "snapshot", "list") == []
    ok(openstack_noauth(vbs, p, "volume", "delete", "osc-vol"))
    assert osc(vbs, p, "volume", "list") == []
    gone = openstack_noauth(vbs, p, "volume", "show", vid)
    assert gone.returncode != 0


def test_openstack_volume_from_snapshot_and_cascade_delete(sqlite_vbs):
    vbs = sqlite_vbs
    p = fresh_project()
    vid = osc(vbs, p, "volume", "create", "--size", "1", "base")["id"]
    snap = osc(vbs, p, "volume", "snapshot", "create", "--volume", vid, "base-snap")["id"]
    wait_for(lambda: osc(vbs, p, "volume", "snapshot", "show", snap), "available")
    clone = osc(vbs, p, "volume", "create", "--snapshot", snap, "clone")
    assert clone["snapshot_id"] == snap
    clone = wait_for(lambda: osc(vbs, p, "volume", "show", "clone"), "available")
    assert clone["size"] == 1
    ok(openstack_noauth(vbs, p, "volume", "delete", "clone"))
    # --purge is Cinder's cascade: the volume goes with its snapshots
    ok(openstack_noauth(vbs, p, "volume", "delete", "--purge", "base"))
    assert osc(vbs, p, "volume", "list") == []
    assert osc(vbs, p, "volume", "snapshot", "list") == []


def test_openstack_volume_of_another_project_is_not_found(sqlite_vbs):
    vbs = sqlite_vbs
    mine, theirs = fresh_project(), fresh_project("other")
    vid = osc(vbs, mine, "volume", "create", "--size", "1", "private")["id"]
    for ref in (vid, "private"):
        done = openstack_noauth(vbs, theirs, "volume", "show", ref)
        assert done.returncode != 0
        assert f"No Volume found for {ref}" in done.stderr, done.stderr
    ok(openstack_noauth(vbs, mine, "volume", "delete", vid))


def test_cinder_volume_commands(vbs):
    p = fresh_project()
    out = ok(cinder_noauth(vbs, p, "create", "--name", "cin-vol", "1"))
    tables, _ = parse_tables(out)
    fields = {r["Property"]: r["Value"] for r in tables[0]}
    assert fields["name"] == "cin-vol" and fields["size"] == "1"
    vid = fields["id"]
    tables, _ = parse_tables(ok(cinder_noauth(vbs, p, "show", "cin-vol")))
    fields = {r["Property"]: r["Value"] for r in tables[0]}
    assert (fields["id"], fields["status"]) == (vid, "available")
    tables, _ = parse_tables(ok(cinder_noauth(vbs, p, "list")))
    assert [(r["ID"], r["Name"], r["Status"], r["Size"]) for r in tables[0]] == [(vid, "cin-vol", "available", "1")]
    ok(cinder_noauth(vbs, p, "extend", vid, "3"))
    tables, _ = parse_tables(ok(cinder_noauth(vbs, p, "show", vid)))
    assert {r["Property"]: r["Value"] for r in tables[0]}["size"] == "3"
    out = ok(cinder_noauth(vbs, p, "snapshot-create", "--name", "cin-snap", vid))
    snap = {r["Property"]: r["Value"] for r in parse_tables(out)[0][0]}["id"]
    ok(cinder_noauth(vbs, p, "snapshot-list"))
    conn = sdk_connection(vbs, p)
    wait_for(lambda: conn.block_storage.get_snapshot(snap).to_dict(), "available")
    ok(cinder_noauth(vbs, p, "snapshot-delete", snap))
    ok(cinder_noauth(vbs, p, "delete", "cin-vol"))
    tables, _ = parse_tables(ok(cinder_noauth(vbs, p, "list")))
    assert not tables or tables[0] == []


def test_sdk_volumes_and_snapshots(vbs):
    p = fresh_project()
    conn = sdk_connection(vbs, p)
    bs = conn.block_storage
    vol = bs.create_volume(size=1, name="sdk-vol", metadata={"k": "v"})
    vol = bs.wait_for_status(vol, status="available", interval=0.2, wait=60)
    assert (vol.size, vol.metadata) == (1, {"k": "v"})
    assert bs.find_volume("sdk-vol").id == vol.id
    bs.extend_volume(vol, 2)
    vol = bs.wait_for_status(bs.get_volume(vol.id), status="available", interval=0.2, wait=60)
    assert vol.size == 2
    snap = bs.create_snapshot(volume_id=vol.id, name="sdk-snap")
    snap = bs.wait_for_status(snap, status="available", interval=0.2, wait=60)
    assert [s.id for s in bs.snapshots()] == [snap.id]
    bs.delete_snapshot(snap)
    bs.wait_for_delete(snap, interval=0.2, wait=60)
    bs.delete_volume(vol)
    bs.wait_for_delete(vol, interval=0.2, wait=60)
    assert list(bs.volumes()) == []


def test_manage_existing_file_as_admin(sqlite_vbs):
    vbs = sqlite_vbs
    # Only files under the server's manageable roots (default: DATA_DIR/manageable).
    img = vbs.data_dir / "manageable" / "existing.raw"
    with open(img, "wb") as f:
        f.truncate(3 * 2**30 // 2)  # 1.5 GiB, sparse: managed as 2 GiB
    admin = fresh_project("admin")
    conn = sdk_connection(vbs, admin)
    resp = conn.block_storage.post(
        "/manageable_volumes",
        json={"volume": {"ref": {"source-name": str(img)}, "name": "adopted"}},
        microversion="3.8",
    )
    assert resp.status_code == 202, resp.text
    vid = resp.json()["volume"]["id"]
    shown = osc(vbs, admin, "volume", "show", "adopted")
    assert (shown["id"], shown["size"], shown["status"]) == (vid, 2, "available")
    ok(openstack_noauth(vbs, admin, "volume", "delete", vid))
    assert img.stat().st_size == 3 * 2**30 // 2  # the admin's file stays
    member = Project("volumes", admin.id, "someone")
    refused = sdk_connection(vbs, member).block_storage.post(
        "/manageable_volumes", json={"volume": {"ref": {"source-name": str(img)}}}, microversion="3.8")
    assert refused.status_code == 403
