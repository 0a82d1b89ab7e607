#!/usr/bin/env bash
# scripts/swift-aio.sh - a real OpenStack Swift all-in-one on 127.0.0.1, from Debian's
# packages, for vbs's repository tests (crates/repository/tests) and for trying vbs
# against Swift or S3 by hand.
#
# One storage device (a directory, or a loop-mounted XFS image when the directory has
# no user xattrs), rings with 1 replica, tempauth, and the s3api middleware, so the same
# cluster speaks the Swift API and S3 (SigV4; path style, and virtual-hosted style under
# s3.vbs.test).
#
#   scripts/swift-aio.sh install   apt-get the Debian packages that are missing (root)
#   scripts/swift-aio.sh start     idempotent: writes what is missing, starts what is not
#                                  running, waits until the proxy authenticates; exits
#                                  non-zero when Swift does not come up
#   scripts/swift-aio.sh stop      stops the processes it started (recorded PIDs, their groups)
#   scripts/swift-aio.sh restart
#   scripts/swift-aio.sh status    exit 0 when every process runs and the proxy authenticates
#   scripts/swift-aio.sh env       export lines for swift/python-swiftclient and S3 clients
#   scripts/swift-aio.sh wipe      stop, then delete the whole state directory
#   scripts/swift-aio.sh keystone-proxy start|stop
#                                  a second proxy on the same cluster whose users are a
#                                  Keystone's (authtoken + keystoneauth): the settings
#                                  SWIFT_AIO_KEYSTONE_* below; 'start' waits for its healthcheck
#
# No systemd, no swift-init, nothing under /etc is written but one /etc/hosts line (as
# root, for the virtual-hosted test bucket, see virtual_host_name): every config, ring, object,
# PID file and log lives under $SWIFT_AIO_DIR. The servers import Debian's python3-swift;
# a small launcher points Swift at $SWIFT_AIO_DIR/etc/swift.conf (Swift 2.30 hard-codes
# /etc/swift/swift.conf for the hash prefix/suffix and the storage policies).
#
# Settings (environment):
#   SWIFT_AIO_DIR             state directory                 (default /tmp/vbs-swift)
#   SWIFT_AIO_PROXY_PORT      proxy (Swift + S3 + auth)       (default 8080)
#   SWIFT_AIO_OBJECT_PORT     object server                   (default 6200)
#   SWIFT_AIO_CONTAINER_PORT  container server                (default 6201)
#   SWIFT_AIO_ACCOUNT_PORT    account server                  (default 6202)
#   SWIFT_AIO_MEMCACHED_PORT  private memcached (tempauth tokens, info cache) (default 11211)
#   SWIFT_AIO_PROXY_WORKERS   proxy worker processes          (default 2)
#   SWIFT_AIO_OBJECT_WORKERS  object server worker processes  (default 2)
#   SWIFT_AIO_PART_POWER      ring partition power            (default 8)
#   SWIFT_AIO_STORAGE         auto | dir | loop               (default auto: dir if user xattrs work, else loop)
#   SWIFT_AIO_LOOP_SIZE       size of the sparse XFS image for 'loop' (default 8G)
#   SWIFT_AIO_START_TIMEOUT   seconds to wait for readiness   (default 60)
#   SWIFT_AIO_INSTALL         1 = start may apt-get missing packages (default 1 when root)
#   SWIFT_AIO_KEYSTONE_PROXY_PORT  the Keystone-auth proxy          (default 8081)
#   SWIFT_AIO_KEYSTONE_AUTH_URL    its Keystone, e.g. http://127.0.0.1:5000/v3 (required)
#   SWIFT_AIO_KEYSTONE_USER, SWIFT_AIO_KEYSTONE_PASSWORD, SWIFT_AIO_KEYSTONE_PROJECT
#                                  the service user that validates tokens (project
#                                  default "service", domains "default"); required
#
# Accounts (tempauth):  test:tester/testing (.admin)   test:tester3/testing3 (no admin)
#                       test2:tester2/testing2 (.admin) admin:admin/admin (.reseller_admin)
# S3 credentials are the same pairs: access key "test:tester", secret "testing", region us-east-1.
# Keystone-auth proxy: a Keystone user with the member or admin role in a project owns the
# account AUTH_<project id> (keystoneauth's operator_roles).
set -euo pipefail

DIR=${SWIFT_AIO_DIR:-/tmp/vbs-swift}
PROXY_PORT=${SWIFT_AIO_PROXY_PORT:-8080}
OBJECT_PORT=${SWIFT_AIO_OBJECT_PORT:-6200}
CONTAINER_PORT=${SWIFT_AIO_CONTAINER_PORT:-6201}
ACCOUNT_PORT=${SWIFT_AIO_ACCOUNT_PORT:-6202}
MEMCACHED_PORT=${SWIFT_AIO_MEMCACHED_PORT:-11211}
PROXY_WORKERS=${SWIFT_AIO_PROXY_WORKERS:-2}
OBJECT_WORKERS=${SWIFT_AIO_OBJECT_WORKERS:-2}
KEYSTONE_PROXY_PORT=${SWIFT_AIO_KEYSTONE_PROXY_PORT:-8081}
PART_POWER=${SWIFT_AIO_PART_POWER:-8}
STORAGE=${SWIFT_AIO_STORAGE:-auto}
LOOP_SIZE=${SWIFT_AIO_LOOP_SIZE:-8G}
START_TIMEOUT=${SWIFT_AIO_START_TIMEOUT:-60}
IP=127.0.0.1
S3_DOMAIN=s3.vbs.test        # the tests name it too (crates/repository/tests/conformance.rs)
S3_VIRTUAL_BUCKET=vbs-virtual
PY=/usr/bin/python3            # Debian's python: the one that has python3-swift (not pyenv's)
DEV=d1
PACKAGES="swift swift-proxy swift-object swift-container swift-account python3-swiftclient python3-keystonemiddleware memcached xfsprogs curl"

# state layout
ETC=$DIR/etc; SRV=$DIR/srv; RUN=$DIR/run; LOG=$DIR/log; CACHE=$DIR/cache; BIN=$DIR/bin
IMG=$DIR/disk.img

# process order: start left to right, stop right to left
SERVICES="memcached account container object proxy object-updater container-updater"

log() { printf '[swift-aio] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

abs_dir() { # make DIR absolute: it is matched against /proc/PID/environ
  case $DIR in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
  DIR=${DIR%/}
  ETC=$DIR/etc; SRV=$DIR/srv; RUN=$DIR/run; LOG=$DIR/log; CACHE=$DIR/cache; BIN=$DIR/bin; IMG=$DIR/disk.img
}

# ---------------------------------------------------------------- packages
missing_packages() {
  local p miss=""
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || miss="$miss $p"
  done
  echo "$miss"
}

cmd_install() {
  local miss; miss=$(missing_packages)
  [ -z "$miss" ] && { log "packages present"; return 0; }
  [ "$(id -u)" = 0 ] || die "missing packages:$miss (run as root: apt-get install -y --no-install-recommends$miss)"
  log "installing:$miss"
  # Debian's postinst scripts start the swift-* and memcached init scripts on the
  # default ports (8080, 6200-6202, 11211), which would collide with ours. A policy-rc.d
  # that exits 101 forbids that; it is put in place for this transaction only, and a
  # policy-rc.d that was there before is put back afterwards.
  local policy=/usr/sbin/policy-rc.d saved=""
  if [ -e "$policy" ]; then saved=$(mktemp); cp -p "$policy" "$saved"; fi
  printf '#!/bin/sh\n# temporary, from vbs scripts/swift-aio.sh install\nexit 101\n' > "$policy"
  chmod +x "$policy"
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $miss >&2 || {
    log "apt-get install failed; trying apt-get update first"
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $miss >&2; } || rc=$?
  }
  if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
  [ $rc = 0 ] || die "apt-get install failed ($rc)"
  miss=$(missing_packages)
  [ -z "$miss" ] || die "still missing after apt-get install:$miss"
  return 0
}

# ---------------------------------------------------------------- processes
pidfile() { echo "$RUN/$1.pid"; }

# A PID from a pid file counts as ours only if that process still carries our
# instance marker in its environment (PIDs get reused).
is_ours() {
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] || return 1
  { tr '\0' '\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qxF "SWIFT_AIO_INSTANCE=$DIR"
}

running_pid() { # prints the PID if service $1 runs, else nothing
  local f; f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  local pid; pid=$(cat "$f")
  if is_ours "$pid"; then echo "$pid"; return 0; fi
  rm -f "$f"; return 1
}

port_busy() { # true if something listens on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/$IP/$1") 2>/dev/null
}

service_port() {
  case $1 in
    memcached) echo "$MEMCACHED_PORT" ;; account) echo "$ACCOUNT_PORT" ;;
    container) echo "$CONTAINER_PORT" ;; object) echo "$OBJECT_PORT" ;;
    proxy) echo "$PROXY_PORT" ;; proxy-keystone) echo "$KEYSTONE_PROXY_PORT" ;; *) echo "" ;;
  esac
}

service_cmd() { # the argv of service $1
  case $1 in
    memcached)
      # -u is mandatory when root; -U 0 disables UDP; small memory is plenty here
      echo "/usr/bin/memcached -l $IP -p $MEMCACHED_PORT -U 0 -m 64 -c 1024 -u $(id -un)" ;;
    account)   echo "$PY $BIN/aio-launch.py $ETC /usr/bin/swift-account-server $ETC/account-server.conf -v" ;;
    container) echo "$PY $BIN/aio-launch.py $ETC /usr/bin/swift-container-server $ETC/container-server.conf -v" ;;
    object)    echo "$PY $BIN/aio-launch.py $ETC /usr/bin/swift-object-server $ETC/object-server.conf -v" ;;
    proxy)     echo "$PY $BIN/aio-launch.py $ETC /usr/bin/swift-proxy-server $ETC/proxy-server.conf -v" ;;
    proxy-keystone) echo "$PY $BIN/aio-launch.py $ETC /usr/bin/swift-proxy-server $ETC/proxy-keystone.conf -v" ;;
    object-updater)    echo "$PY $BIN/aio-launch.py $ETC /usr/bin/swift-object-updater $ETC/object-server.conf -v" ;;
    container-updater) echo "$PY $BIN/aio-launch.py $ETC /usr/bin/swift-container-updater $ETC/container-server.conf -v" ;;
  esac
}

start_service() {
  local name=$1 pid port
  if pid=$(running_pid "$name"); then log "$name already running (pid $pid)"; return 0; fi
  port=$(service_port "$name")
  if [ -n "$port" ] && port_busy "$port"; then
    die "port $IP:$port for $name is taken by a process this instance did not start (set SWIFT_AIO_*_PORT or stop it)"
  fi
  # The launcher makes the process its own session/process-group leader without
  # forking, so $! is the server itself and stop can signal its whole group
  # (the proxy/object servers fork workers).
  # fd 9 (the start/stop lock) must not leak into the servers, or they would hold the lock.
  # shellcheck disable=SC2046
  (
    export SWIFT_AIO_INSTANCE=$DIR
    exec "$PY" -c 'import os, sys
try:
    os.setsid()
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])' $(service_cmd "$name")
  ) >>"$LOG/$name.log" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" > "$(pidfile "$name")"
  log "started $name (pid $pid)"
}

group_alive() { # any non-zombie process left in process group $1? (kill -0 also
  # succeeds on zombies, and an orphan stays a zombie until PID 1 reaps it)
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

stop_service() {
  local name=$1 pid
  pid=$(running_pid "$name") || { rm -f "$(pidfile "$name")"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    group_alive "$pid" || break
    sleep 0.1
  done
  if group_alive "$pid"; then
    log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL to its process group"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(pidfile "$name")"
  log "stopped $name (pid $pid)"
}

# ---------------------------------------------------------------- storage
xattr_ok() { # user xattrs of Swift's size on directory $1?
  "$PY" - "$1" <<'EOF' 2>/dev/null
import os, sys, tempfile
d = sys.argv[1]
fd, p = tempfile.mkstemp(dir=d)
try:
    os.setxattr(p, 'user.swift.metadata', b'x' * 2000)
    assert os.getxattr(p, 'user.swift.metadata') == b'x' * 2000
finally:
    os.close(fd); os.unlink(p)
EOF
}

setup_storage() {
  mkdir -p "$SRV/$DEV"
  local mode=$STORAGE
  if [ "$mode" = auto ]; then
    if [ -f "$IMG" ]; then mode=loop          # keep using an image made earlier
    elif xattr_ok "$SRV/$DEV"; then mode=dir
    else mode=loop; log "no user xattrs on $(df --output=fstype "$SRV" | tail -1) at $SRV: using a loop-mounted XFS image"
    fi
  fi
  case $mode in
    dir) xattr_ok "$SRV/$DEV" || die "$SRV/$DEV has no user xattr support; use SWIFT_AIO_STORAGE=loop" ;;
    loop)
      if ! mountpoint -q "$SRV/$DEV"; then
        [ "$(id -u)" = 0 ] || die "a loop mount needs root"
        if [ ! -f "$IMG" ]; then
          truncate -s "$LOOP_SIZE" "$IMG"
          if command -v mkfs.xfs >/dev/null; then mkfs.xfs -q -f "$IMG"; else mkfs.ext4 -q -F "$IMG"; fi
        fi
        mount -o loop,noatime "$IMG" "$SRV/$DEV" || die "mount -o loop $IMG failed (no loop devices in this container?)"
        touch "$RUN/loop.mounted"
      fi
      xattr_ok "$SRV/$DEV" || die "the loop filesystem has no user xattrs either"
      ;;
    *) die "SWIFT_AIO_STORAGE must be auto, dir or loop" ;;
  esac
  echo "$mode" > "$RUN/storage.mode"
}

# ---------------------------------------------------------------- configs
write_if_changed() { # write stdin to $1 only when the content differs
  local tmp; tmp=$(mktemp "$1.XXXX")
  cat > "$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

# The sections both proxies share: the app and the filters of their common pipeline.
proxy_common() {
  cat <<EOF
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
# 1 MiB chunks between client, proxy and object server (default 64 KiB), as above.
client_chunk_size = 1048576
object_chunk_size = 1048576
allow_account_management = true

[filter:cache]
use = egg:swift#memcache
memcache_servers = $IP:$MEMCACHED_PORT

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats
EOF
}

write_configs() {
  local user; user=$(id -un)
  mkdir -p "$ETC" "$SRV" "$RUN" "$LOG" "$CACHE" "$BIN"

  write_if_changed "$BIN/aio-launch.py" <<'EOF'
# Runs one Debian Swift program with swift.conf read from SWIFT_DIR instead of
# /etc/swift (Swift 2.30 hard-codes /etc/swift/swift.conf: hash prefix/suffix,
# storage policies, constraints).  usage: aio-launch.py SWIFT_DIR PROGRAM ARGS...
import os
import runpy
import sys

swift_dir = sys.argv[1]
import swift.common.utils as utils
utils.SWIFT_CONF_FILE = os.path.join(swift_dir, 'swift.conf')
utils.HASH_PATH_PREFIX = utils.HASH_PATH_SUFFIX = b''
from swift.common import constraints, storage_policy
constraints.reload_constraints()
storage_policy.reload_storage_policies()
prog = sys.argv[2]
sys.argv = sys.argv[2:]
runpy.run_path(prog, run_name='__main__')
EOF

  write_if_changed "$ETC/swift.conf" <<EOF
[swift-hash]
swift_hash_path_prefix = aio-prefix
swift_hash_path_suffix = aio-suffix

[storage-policy:0]
name = Policy-0
default = yes

[swift-constraints]
EOF

  local common="bind_ip = $IP
user = $user
swift_dir = $ETC
devices = $SRV
mount_check = false
recon_cache_path = $CACHE
log_level = INFO
log_name = %s"

  write_if_changed "$ETC/object-server.conf" <<EOF
[DEFAULT]
$(printf "$common" object-server)
bind_port = $OBJECT_PORT
workers = $OBJECT_WORKERS

[pipeline:main]
pipeline = healthcheck recon object-server

[app:object-server]
use = egg:swift#object
# 1 MiB instead of 64 KiB per read from the socket and per write to disk: vbs moves
# 4 MiB packs, and Python's per-chunk cost dominated a loopback transfer.
network_chunk_size = 1048576
disk_chunk_size = 1048576

[filter:recon]
use = egg:swift#recon

[filter:healthcheck]
use = egg:swift#healthcheck

[object-replicator]
[object-reconstructor]
[object-auditor]

[object-updater]
# replays container-listing updates that timed out during a PUT (async_pending)
interval = 10
concurrency = 1
EOF

  write_if_changed "$ETC/container-server.conf" <<EOF
[DEFAULT]
$(printf "$common" container-server)
bind_port = $CONTAINER_PORT
workers = 1

[pipeline:main]
pipeline = healthcheck recon container-server

[app:container-server]
use = egg:swift#container
allow_versions = true

[filter:recon]
use = egg:swift#recon

[filter:healthcheck]
use = egg:swift#healthcheck

[container-replicator]
[container-auditor]
[container-sync]
[container-sharder]

[container-updater]
# pushes object counts/bytes up to the account listing. Nothing here reads those
# figures, and a sweep costs about a second of Python per container ever made (tests
# make many): every 30 s that kept one of the two cores busy all the time.
interval = 3600
concurrency = 1
EOF

  write_if_changed "$ETC/account-server.conf" <<EOF
[DEFAULT]
$(printf "$common" account-server)
bind_port = $ACCOUNT_PORT
workers = 1

[pipeline:main]
pipeline = healthcheck recon account-server

[app:account-server]
use = egg:swift#account

[filter:recon]
use = egg:swift#recon

[filter:healthcheck]
use = egg:swift#healthcheck

[account-replicator]
[account-auditor]
[account-reaper]
EOF

  write_if_changed "$ETC/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = $IP
bind_port = $PROXY_PORT
workers = $PROXY_WORKERS
user = $user
swift_dir = $ETC
log_level = INFO
log_name = proxy-server

[pipeline:main]
# s3api must sit right before the auth filter; slo must come after s3api
# (multipart uploads are stored as SLOs in "<bucket>+segments").
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl ratelimit s3api tempauth copy container-quotas account-quotas slo dlo versioned_writes symlink proxy-logging proxy-server

$(proxy_common)

[filter:tempauth]
use = egg:swift#tempauth
user_admin_admin = admin .admin .reseller_admin
user_test_tester = testing .admin
user_test_tester3 = testing3
user_test2_tester2 = testing2 .admin

[filter:s3api]
use = egg:swift#s3api
location = us-east-1
# Virtual-hosted style: BUCKET.$S3_DOMAIN names the bucket (the tests resolve
# $S3_VIRTUAL_BUCKET.$S3_DOMAIN through /etc/hosts); other hosts keep path style.
storage_domain = $S3_DOMAIN
# S3's own limit is 10000 parts; slo's max_manifest_segments must be at least as large
max_upload_part_num = 10000

[filter:bulk]
use = egg:swift#bulk

[filter:tempurl]
use = egg:swift#tempurl

[filter:ratelimit]
use = egg:swift#ratelimit

[filter:copy]
use = egg:swift#copy

[filter:container-quotas]
use = egg:swift#container_quotas

[filter:account-quotas]
use = egg:swift#account_quotas

[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true

[filter:symlink]
use = egg:swift#symlink
EOF
}

# ---------------------------------------------------------------- rings
build_rings() {
  local params="part_power=$PART_POWER replicas=1 ip=$IP object=$OBJECT_PORT container=$CONTAINER_PORT account=$ACCOUNT_PORT dev=$DEV"
  if [ -f "$ETC/ring.params" ] && [ "$(cat "$ETC/ring.params")" = "$params" ] \
     && [ -f "$ETC/object.ring.gz" ] && [ -f "$ETC/container.ring.gz" ] && [ -f "$ETC/account.ring.gz" ]; then
    return 0
  fi
  log "building rings ($params)"
  local kind port rc
  for kind in object container account; do
    case $kind in object) port=$OBJECT_PORT ;; container) port=$CONTAINER_PORT ;; account) port=$ACCOUNT_PORT ;; esac
    rm -f "$ETC/$kind.builder" "$ETC/$kind.ring.gz"
    swift-ring-builder "$ETC/$kind.builder" create "$PART_POWER" 1 1 >/dev/null
    swift-ring-builder "$ETC/$kind.builder" add "r1z1-$IP:$port/$DEV" 1 >/dev/null
    # exit status 1 is a warning (e.g. balance), 2 an error
    rc=0; swift-ring-builder "$ETC/$kind.builder" rebalance >/dev/null || rc=$?
    [ $rc -le 1 ] || die "swift-ring-builder $kind rebalance failed ($rc)"
    [ -f "$ETC/$kind.ring.gz" ] || die "no $kind.ring.gz written"
  done
  echo "$params" > "$ETC/ring.params"
}

# ---------------------------------------------------------------- readiness
http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$@" 2>/dev/null || true; }

auth_ok() {
  local code
  code=$(http_code -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' "http://$IP:$PROXY_PORT/auth/v1.0")
  [ "$code" = 200 ]
}

account_ok() { # token from tempauth (memcached) + HEAD on the account (account server)
  local hdrs token url code
  hdrs=$(curl -s -m 5 -D - -o /dev/null -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' \
         "http://$IP:$PROXY_PORT/auth/v1.0" 2>/dev/null | tr -d '\r') || return 1
  token=$(printf '%s\n' "$hdrs" | awk -F': ' 'tolower($1)=="x-auth-token"{print $2}')
  url=$(printf '%s\n' "$hdrs" | awk -F': ' 'tolower($1)=="x-storage-url"{print $2}')
  [ -n "$token" ] && [ -n "$url" ] || return 1
  code=$(http_code -I -H "X-Auth-Token: $token" "$url")
  [ "$code" = 204 ] || [ "$code" = 200 ]
}

wait_ready() {
  local deadline=$(( $(date +%s) + START_TIMEOUT )) port name
  for name in account container object proxy; do
    port=$(service_port "$name")
    until [ "$(http_code "http://$IP:$port/healthcheck")" = 200 ]; do
      running_pid "$name" >/dev/null || die "$name died during start; see $LOG/$name.log"
      [ "$(date +%s)" -lt "$deadline" ] || die "$name not healthy after ${START_TIMEOUT}s; see $LOG/$name.log"
      sleep 0.1
    done
  done
  until account_ok; do
    [ "$(date +%s)" -lt "$deadline" ] || die "proxy does not authenticate after ${START_TIMEOUT}s; see $LOG/proxy.log"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- commands
# The host name of the bucket the tests use in S3's virtual-hosted style: no resolver
# here knows wildcard names, so /etc/hosts gets one line for it (root only).
virtual_host_name() {
  local name="$S3_VIRTUAL_BUCKET.$S3_DOMAIN"
  getent hosts "$name" >/dev/null && return 0
  if [ "$(id -u)" = 0 ]; then
    printf '%s %s\n' "$IP" "$name" >> /etc/hosts
  else
    log "WARNING: $name does not resolve; as root: echo '$IP $name' >> /etc/hosts"
  fi
}

cmd_start() {
  local t0; t0=$(date +%s%N)
  local auto_install=0; [ "$(id -u)" = 0 ] && auto_install=1
  if [ "${SWIFT_AIO_INSTALL:-$auto_install}" = 1 ]; then cmd_install; fi
  local miss; miss=$(missing_packages)
  [ -z "$miss" ] || die "missing packages:$miss (run: $0 install)"
  mkdir -p "$DIR" "$RUN" "$LOG"
  # one start/stop at a time per state directory
  exec 9>"$RUN/lock"; flock -w 120 9 || die "another swift-aio.sh holds $RUN/lock"
  write_configs
  setup_storage
  build_rings
  virtual_host_name
  local s port
  # refuse before starting anything if a port we need is held by a foreign process
  for s in $SERVICES; do
    running_pid "$s" >/dev/null && continue
    port=$(service_port "$s")
    if [ -n "$port" ] && port_busy "$port"; then
      die "port $IP:$port for $s is taken by a process this instance did not start (set SWIFT_AIO_*_PORT or stop it)"
    fi
  done
  for s in $SERVICES; do start_service "$s"; done
  wait_ready
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  log "ready in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s: swift http://$IP:$PROXY_PORT/auth/v1.0 (test:tester/testing), s3 http://$IP:$PROXY_PORT (test:tester/testing, us-east-1, path style; virtual-hosted under $S3_DOMAIN)"
}

cmd_stop() {
  [ -d "$RUN" ] || { log "nothing to stop ($DIR has no run/)"; return 0; }
  exec 9>"$RUN/lock"; flock -w 120 9 || die "another swift-aio.sh holds $RUN/lock"
  local s rev=""
  for s in $SERVICES; do rev="$s $rev"; done
  rev="proxy-keystone $rev"
  for s in $rev; do stop_service "$s"; done
  if [ -f "$RUN/loop.mounted" ]; then
    umount "$SRV/$DEV" && rm -f "$RUN/loop.mounted" && log "unmounted $SRV/$DEV"
  fi
}

cmd_status() {
  local s pid rc=0 port health
  for s in $SERVICES; do
    port=$(service_port "$s")
    if pid=$(running_pid "$s"); then
      health=""
      [ -n "$port" ] && [ "$s" != memcached ] && health=" healthcheck=$(http_code "http://$IP:$port/healthcheck")"
      printf '%-18s running  pid %-7s %s%s\n' "$s" "$pid" "${port:+port $port}" "$health"
    else
      printf '%-18s stopped\n' "$s"; rc=3
    fi
  done
  if [ $rc = 0 ]; then
    if account_ok; then echo "auth: ok (test:tester)"; else echo "auth: FAILED"; rc=3; fi
  fi
  echo "state: $DIR  storage: $(cat "$RUN/storage.mode" 2>/dev/null || echo '?')"
  return $rc
}

cmd_env() {
  cat <<EOF
export ST_AUTH=http://$IP:$PROXY_PORT/auth/v1.0 ST_USER=test:tester ST_KEY=testing
export AWS_ACCESS_KEY_ID=test:tester AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://$IP:$PROXY_PORT
# Swift 2.30's s3api rejects aws-chunked bodies and trailing checksums that new AWS SDKs send by default:
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
EOF
}

# The Keystone-auth proxy: the same rings, servers and storage as the tempauth proxy,
# with authtoken (Debian's python3-keystonemiddleware) validating each token with the
# Keystone at SWIFT_AIO_KEYSTONE_AUTH_URL, and keystoneauth mapping a project to the
# account AUTH_<project id>. Its config holds the service password: mode 600.
cmd_keystone_proxy() {
  case ${1:-} in
    start)
      local url=${SWIFT_AIO_KEYSTONE_AUTH_URL:-} user=${SWIFT_AIO_KEYSTONE_USER:-}
      local password=${SWIFT_AIO_KEYSTONE_PASSWORD:-} project=${SWIFT_AIO_KEYSTONE_PROJECT:-service}
      [ -n "$url" ] && [ -n "$user" ] && [ -n "$password" ] \
        || die "keystone-proxy start needs SWIFT_AIO_KEYSTONE_AUTH_URL, _USER and _PASSWORD"
      running_pid proxy >/dev/null || die "Swift is not running here ($0 start first)"
      exec 9>"$RUN/lock"; flock -w 120 9 || die "another swift-aio.sh holds $RUN/lock"
      local user_name; user_name=$(id -un)
      (umask 077; write_if_changed "$ETC/proxy-keystone.conf" <<EOF
[DEFAULT]
bind_ip = $IP
bind_port = $KEYSTONE_PROXY_PORT
workers = 1
user = $user_name
swift_dir = $ETC
log_level = INFO
log_name = proxy-keystone

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats authtoken keystoneauth proxy-logging proxy-server

$(proxy_common)

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $url
auth_url = $url
auth_type = password
username = $user
password = $password
project_name = $project
user_domain_id = default
project_domain_id = default
delay_auth_decision = true
# the identity endpoint that keystone-manage bootstrap makes is public only
interface = public

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
EOF
      )
      # a changed config (another Keystone) needs a new process
      stop_service proxy-keystone
      start_service proxy-keystone
      local deadline=$(( $(date +%s) + START_TIMEOUT ))
      until [ "$(http_code "http://$IP:$KEYSTONE_PROXY_PORT/healthcheck")" = 200 ]; do
        running_pid proxy-keystone >/dev/null || die "proxy-keystone died during start; see $LOG/proxy-keystone.log"
        [ "$(date +%s)" -lt "$deadline" ] || die "proxy-keystone not healthy after ${START_TIMEOUT}s; see $LOG/proxy-keystone.log"
        sleep 0.1
      done
      log "ready: swift http://$IP:$KEYSTONE_PROXY_PORT/v1/AUTH_<project id> (Keystone $url)"
      ;;
    stop)
      [ -d "$RUN" ] || return 0
      exec 9>"$RUN/lock"; flock -w 120 9 || die "another swift-aio.sh holds $RUN/lock"
      stop_service proxy-keystone
      ;;
    *) die "usage: $0 keystone-proxy start|stop" ;;
  esac
}

cmd_wipe() {
  cmd_stop
  if mountpoint -q "$SRV/$DEV" 2>/dev/null; then umount "$SRV/$DEV"; fi
  case $DIR in /|/tmp|/root|/home|/usr|/etc|/var) die "refusing to delete $DIR" ;; esac
  rm -rf "$DIR"
  log "deleted $DIR"
}

abs_dir
case ${1:-} in
  install) cmd_install ;;
  start)   cmd_start ;;
  stop)    cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status)  cmd_status ;;
  env)     cmd_env ;;
  wipe)    cmd_wipe ;;
  keystone-proxy) cmd_keystone_proxy "${2:-}" ;;
  *) sed -n '2,55p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
