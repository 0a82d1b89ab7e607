#!/usr/bin/env bash
# scripts/venv.sh - create (or refresh) .venv at the repository root with the Python
# packages of tests/clients/requirements.txt: the real OpenStack clients plus pytest.
#
# Idempotent: a stamp inside .venv records the hash of the requirements file (and of
# the interpreter); when it matches, nothing is installed. Prints the venv path.
#
# Env: PYTHON (default python3) - interpreter used to create the venv.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
req="$repo/tests/clients/requirements.txt"
py=${PYTHON:-python3}

want=$( { "$py" -c 'import sys; print(sys.version)'; cat "$req"; } | sha256sum | cut -d' ' -f1)
stamp="$venv/.requirements.sha256"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$venv/bin/python" -c 'import openstack, cinderclient, openstackclient, pytest, requests' 2>/dev/null; then
    echo "$venv (up to date)"
    exit 0
fi

[[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" >"$stamp"
echo "$venv"
