# Sourced by the scripts that run a Python tool from PyPI (tempest.sh, fuzz.sh).
#
# pinned_venv DIR TOOL PACKAGE...: a venv in DIR holding these pinned packages, made or
# updated only when the list or the Python changed since the last install (a stamp in
# DIR says which), so that a second run starts at once. TOOL is a program the venv's
# bin/ must hold.
pinned_venv() {
    local dir=$1 tool=$2
    shift 2
    local want stamp="$dir/.packages"
    want=$( { python3 -c 'import sys; print(sys.version)'; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1)
    if [[ -x "$dir/bin/$tool" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    echo "[$(basename "$0") $(date +%T)] installing $* into $dir"
    [[ -x "$dir/bin/python" ]] || python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    echo "$want" >"$stamp"
}
