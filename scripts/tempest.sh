#!/usr/bin/env bash
# scripts/tempest.sh - OpenStack's tempest (from PyPI) against vbs in keystone mode.
#
#   scripts/tempest.sh [WORKDIR]
#
# Installs tempest and cinder-tempest-plugin into .venv-tempest (cached by a stamp),
# starts a real Keystone (scripts/keystone.sh) and `vbs serve --auth keystone` on the
# embedded default, writes a tempest.conf with dynamic credentials (tempest creates its
# own projects and users, the RBAC personas included) and `[enforce_scope] cinder`,
# then runs the volume-backup tests below. Tests that need Nova, Glance or Neutron are
# skipped by that configuration; the few that do not declare what they need are in
# tests/tempest/exclude.txt with the reason. Prints tempest's summary and a one-line
# count; exits non-zero when any test fails.
#
# Env: VBS_BIN (target/debug/vbs), KEYSTONE_PORT and VBS_PORT (free ports when unset),
#      TEMPEST_CONCURRENCY (2), TEMPEST_NEUTRON (false; `true` runs the classes that ask
#      for a network too, whose tests pass but whose cleanup then fails: no Neutron).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/pinned-venv.sh
source "$repo/scripts/lib/pinned-venv.sh"
tvenv=$repo/.venv-tempest
packages=(tempest==47.0.0 cinder-tempest-plugin==1.23.0)
vbs_bin=${VBS_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/vbs}
work=${1:-$(mktemp -d /tmp/vbs-tempest.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}

# The tests of the issue: tempest's backup tests (user and admin), its snapshot tests,
# and cinder-tempest-plugin's backup tests with the RBAC personas.
tests='^(tempest\.api\.volume\.test_volumes_backup\.'
tests+='|tempest\.api\.volume\.admin\.test_volumes_backup\.'
tests+='|tempest\.api\.volume\.test_volumes_snapshots\.'
tests+='|cinder_tempest_plugin\.api\.volume\.(admin\.)?test_volume_backup\.'
tests+='|cinder_tempest_plugin\.api\.volume\.test_multiple_volume_from_resource\.CreateVolumesFromBackupTest\.'
tests+='|cinder_tempest_plugin\.rbac\.v3\.test_backups\.'
tests+='|cinder_tempest_plugin\.scenario\.test_volume_concurrency\.ConcurrentVolumeActionsTest\.test_create_backups_and_restores)'

die() { echo "tempest.sh: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stamp() { echo "[tempest.sh $(date +%T)] $*"; }


vbs_pid=
cleanup() {
    if [[ -n "$vbs_pid" ]] && kill -0 "$vbs_pid" 2>/dev/null; then
        kill -TERM "$vbs_pid"; wait "$vbs_pid" 2>/dev/null || true
    fi
    "$repo/scripts/keystone.sh" stop "$work/keystone" >/dev/null 2>&1 || true
}
trap cleanup EXIT

[[ -x "$vbs_bin" ]] || die "no vbs binary at $vbs_bin (cargo build, or set VBS_BIN)"
pinned_venv "$tvenv" tempest "${packages[@]}"

keystone_port=${KEYSTONE_PORT:-$(free_port)}
vbs_port=${VBS_PORT:-$(free_port)}
rm -rf "$work/keystone"
stamp "keystone on port $keystone_port"
# One Keystone worker: tempest's parallel project churn makes two workers' writes to
# Keystone's SQLite database collide ("database is locked", a 500 on a token request).
KEYSTONE_WORKERS=1 KEYSTONE_PORT=$keystone_port "$repo/scripts/keystone.sh" start "$work/keystone" >"$work/keystone.out" 2>&1 \
    || { cat "$work/keystone.out" >&2; die "keystone did not start"; }
seed=$work/keystone/seed.json
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))' "$seed" "$1"; }
"$repo/scripts/keystone.sh" vbs-config "$work/keystone" "$work/vbs.toml"
mkdir -p "$work/data"
stamp "vbs on port $vbs_port"
"$vbs_bin" serve --listen "127.0.0.1:$vbs_port" --data-dir "$work/data" --auth keystone \
    --config "$work/vbs.toml" >"$work/vbs.out" 2>"$work/vbs.log" &
vbs_pid=$!
for _ in $(seq 1 100); do grep -q '^listening on' "$work/vbs.out" 2>/dev/null && break; sleep 0.2; done
grep -q '^listening on' "$work/vbs.out" || { tail -20 "$work/vbs.log" >&2; die "vbs did not start"; }
"$repo/scripts/keystone.sh" endpoint "$work/keystone" "http://127.0.0.1:$vbs_port" >/dev/null

rm -rf "$work/ws"
"$tvenv/bin/tempest" init --workspace-path "$work/workspace.yaml" "$work/ws" >"$work/init.out" 2>&1 \
    || { cat "$work/init.out" >&2; die "tempest init failed"; }
cat >"$work/ws/etc/tempest.conf" <<CONF
[DEFAULT]
log_file = $work/tempest.log

[auth]
use_dynamic_credentials = true
admin_username = $(field 'admin["user"]')
admin_password = $(field 'admin["password"]')
admin_project_name = $(field 'admin["project"]')
admin_domain_name = Default
create_isolated_networks = false

[identity]
uri_v3 = $(field 'auth_url')
auth_version = v3
region = RegionOne

[identity-feature-enabled]
api_v2 = false

[service_available]
cinder = true
nova = false
glance = false
neutron = ${TEMPEST_NEUTRON:-false}
swift = false

[volume]
catalog_type = block-storage
build_timeout = 120
build_interval = 1
min_microversion = 3.0
max_microversion = 3.71

[volume-feature-enabled]
backup = true
snapshot = true
concurrency_tests = true

[enforce_scope]
cinder = true
CONF

stamp "running tempest"
status=0
(cd "$work/ws" && "$tvenv/bin/tempest" run --regex "$tests" \
    --exclude-list "$repo/tests/tempest/exclude.txt" \
    --concurrency "${TEMPEST_CONCURRENCY:-2}") >"$work/tempest.out" 2>&1 || status=$?
grep -E '^\{[0-9]+\} .*(FAILED|SKIPPED)' "$work/tempest.out" | sed -E 's/\[[^]]*\]//' || true
sed -n '/^Totals$/,/^Sum of execute time/p' "$work/tempest.out"
count() { sed -n "s/^ - $1: \([0-9]*\).*/\1/p" "$work/tempest.out" | head -n1; }
echo "tempest: $(count Passed) passed, $(count Skipped) skipped, $(count Failed) failed (log: $work/tempest.out)"
if ((status != 0)); then
    grep -B2 -A40 '^Captured traceback' "$work/tempest.out" | head -200 >&2 || true
    die "tempest failed (exit $status)"
fi
