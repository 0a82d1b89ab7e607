#!/usr/bin/env bash
# scripts/keystone.sh - a real Keystone (from PyPI) on 127.0.0.1 for the vbs client tests.
#
#   scripts/keystone.sh start DIR         install (cached), configure, bootstrap, serve, seed
#   scripts/keystone.sh endpoint DIR URL  point the block-storage + volumev3 endpoints at URL
#   scripts/keystone.sh object-store DIR URL
#                                         point the object-store endpoint at URL (a template:
#                                         http://HOST:PORT/v1/AUTH_%(project_id)s)
#   scripts/keystone.sh vbs-config DIR FILE
#                                         write vbs's [keystone] section (the service
#                                         user's credentials) to FILE, mode 600
#   scripts/keystone.sh stop DIR          stop the server started in DIR
#
# start: SQLite database and fernet keys under DIR, gunicorn on 127.0.0.1:$KEYSTONE_PORT
# (default 5000), then seeds a `vbs` user with the `service` role in project `service`,
# projects `alpha` (user alice) and `beta` (user bob) with the member role, and - when
# VBS_URL is set - block-storage/volumev3 public endpoints at $VBS_URL/v3/%(project_id)s.
# Everything a client needs (auth_url, users, passwords, project ids) is written to
# DIR/seed.json; the admin is the bootstrap user `admin` in project `admin`.
#
# Env: KEYSTONE_PORT (5000), KEYSTONE_VENV (<repo>/.venv-keystone), PYTHON (python3),
#      VBS_URL (no endpoints at start when empty), KEYSTONE_WORKERS (2; its SQLite
#      database refuses a write that meets another process's, so a client that writes
#      much at once, as tempest creating and deleting projects in parallel does, wants 1).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
helpers="$repo/scripts/keystone"
kvenv=${KEYSTONE_VENV:-$repo/.venv-keystone}
packages=(keystone==30.0.0 gunicorn==27.0.1)
# keystone-manage and the workers print an Eventlet deprecation warning per import.
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}

die() { echo "keystone.sh: $*" >&2; exit 1; }

install_keystone() {
    local want stamp="$kvenv/.packages"
    want=$( { "${PYTHON:-python3}" -c 'import sys; print(sys.version)'; printf '%s\n' "${packages[@]}"; } | sha256sum | cut -d' ' -f1)
    if [[ -x "$kvenv/bin/gunicorn" && -x "$kvenv/bin/keystone-manage" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    echo "keystone.sh: installing ${packages[*]} into $kvenv" >&2
    [[ -x "$kvenv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$kvenv"
    "$kvenv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}"
    echo "$want" >"$stamp"
}

running() { [[ -f "$1/gunicorn.pid" ]] && kill -0 "$(cat "$1/gunicorn.pid")" 2>/dev/null; }

write_config() {
    local dir=$1
    cat >"$dir/keystone.conf" <<CONF
[DEFAULT]
log_file = $dir/keystone.log

[database]
connection = sqlite:///$dir/keystone.db

[token]
provider = fernet

[fernet_tokens]
key_repository = $dir/fernet-keys

[fernet_receipts]
key_repository = $dir/fernet-keys

[credential]
key_repository = $dir/credential-keys

[identity]
password_hash_rounds = 4
CONF
}

wait_ready() {
    local url=$1 dir=$2
    for _ in $(seq 1 120); do
        if "$kvenv/bin/python" - "$url" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
        running "$dir" || die "gunicorn exited; see $dir/gunicorn.log"
        sleep 0.5
    done
    die "keystone did not answer on $url within 60 s; see $dir/gunicorn.log"
}

start() {
    local dir port auth_url admin_pw
    dir=$(mkdir -p "$1" && cd "$1" && pwd)
    port=${KEYSTONE_PORT:-5000}
    auth_url="http://127.0.0.1:$port/v3"
    running "$dir" && die "already running in $dir (pid $(cat "$dir/gunicorn.pid"))"
    install_keystone
    local manage=("$kvenv/bin/keystone-manage" --config-file "$dir/keystone.conf")

    if [[ ! -f "$dir/.bootstrapped" ]]; then
        write_config "$dir"
        mkdir -p "$dir/fernet-keys" "$dir/credential-keys"
        "${manage[@]}" db_sync
        "${manage[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
        "${manage[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
        admin_pw=$("$kvenv/bin/python" -c 'import secrets; print(secrets.token_hex(12))')
        "${manage[@]}" bootstrap --bootstrap-password "$admin_pw" \
            --bootstrap-region-id RegionOne --bootstrap-public-url "$auth_url/"
        echo "$admin_pw" >"$dir/admin-password"
    fi

    OS_KEYSTONE_CONFIG_FILES="$dir/keystone.conf" "$kvenv/bin/gunicorn" \
        --bind "127.0.0.1:$port" --workers "${KEYSTONE_WORKERS:-2}" --timeout 120 \
        --pythonpath "$helpers" --chdir "$dir" \
        --pid "$dir/gunicorn.pid" --daemon --log-file "$dir/gunicorn.log" \
        wsgi:application
    for _ in $(seq 1 40); do [[ -s "$dir/gunicorn.pid" ]] && break; sleep 0.25; done
    wait_ready "$auth_url" "$dir"

    if [[ ! -f "$dir/.bootstrapped" ]]; then
        KEYSTONE_AUTH_URL=$auth_url KEYSTONE_ADMIN_PASSWORD=$(cat "$dir/admin-password") \
            "$kvenv/bin/python" "$helpers/seed.py" init "$dir" "${VBS_URL:-}"
        touch "$dir/.bootstrapped"
    elif [[ -n "${VBS_URL:-}" ]]; then
        "$kvenv/bin/python" "$helpers/seed.py" endpoint "$dir" "$VBS_URL"
    fi
    echo "keystone listening on $auth_url (state in $dir/seed.json)"
}

endpoint() { # endpoint|object-store DIR URL
    local what=$1 dir=$2 url=$3
    running "$dir" || die "not running in $dir"
    "$kvenv/bin/python" "$helpers/seed.py" "$what" "$dir" "$url"
}

vbs_config() { # vbs-config DIR FILE: vbs's [keystone] section, the service user's credentials
    local seed=$1/seed.json file=$2
    [[ -f "$seed" ]] || die "no $seed (start first)"
    field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))' "$seed" "$1"; }
    (umask 077 && cat >"$file" <<CONF
[keystone]
auth_url = "$(field 'auth_url')"
username = "$(field 'service["user"]')"
password = "$(field 'service["password"]')"
project_name = "$(field 'service["project"]')"
CONF
    )
}

stop() {
    local dir=$1 pid
    [[ -f "$dir/gunicorn.pid" ]] || { echo "keystone.sh: nothing running in $dir" >&2; return 0; }
    pid=$(cat "$dir/gunicorn.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$dir/gunicorn.pid"
}

case "${1:-}" in
    start) [[ $# -eq 2 ]] || die "usage: $0 start DIR"; start "$2" ;;
    endpoint|object-store) [[ $# -eq 3 ]] || die "usage: $0 $1 DIR URL"; endpoint "$1" "$2" "$3" ;;
    vbs-config) [[ $# -eq 3 ]] || die "usage: $0 vbs-config DIR FILE"; vbs_config "$2" "$3" ;;
    stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 start DIR | endpoint DIR URL | object-store DIR URL | vbs-config DIR FILE | stop DIR" ;;
esac
