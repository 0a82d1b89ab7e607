"""python-cinderclient (`cinder --os-volume-api-version 3.45 backup-list ...`) against vbs.

cinder runs with its noauth plugin (token USER:PROJECT) and CINDER_ENDPOINT .../v3/PROJECT.
It prints tables; they are parsed back into rows. Without --sort the client re-sorts the
table by ID, so order is only compared when --sort is given.
"""
import re

from conftest import cinder_noauth, ok, parse_tables

TOTAL = re.compile(r"^Backup in total: (\d+)$")


def backup_list(vbs, project, *args):
    """Run `cinder backup-list ARGS`; return (rows, total or None)."""
    out = ok(cinder_noauth(vbs, project, "backup-list", *args))
    tables, others = parse_tables(out)
    assert len(tables) == 1, out
    totals = [int(m.group(1)) for m in map(TOTAL.match, others) if m]
    assert len(totals) == ("--with-count" in args), out
    return tables[0], (totals[0] if totals else None)


def ids(rows):
    return [r["ID"] for r in rows]


def test_with_count_lists_the_project(vbs):
    small = vbs.data.small
    rows, total = backup_list(vbs, small, "--with-count")
    assert total == len(small.ids) == 60
    assert ids(rows) == sorted(small.ids)
    for row in rows:
        want = small.by_id(row["ID"])
        assert (row["Volume ID"], row["Status"], row["Name"], row["Size"], row["Object Count"],
                row["Container"]) == (want["volume_id"], want["status"], want["display_name"],
                                      str(want["size"]), str(want["object_count"]), want["container"])


def test_with_count_follows_next_links_past_1000(vbs):
    big = vbs.data.big
    rows, total = backup_list(vbs, big, "--with-count")
    assert total == 1500
    assert len(rows) == 1500 and ids(rows) == sorted(big.ids)


def test_fuzzy_name_filter(vbs):
    small = vbs.data.small
    expected = [r["id"] for r in small.visible if "rav" in r["display_name"]]
    assert 0 < len(expected) < len(small.ids)
    rows, total = backup_list(vbs, small, "--with-count", "--filters", "name~=rav")
    assert total == len(expected)
    assert ids(rows) == sorted(expected)
    assert all("rav" in r["Name"] for r in rows)
    # fuzzy matching is case-insensitive
    rows, total = backup_list(vbs, small, "--with-count", "--filters", "name~=RAV")
    assert (ids(rows), total) == (sorted(expected), len(expected))


def test_fuzzy_and_exact_filters_combined(sqlite_vbs):
    small = sqlite_vbs.data.small
    expected = [r["id"] for r in small.visible if "a" in r["display_name"] and r["status"] == "available"]
    assert 0 < len(expected) < len(small.ids)
    rows, total = backup_list(sqlite_vbs, small, "--with-count", "--filters", "status=available",
                              "--filters", "name~=a")
    assert (ids(rows), total) == (sorted(expected), len(expected))
    volume = small.visible[0]["volume_id"]
    expected = [r["id"] for r in small.visible if r["volume_id"] == volume]
    rows, total = backup_list(sqlite_vbs, small, "--with-count", "--volume-id", volume)
    assert (ids(rows), total) == (sorted(expected), len(expected))
    rows, total = backup_list(sqlite_vbs, small, "--with-count", "--filters", "name~=zzz")
    assert (rows, total) == ([], 0)


def test_limit_returns_the_first_page_and_the_full_count(vbs):
    small = vbs.data.small
    rows, total = backup_list(vbs, small, "--with-count", "--limit", "5")
    assert total == 60
    assert ids(rows) == sorted(small.ids[:5])
    rows, total = backup_list(vbs, small, "--limit", "5", "--sort", "created_at:desc")
    assert ids(rows) == small.ids[:5]


def test_sort(vbs):
    small = vbs.data.small
    by_name = sorted(small.visible, key=lambda r: r["display_name"])
    rows, _ = backup_list(vbs, small, "--sort", "name:asc", "--limit", "10")
    assert [r["Name"] for r in rows] == [r["display_name"] for r in by_name[:10]]
    assert ids(rows) == [r["id"] for r in by_name[:10]]
    rows, _ = backup_list(vbs, small, "--sort", "name:desc")
    assert ids(rows) == [r["id"] for r in reversed(by_name)]
    rows, _ = backup_list(vbs, small, "--sort", "created_at:asc")
    assert ids(rows) == list(reversed(small.ids))
    # size has ties: the server breaks them by created_at, then id, in the first key's direction
    by_size = sorted(small.visible, key=lambda r: (r["size"], r["created_at"], r["id"]))
    rows, _ = backup_list(vbs, small, "--sort", "size:asc")
    assert ids(rows) == [r["id"] for r in by_size]


def test_marker(vbs):
    small = vbs.data.small
    rows, _ = backup_list(vbs, small, "--marker", small.ids[9], "--limit", "5", "--sort", "created_at:desc")
    assert ids(rows) == small.ids[10:15]
    # without --limit the client follows the pages to the end
    rows, _ = backup_list(vbs, small, "--marker", small.ids[9], "--sort", "created_at:desc")
    assert ids(rows) == small.ids[10:]
    by_name = sorted(small.visible, key=lambda r: r["display_name"])
    rows, _ = backup_list(vbs, small, "--marker", by_name[20]["id"], "--limit", "7", "--sort", "name:asc")
    assert ids(rows) == [r["id"] for r in by_name[21:28]]


def test_non_admin_all_tenants_is_ignored_admin_sees_every_project(sqlite_vbs):
    data = sqlite_vbs.data
    rows, total = backup_list(sqlite_vbs, data.small, "--with-count", "--all-tenants")
    assert (sorted(ids(rows)), total) == (sorted(data.small.ids), 60)
    rows, total = backup_list(sqlite_vbs, data.admin, "--with-count")
    assert (rows, total) == ([], 0)
    every = [i for p in data.projects for i in p.ids]
    rows, total = backup_list(sqlite_vbs, data.admin, "--with-count", "--all-tenants")
    assert total == len(every) == 1572
    assert ids(rows) == sorted(every)


def test_backup_show(sqlite_vbs):
    small = sqlite_vbs.data.small
    want = small.visible[11]
    for ref in (want["id"], want["display_name"]):
        out = ok(cinder_noauth(sqlite_vbs, small, "backup-show", ref))
        (table,), _ = parse_tables(out)
        props = {r["Property"]: r["Value"] for r in table}
        assert (props["id"], props["name"], props["status"], props["volume_id"], props["size"]) == (
            want["id"], want["display_name"], want["status"], want["volume_id"], str(want["size"]))
    other = sqlite_vbs.data.other.ids[0]
    done = cinder_noauth(sqlite_vbs, small, "backup-show", other)
    assert done.returncode != 0
    assert f"No volumebackup with a name or ID of '{other}' exists." in done.stderr, done.stderr
