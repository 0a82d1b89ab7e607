"""One round through vbs serve's HTTP API, for `bench/engine --api` (Python 3.11 stdlib only).

Starts `vbs serve --listen 127.0.0.1:0 --data-dir D --auth noauth` (the first stdout line is
`listening on ADDR`), then as admin of a fresh project (noauth token `admin:PROJECT`):
  manage   POST /v3/{p}/manageable_volumes {"volume":{"ref":{"source-name": IMG},"name":"bench"}}
           and poll GET /v3/{p}/volumes/{V} until available
  full     POST /v3/{p}/backups {"backup":{"volume_id":V}}, poll GET /v3/{p}/backups/{id}
  incr     mutate the volume's file, then the same with "incremental": true
  restore  POST /v3/{p}/backups/{id}/restore {"restore":{}}, poll the backup until available
           and the new volume until available; cmp D/volumes/<new volume id>.img with the volume
Each step is timed from its POST to its final status. Any failure (the API may not be
written yet) is returned as {"error": ...}; the function never raises.
"""
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

POLL_LIMIT_S = 600


class ApiError(Exception):
    pass


def api_round(vbs_bin, pristine, work, logs, mutate):
    """mutate(path) rewrites part of a volume file in place (mkvolume.py mutate)."""
    d, img = os.path.join(work, "api-data"), os.path.join(work, "api.img")
    res = {}
    server = None
    try:
        shutil.rmtree(d, ignore_errors=True)
        subprocess.run(["cp", "--sparse=always", pristine, img], check=True)
        project = uuid.uuid4().hex
        out_path = os.path.join(logs, "api-serve.stdout")
        with open(out_path, "w") as so, open(os.path.join(logs, "api-serve.stderr"), "w") as se:
            server = subprocess.Popen([vbs_bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", d,
                                       "--auth", "noauth"], stdout=so, stderr=se, start_new_session=True)
        base = wait_listening(server, out_path, logs)

        def call(method, path, body=None):
            req = urllib.request.Request("%s/v3/%s/%s" % (base, project, path), method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"X-Auth-Token": "admin:" + project,
                                                  "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as ex:
                body = " ".join(ex.read()[:2000].decode(errors="replace").split())[:300]
                raise ApiError("%s %s: HTTP %d %s" % (method, path, ex.code, body))

        def wait(kind, id_, t0):
            """Poll GET {kind}s/{id} until available (returns seconds since t0) or error."""
            while time.monotonic() - t0 < POLL_LIMIT_S:
                status = call("GET", "%ss/%s" % (kind, id_))[kind]["status"]
                if status == "available":
                    return time.monotonic() - t0
                if status == "error":
                    raise ApiError("%s %s went to status error" % (kind, id_))
                time.sleep(0.05)
            raise ApiError("%s %s not available after %d s" % (kind, id_, POLL_LIMIT_S))

        t0 = time.monotonic()
        body = {"volume": {"ref": {"source-name": img}, "name": "bench"}}
        vol = call("POST", "manageable_volumes", body)["volume"]["id"]
        res["manage_s"] = wait("volume", vol, t0)
        vol_file = os.path.join(d, "volumes", vol + ".img")
        vol_file = vol_file if os.path.exists(vol_file) else img   # adopted in place or moved to the pool
        for phase, b in (("full", {"volume_id": vol}), ("incr", {"volume_id": vol, "incremental": True})):
            if phase == "incr":
                mutate(vol_file)
            t0 = time.monotonic()
            backup = call("POST", "backups", {"backup": b})["backup"]["id"]
            res[phase + "_s"] = wait("backup", backup, t0)
        t0 = time.monotonic()
        new = call("POST", "backups/%s/restore" % backup, {"restore": {}})["restore"]["volume_id"]
        wait("backup", backup, t0)
        res["restore_s"] = wait("volume", new, t0)
        restored = os.path.join(d, "volumes", new + ".img")
        # A managed volume's size is rounded up to whole GiB, so the restored volume
        # may be longer than the image: its head must match and its tail be holes.
        size = os.path.getsize(vol_file)
        same_head = subprocess.run(["cmp", "-s", "-n", str(size), vol_file, restored]).returncode == 0
        res["identical"] = same_head and tail_is_empty(restored, size)
        with open("/proc/%d/status" % server.pid) as f:
            res["server_peak_rss"] = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
    except Exception as ex:                      # report, never crash the benchmark
        res["error"] = "%s: %s" % (type(ex).__name__, ex)
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return res


def wait_listening(server, out_path, logs):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(out_path, errors="replace") as f:
            first = f.readline()
        if first.startswith("listening on ") and first.endswith("\n"):
            return "http://" + first.split()[2]
        if server.poll() is not None:
            raise ApiError("vbs serve exited %s before listening (see %s/api-serve.stderr)"
                           % (server.returncode, logs))
        time.sleep(0.1)
    raise ApiError("vbs serve did not print 'listening on ADDR' within 60 s")


def tail_is_empty(path, start):
    """True when the file holds no data (only holes) from `start` to its end."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if start >= os.fstat(fd).st_size:
            return True
        try:
            os.lseek(fd, start, os.SEEK_DATA)
        except OSError:                          # ENXIO: nothing but holes after start
            return True
        return False
    finally:
        os.close(fd)
