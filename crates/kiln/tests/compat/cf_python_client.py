"""Drives Kiln with the unmodified PyPI `cloudfoundry-client` (its v3
managers, and its authenticated session for calls it has no method for):
an org, two spaces, a user with a role, an app pushed through the raw v3
calls, a user-provided service bound to it, VCAP_SERVICES read from inside
the instance, the audit events; then the same as a space developer of the
other space, who sees and changes none of it. Prints one line per step and
exits non-zero at the first surprise."""

import json
import os
import sys
import time
import urllib.request
import zipfile

from cloudfoundry_client.client import CloudFoundryClient
from cloudfoundry_client.errors import InvalidStatusCode
from cloudfoundry_client.v3.entities import ToOneRelationship

API = os.environ["KILN_API"]
ROUTER = os.environ["KILN_ROUTER"]
ADMIN_PASSWORD = os.environ["KILN_ADMIN_PASSWORD"]
APP_DIR = os.environ["KILN_APP_DIR"]
APP_ZIP = os.path.join(os.environ["KILN_SCRATCH"], "app.zip")


def step(text):
    print("compat:", text, flush=True)


def check(ok, what):
    if not ok:
        print("compat: FAILED:", what, flush=True)
        sys.exit(1)


def login(username, password):
    client = CloudFoundryClient(API)
    client.init_with_user_credentials(username, password)
    return client


def status_of(call):
    try:
        call()
    except InvalidStatusCode as e:
        return e.status_code.value
    return 200


def wait_for(what, probe, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    check(False, "timed out waiting for " + what)


admin = login("admin", ADMIN_PASSWORD)
v3 = admin.v3
step("logged in as admin through the root document's uaa link")

org = v3.organizations.create("compat-org", suspended=False)
space = v3.spaces.create("compat-space", org["guid"])
other_space = v3.spaces.create("other-space", org["guid"])
check(v3.spaces.get(space["guid"])["name"] == "compat-space", "space read back")
step("org and spaces created")

# A private domain of the org, through the domains manager.
private = v3.domains.create("compat.private.test", organization=ToOneRelationship(org["guid"]))
check(private["relationships"]["organization"]["data"]["guid"] == org["guid"], "private %s" % private)
of_org = [d["name"] for d in v3.domains.list_domains_for_org(org["guid"])]
check("compat.private.test" in of_org, "org domains %s" % of_org)
v3.domains.remove(private["guid"])
left = [d["name"] for d in v3.domains.list()]
check("compat.private.test" not in left, "domains after remove %s" % left)
step("private domain created, listed for its org and removed")

# A user in UAA (SCIM), known to Cloud Controller, developer of the other space.
scim = admin.post(API + "/Users", json={
    "userName": "compat-dev", "password": "compat-pw",
    "emails": [{"value": "compat-dev@example.com"}]}).json()
v3.users.create(scim["id"])
v3.roles._create({"type": "organization_user", "relationships": {
    "user": {"data": {"guid": scim["id"]}}, "organization": {"data": {"guid": org["guid"]}}}})
v3.roles._create({"type": "space_developer", "relationships": {
    "user": {"data": {"guid": scim["id"]}}, "space": {"data": {"guid": other_space["guid"]}}}})
roles = [r["type"] for r in v3.roles.list(user_guids=scim["id"])]
check(sorted(roles) == ["organization_user", "space_developer"], "roles %s" % roles)
step("user and roles created")

# Push through the raw v3 calls.
with zipfile.ZipFile(APP_ZIP, "w") as z:
    for root, _, files in os.walk(APP_DIR):
        for name in files:
            path = os.path.join(root, name)
            z.write(path, os.path.relpath(path, APP_DIR))
app = v3.apps._create({"name": "compat-app", "relationships": {"space": {"data": {"guid": space["guid"]}}}})
package = v3.packages._create({"type": "bits", "relationships": {"app": {"data": {"guid": app["guid"]}}}})
v3.packages._upload_bits(package["guid"], APP_ZIP)
wait_for("package READY", lambda: v3.packages.get(package["guid"])["state"] == "READY")
build = admin.post(API + "/v3/builds", json={"package": {"guid": package["guid"]}}).json()
staged = wait_for("build STAGED", lambda: (
    lambda b: b if b["state"] in ("STAGED", "FAILED") else None)(admin.get(API + "/v3/builds/" + build["guid"]).json()))
check(staged["state"] == "STAGED", "build %s" % staged)
# The package's droplets, as `cf restart` finds the one to run.
of_package = admin.get(API + "/v3/packages/%s/droplets" % package["guid"]).json()
check([d["guid"] for d in of_package["resources"]] == [staged["droplet"]["guid"]],
      "package droplets %s" % of_package)
admin.patch(API + "/v3/apps/%s/relationships/current_droplet" % app["guid"],
            json={"data": {"guid": staged["droplet"]["guid"]}})
domain = next(iter(v3.domains.list()))
route = v3.routes._create({"host": "compat-app", "relationships": {
    "space": {"data": {"guid": space["guid"]}}, "domain": {"data": {"guid": domain["guid"]}}}})
admin.post(API + "/v3/routes/%s/destinations" % route["guid"],
           json={"destinations": [{"app": {"guid": app["guid"]}}]})
step("app pushed: package, build, droplet, route")

# A user-provided service, bound before the start.
instance = v3.service_instances._create({
    "type": "user-provided", "name": "compat-db", "tags": ["compat"],
    "credentials": {"user": "compat", "password": "pw"},
    "relationships": {"space": {"data": {"guid": space["guid"]}}}})
check("credentials" not in v3.service_instances.get(instance["guid"]), "credentials in a get")
binding = v3.service_credential_bindings._create({
    "type": "app", "name": "db", "relationships": {
        "app": {"data": {"guid": app["guid"]}},
        "service_instance": {"data": {"guid": instance["guid"]}}}})
listed = [b["guid"] for b in v3.service_credential_bindings.list(app_guids=app["guid"])]
check(listed == [binding["guid"]], "bindings of the app %s" % listed)
env = v3.apps.get_env(app["guid"])
check(env["system_env_json"]["VCAP_SERVICES"]["user-provided"][0]["instance_name"] == "compat-db", "env %s" % env)
step("user-provided service created and bound")

admin.post(API + "/v3/apps/%s/actions/start" % app["guid"], json={})


def probe():
    request = urllib.request.Request("http://%s/" % ROUTER, headers={"Host": "compat-app.localhost"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except OSError:
        return None


seen = wait_for("the app through the router", probe)
services = json.loads(seen["env"]["VCAP_SERVICES"])
entry = services["user-provided"][0]
check(entry["name"] == "db" and entry["instance_name"] == "compat-db", "entry %s" % entry)
check(entry["credentials"] == {"user": "compat", "password": "pw"}, "credentials %s" % entry)
check(entry["binding_guid"] == binding["guid"] and entry["label"] == "user-provided", "entry %s" % entry)
step("VCAP_SERVICES inside the instance: %s" % sorted(entry))

types = [e["type"] for e in v3.audit_events.list(target_guids=app["guid"])]
for wanted in ("audit.app.create", "audit.app.start"):
    check(wanted in types, "%s in %s" % (wanted, types))
types = [e["type"] for e in v3.audit_events.list(space_guids=space["guid"])]
for wanted in ("audit.user_provided_service_instance.create", "audit.service_binding.create"):
    check(wanted in types, "%s in %s" % (wanted, types))
check("pw" not in json.dumps([e["data"] for e in v3.audit_events.list(space_guids=space["guid"])]),
      "credentials in an event")
step("audit events read")

# The developer of the other space: nothing of compat-space is visible.
dev = login("compat-dev", "compat-pw")
d3 = dev.v3
check([a["guid"] for a in d3.apps.list()] == [], "apps visible to the other space's developer")
check([i["guid"] for i in d3.service_instances.list()] == [], "instances visible")
check([b["guid"] for b in d3.service_credential_bindings.list()] == [], "bindings visible")
check([e for e in d3.audit_events.list(space_guids=space["guid"])] == [], "events visible")
check(status_of(lambda: d3.apps.get(app["guid"])) == 404, "app get")
check(status_of(lambda: d3.service_instances.get(instance["guid"])) == 404, "instance get")
check(status_of(lambda: d3.apps.get_env(app["guid"])) == 404, "app env")
check(status_of(lambda: d3.service_instances.remove(instance["guid"])) == 404, "instance delete")
# In its own space it works.
own = d3.service_instances._create({
    "type": "user-provided", "name": "own-db",
    "relationships": {"space": {"data": {"guid": other_space["guid"]}}}})
check([i["guid"] for i in d3.service_instances.list()] == [own["guid"]], "own instance listed")
check(status_of(lambda: d3.service_instances._create({
    "type": "user-provided", "name": "sneaky",
    "relationships": {"space": {"data": {"guid": space["guid"]}}}})) == 422, "create in a foreign space")
step("isolation: the other space's developer sees and changes nothing of compat-space")
print("compat: OK", flush=True)
