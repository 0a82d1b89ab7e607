#!/usr/bin/env bash
# scripts/test.sh - the whole test suite, as CI runs it:
#   1. cargo test: unit tests and the end-to-end tests of the real binary, each on SQLite
#      and on PostgreSQL (127.0.0.1:5432, trust auth; VBS_TEST_POSTGRES overrides); the
#      repository's Swift and S3 tests on the Swift all-in-one that scripts/swift-aio.sh
#      starts here (127.0.0.1:8080; VBS_TEST_SWIFT overrides);
#   2. the real-client suite (openstack, cinder, openstacksdk, a real Keystone) in a venv
#      that scripts/venv.sh creates, against the binary cargo test just built;
#   3. schemathesis against the server's /openapi.json, noauth and keystone, every
#      operation with valid and invalid data (scripts/fuzz.sh), which prints its counts;
#   4. OpenStack's tempest volume-backup tests and cinder-tempest-plugin's (RBAC personas
#      included) against that binary in keystone mode (scripts/tempest.sh), which prints
#      tempest's passed/skipped/failed counts.
# Nothing is skipped: a missing PostgreSQL or a Swift that does not come up fails the run.
# Each stage prints its time.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }

# Idempotent: keeps a Swift that already runs, starts what is missing, waits until it
# authenticates, and exits non-zero if it does not come up.
scripts/swift-aio.sh start || { echo "Swift did not come up (scripts/swift-aio.sh start)" >&2; exit 1; }

stage() { # stage NAME COMMAND...: runs it, then prints how long it took
    local name=$1 t0=$SECONDS
    shift
    "$@"
    echo "stage $name: $((SECONDS - t0)) s"
}

stage cargo-test cargo test --workspace --locked

export VBS_BIN="${VBS_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/vbs}"
stage client-venv scripts/venv.sh
stage client-tests .venv/bin/python -m pytest tests/clients -q -p no:cacheprovider
stage fuzz scripts/fuzz.sh
stage tempest scripts/tempest.sh
