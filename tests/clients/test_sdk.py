"""openstacksdk (`conn.block_storage.backups()` and friends) against vbs in noauth mode.

The SDK pages by itself: it follows `backups_links` and, on a full page without one,
asks once more with a marker. The 1,500-backup project needs more than one page of
the server's 1,000-item maximum, so these tests prove paging end to end.
"""
import uuid

import pytest
import requests
from openstack import exceptions

from conftest import api_ts, sdk_connection


@pytest.fixture(scope="module")
def conns():
    """One SDK connection per (deployment, project), reused across tests."""
    cache = {}

    def get(deployment, project):
        key = (deployment.backend, project.id)
        if key not in cache:
            cache[key] = sdk_connection(deployment, project)
        return cache[key]

    yield get
    for conn in cache.values():
        conn.close()


def assert_full_listing(backups, project):
    got = [b.id for b in backups]
    assert len(got) == len(set(got)), "duplicates across pages"
    assert got == project.ids


def test_server_pages_at_1000_with_a_next_link(vbs):
    """What the SDK relies on: a full first page and a next link carrying the marker."""
    big = vbs.data.big
    resp = requests.get(f"{vbs.server.endpoint(big)}/backups/detail", headers={
        "X-Auth-Token": big.token, "OpenStack-API-Version": "volume 3.64"}, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [b["id"] for b in body["backups"]] == big.ids[:1000]
    (link,) = body["backups_links"]
    assert link["rel"] == "next"
    assert link["href"] == f"{vbs.server.endpoint(big)}/backups/detail?marker={big.ids[999]}"


def test_backups_default_limit_pages_past_1000(vbs, conns):
    big = vbs.data.big
    assert_full_listing(conns(vbs, big).block_storage.backups(), big)


def test_backups_limit_100_pages_through_everything(vbs, conns):
    big = vbs.data.big
    assert_full_listing(conns(vbs, big).block_storage.backups(limit=100), big)


def test_backups_summary_pages_too(vbs, conns):
    big = vbs.data.big
    backups = list(conns(vbs, big).block_storage.backups(details=False, limit=400))
    assert_full_listing(backups, big)
    assert [b.name for b in backups] == [big.by_id(b.id)["display_name"] for b in backups]
    assert all(b.status is None for b in backups), "summary items carry only id, name, links"


def test_backups_sorted_by_name_in_pages(sqlite_vbs, conns):
    small = sqlite_vbs.data.small
    backups = list(conns(sqlite_vbs, small).block_storage.backups(sort="name:asc", limit=8))
    expected = sorted(small.visible, key=lambda r: r["display_name"])
    assert [b.id for b in backups] == [r["id"] for r in expected]


def test_backups_filters(sqlite_vbs, conns):
    small = sqlite_vbs.data.small
    bs = conns(sqlite_vbs, small).block_storage
    errors = [r["id"] for r in small.visible if r["status"] == "error"]
    assert errors and [b.id for b in bs.backups(status="error")] == errors
    volume = small.visible[5]["volume_id"]
    on_volume = [r["id"] for r in small.visible if r["volume_id"] == volume]
    assert [b.id for b in bs.backups(volume_id=volume)] == on_volume
    target = small.visible[30]
    assert [b.id for b in bs.backups(name=target["display_name"])] == [target["id"]]


def test_get_and_find_backup(sqlite_vbs, conns):
    small = sqlite_vbs.data.small
    bs = conns(sqlite_vbs, small).block_storage
    want = next(r for r in small.visible if r["parent_id"])
    backup = bs.get_backup(want["id"])
    assert (backup.id, backup.name, backup.description, backup.status, backup.size, backup.volume_id,
            backup.container, backup.availability_zone, backup.object_count, backup.is_incremental,
            backup.created_at, backup.data_timestamp, backup.metadata) == (
        want["id"], want["display_name"], want["display_description"], want["status"], want["size"],
        want["volume_id"], want["container"], want["availability_zone"], want["object_count"], True,
        api_ts(want["created_at"]), api_ts(want["data_timestamp"]), {})
    assert bs.find_backup(want["display_name"]).id == want["id"]
    assert bs.find_backup(want["id"]).id == want["id"]


def test_missing_foreign_and_deleted_backups_are_not_found(sqlite_vbs, conns):
    data = sqlite_vbs.data
    bs = conns(sqlite_vbs, data.small).block_storage
    for missing in (str(uuid.UUID(int=7)), data.other.ids[0], data.small.deleted[0]["id"]):
        with pytest.raises(exceptions.NotFoundException):
            bs.get_backup(missing)
        assert bs.find_backup(missing, ignore_missing=True) is None


def test_admin_all_projects(sqlite_vbs, conns):
    data = sqlite_vbs.data
    bs = conns(sqlite_vbs, data.admin).block_storage
    assert list(bs.backups()) == []
    every = data.all_visible()
    backups = list(bs.backups(all_projects=True, limit=500))
    assert [b.id for b in backups] == [r["id"] for r in every]
    owners = {b.id: b.project_id for b in backups}
    assert all(owners[r["id"]] == r["project_id"] for r in every)
