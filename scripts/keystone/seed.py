"""Seed a freshly bootstrapped Keystone for the vbs client tests (scripts/keystone.sh).

Usage (run with the Keystone venv's python, standard library only):
    seed.py init DIR URL        (env KEYSTONE_AUTH_URL, KEYSTONE_ADMIN_PASSWORD) create the vbs service user, two member projects, an
                                 admin user and the block-storage/volumev3 endpoints
                                 (when URL is not empty); write DIR/seed.json
    seed.py endpoint DIR URL    (re)point both block-storage services at URL
    seed.py object-store DIR URL
                                (re)point the object-store service (swift) at URL, a
                                template such as http://HOST:PORT/v1/AUTH_%(project_id)s

DIR/seed.json holds what clients need: auth_url, and for each principal its
user name, password, user id, project name and project id.
"""
import json
import os
import secrets
import sys
import urllib.error
import urllib.request

DOMAIN = "default"
SERVICE_TYPES = {"block-storage": "cinder", "volumev3": "cinderv3"}


class Keystone:
    def __init__(self, auth_url):
        self.auth_url = auth_url.rstrip("/")
        self.token = None

    def call(self, method, path, body=None, expect=(200, 201, 204)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.auth_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if self.token:
            req.add_header("X-Auth-Token", self.token)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                headers = resp.headers
                status = resp.status
        except urllib.error.HTTPError as err:
            raise SystemExit(f"{method} {path}: HTTP {err.code}: {err.read()[:500]!r}")
        if status not in expect:
            raise SystemExit(f"{method} {path}: unexpected HTTP {status}")
        return (json.loads(raw) if raw else {}), headers

    def login(self, user, password, project):
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": DOMAIN}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": DOMAIN}}}}}
        _, headers = self.call("POST", "/auth/tokens", body)
        self.token = headers["X-Subject-Token"]

    def find(self, collection, name):
        found, _ = self.call("GET", f"/{collection}?name={name}")
        items = found[collection]
        return items[0] if items else None

    def ensure(self, collection, name, fields):
        item = self.find(collection, name)
        if item is None:
            created, _ = self.call("POST", f"/{collection}", {collection[:-1]: dict(fields, name=name)})
            item = created[collection[:-1]]
        return item

    def role_id(self, name):
        role = self.find("roles", name)
        if role is None:
            raise SystemExit(f"role {name} missing: was keystone bootstrapped?")
        return role["id"]

    def grant(self, project_id, user_id, role):
        self.call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}")

    def principal(self, user, password, project, role):
        proj = self.ensure("projects", project, {"domain_id": DOMAIN, "enabled": True})
        usr = self.ensure("users", user, {"domain_id": DOMAIN, "enabled": True, "password": password})
        self.grant(proj["id"], usr["id"], role)
        return {"user": user, "password": password, "user_id": usr["id"],
                "project": project, "project_id": proj["id"], "role": role}

    def point_endpoints(self, url):
        target = url.rstrip("/") + "/v3/%(project_id)s"
        for stype, name in SERVICE_TYPES.items():
            self.point_service(stype, name, target)

    def point_service(self, stype, name, target):
        """The service of type `stype` (created if missing) with one public endpoint: `target`."""
        services, _ = self.call("GET", f"/services?type={stype}")
        if services["services"]:
            service = services["services"][0]
        else:
            created, _ = self.call("POST", "/services", {"service": {
                "type": stype, "name": name, "enabled": True}})
            service = created["service"]
        endpoints, _ = self.call("GET", f"/endpoints?service_id={service['id']}&interface=public")
        for ep in endpoints["endpoints"]:
            self.call("DELETE", f"/endpoints/{ep['id']}")
        self.call("POST", "/endpoints", {"endpoint": {
            "service_id": service["id"], "interface": "public", "region_id": "RegionOne",
            "url": target, "enabled": True}})


def admin_session(seed):
    ks = Keystone(seed["auth_url"])
    admin = seed["admin"]
    ks.login(admin["user"], admin["password"], admin["project"])
    return ks


def main(argv):
    if len(argv) != 4 or argv[1] not in ("init", "endpoint", "object-store"):
        raise SystemExit(__doc__)
    cmd, state_dir, url = argv[1:]
    path = os.path.join(state_dir, "seed.json")
    if cmd == "init":
        seed = {"auth_url": os.environ["KEYSTONE_AUTH_URL"],
                "admin": {"user": "admin", "password": os.environ["KEYSTONE_ADMIN_PASSWORD"],
                          "project": "admin"}}
        ks = admin_session(seed)
        admin_project = ks.find("projects", seed["admin"]["project"])
        admin_user = ks.find("users", seed["admin"]["user"])
        seed["admin"].update(user_id=admin_user["id"], project_id=admin_project["id"], role="admin")
        seed["service"] = ks.principal("vbs", secrets.token_hex(12), "service", "service")
        seed["projects"] = [
            ks.principal("alice", secrets.token_hex(12), "alpha", "member"),
            ks.principal("bob", secrets.token_hex(12), "beta", "member"),
        ]
    else:
        with open(path) as f:
            seed = json.load(f)
        ks = admin_session(seed)
    if cmd == "object-store":
        ks.point_service("object-store", "swift", url)
        seed["object_store"] = url
    elif url:
        ks.point_endpoints(url)
        seed["endpoint"] = url
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(seed, f, indent=2)
    os.replace(tmp, path)


if __name__ == "__main__":
    main(sys.argv)
