#!/usr/bin/env bash
# scripts/fuzz.sh - generated bad input against the running server: schemathesis (PyPI)
# reads the server's own /openapi.json and sends every operation valid and invalid data
# (negative mode included), once on a noauth server and once on a keystone server with a
# real Keystone (scripts/keystone.sh). Every run starts from a server seeded with a real
# volume, snapshot, backup, backup policy and share, whose ids are the path parameters of
# half the runs (the other half fuzzes ids too), so that requests reach past "not found".
#
# Checks: no 5xx (not_a_server_error), every response matches the documented schema,
# status code and content type, and every answer comes within 5 s (a hang fails the run).
# One schemathesis worker: with two threads, CPython 3.11's ast.parse (which hypothesis
# calls to describe its filters) fails now and then with "AST constructor recursion depth
# mismatch", an error of the fuzzer, not of the server.
# Prints each run's test cases and failures, and the total; exits non-zero on any failure
# or when fewer than FUZZ_MIN_REQUESTS (10000) requests were sent in all.
#
#   scripts/fuzz.sh [WORKDIR]
#
# Env: VBS_BIN (target/debug/vbs), FUZZ_EXAMPLES (max examples per operation and run, 25),
#      FUZZ_SEED (20261204), FUZZ_MODES ("noauth keystone"), FUZZ_MIN_REQUESTS (10000).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/pinned-venv.sh
source "$repo/scripts/lib/pinned-venv.sh"
fvenv=$repo/.venv-fuzz
packages=(schemathesis==4.32.5)
vbs_bin=${VBS_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/vbs}
work=${1:-$(mktemp -d /tmp/vbs-fuzz.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
examples=${FUZZ_EXAMPLES:-25}
seed=${FUZZ_SEED:-20261204}
modes=${FUZZ_MODES:-noauth keystone}
min_requests=${FUZZ_MIN_REQUESTS:-10000}
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::DeprecationWarning}

die() { echo "fuzz.sh: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
stamp() { echo "[fuzz.sh $(date +%T)] $*"; }


vbs_pid=
keystone_dir=
stop_vbs() {
    if [[ -n "$vbs_pid" ]] && kill -0 "$vbs_pid" 2>/dev/null; then
        kill -TERM "$vbs_pid"; wait "$vbs_pid" 2>/dev/null || true
    fi
    vbs_pid=
}
cleanup() {
    stop_vbs
    [[ -z "$keystone_dir" ]] || "$repo/scripts/keystone.sh" stop "$keystone_dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# start_vbs DIR ARGS...: vbs serve on a free port with its data in DIR; sets $base.
start_vbs() {
    local dir=$1 port
    shift
    port=$(free_port)
    rm -rf "$dir"; mkdir -p "$dir/data"
    "$vbs_bin" serve --listen "127.0.0.1:$port" --data-dir "$dir/data" "$@" >"$dir/vbs.out" 2>"$dir/vbs.log" &
    vbs_pid=$!
    for _ in $(seq 1 100); do grep -q '^listening on' "$dir/vbs.out" 2>/dev/null && break; sleep 0.2; done
    grep -q '^listening on' "$dir/vbs.out" || { tail -20 "$dir/vbs.log" >&2; die "vbs did not start"; }
    base="http://127.0.0.1:$port"
}

# run_mode NAME TOKEN PROJECT: seeds resources, then two schemathesis runs.
run_mode() {
    local name=$1 token=$2 project=$3 dir=$work/$1
    local ids
    ids=$("$fvenv/bin/python" "$repo/tests/fuzz/seed.py" "$base" "$token" "$project") \
        || die "$name: seeding failed"
    stamp "$name: seeded $ids"
    local params="\"path.project_id\" = \"$project\""
    local fixed="$params"
    local k v
    for kv in $ids; do
        k=${kv%%=*}; v=${kv#*=}
        fixed+=$'\n'"\"path.$k\" = \"$v\""
    done
    printf '[parameters]\n%s\n' "$params" >"$dir/random-ids.toml"
    printf '[parameters]\n%s\n' "$fixed" >"$dir/seeded-ids.toml"
    for ids_kind in random-ids seeded-ids; do
        local out=$dir/$ids_kind
        # With the seeded ids, what deletes them would leave the rest of the run nothing to
        # reach; the random-ids run covers those operations.
        local only=()
        [[ $ids_kind == random-ids ]] || only=(--exclude-method DELETE
            --exclude-operation-id-regex '^(deleteCloudBackup|backupAction.*|volumeAction.*)$')
        stamp "$name: schemathesis, $ids_kind"
        set +e
        "$fvenv/bin/schemathesis" --config-file "$dir/$ids_kind.toml" run "$base/openapi.json" \
            -H "X-Auth-Token: $token" \
            --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
            "${only[@]}" --mode all --max-examples "$examples" --seed "$seed" --workers 1 \
            --request-timeout 10 --max-response-time 5 --suppress-health-check all \
            --no-color --report ndjson --report-ndjson-path "$out.ndjson" >"$out.log" 2>&1
        local rc=$?
        set -e
        local cases failures
        cases=$(grep -Eo '[0-9]+ generated' "$out.log" | tail -1 | cut -d' ' -f1 || true)
        failures=$(grep -Eo '[0-9]+ found [0-9]+ unique failures' "$out.log" | tail -1 | awk '{print $3}' || true)
        cases=${cases:-0}; failures=${failures:-0}
        echo "fuzz: $name $ids_kind: $cases test cases, $failures failures (exit $rc)"
        total=$((total + cases))
        if [[ $rc -ne 0 ]]; then
            sed -n '/FAILURES\|ERRORS/,$p' "$out.log" | head -150 >&2
            failed=1
        fi
    done
    if grep -q ' panicked at ' "$dir/vbs.log"; then
        grep -A3 ' panicked at ' "$dir/vbs.log" >&2
        failed=1
    fi
}

[[ -x "$vbs_bin" ]] || die "no vbs binary at $vbs_bin (cargo build, or set VBS_BIN)"
pinned_venv "$fvenv" schemathesis "${packages[@]}"
total=0
failed=0

for mode in $modes; do
    case $mode in
    noauth)
        mkdir -p "$work/noauth"
        start_vbs "$work/noauth" --auth noauth
        project=f0220000000000000000000000000001
        run_mode noauth "admin:$project" "$project"
        stop_vbs
        ;;
    keystone)
        keystone_dir=$work/keystone-server
        rm -rf "$keystone_dir"
        KEYSTONE_WORKERS=1 KEYSTONE_PORT=$(free_port) "$repo/scripts/keystone.sh" start "$keystone_dir" \
            >"$work/keystone.out" 2>&1 || { cat "$work/keystone.out" >&2; die "keystone did not start"; }
        seedfile=$keystone_dir/seed.json
        "$repo/scripts/keystone.sh" vbs-config "$keystone_dir" "$work/vbs-keystone.toml"
        start_vbs "$work/keystone" --auth keystone --config "$work/vbs-keystone.toml"
        read -r token project < <("$fvenv/bin/python" "$repo/tests/fuzz/seed.py" --keystone-token "$seedfile")
        run_mode keystone "$token" "$project"
        stop_vbs
        ;;
    *) die "unknown mode $mode" ;;
    esac
done

echo "fuzz: total $total test cases (requests), failures: $([[ $failed -eq 0 ]] && echo 0 || echo 'see above')"
[[ $failed -eq 0 ]] || exit 1
[[ $total -ge $min_requests ]] || die "only $total requests were sent; at least $min_requests are asked for"
