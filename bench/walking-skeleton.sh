#!/usr/bin/env bash
# Side-by-side figures for the walking skeleton, each against a baseline in
# the same run (run `make up` first; needs root, wrk and hyperfine from Debian):
#   1. HTTP through Kiln's router vs straight to the app instance (wrk, c=2)
#   2. a bare `runc run` of /bin/true in a read-only bundle vs a Kiln push
#      of the sample app that changes nothing (hyperfine)
# Prints ratios; reports nothing it did not measure. Measure a release
# build: `cargo build --release --bin kiln`, then start it with
# `make down; KILN=target/release/kiln scripts/up.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
DATA_DIR=${KILN_DATA_DIR:-$PWD/.kiln-data}
export KILN_HOME=${KILN_HOME:-$DATA_DIR/home}
ROUTER=${KILN_ROUTER_LISTEN:-127.0.0.1:8080}
DURATION=${DURATION:-10s}
command -v wrk >/dev/null && command -v hyperfine >/dev/null || apt-get install -y -qq wrk hyperfine >/dev/null

guid=$("$KILN" curl "/v3/apps?names=hello" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')
process=$("$KILN" curl "/v3/apps/$guid/processes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')
port=$("$KILN" curl "/v3/processes/$process/stats" | python3 -c 'import json,sys; r=json.load(sys.stdin)["resources"]; print([i for i in r if i["state"]=="RUNNING"][0]["instance_ports"][0]["external"])')

rps() { wrk -t1 -c2 -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }
echo "== 1. router overhead (wrk -t1 -c2 -d$DURATION, GET /)"
direct=$(rps "http://127.0.0.1:$port/")
routed=$(rps -H "Host: hello.localhost" "http://$ROUTER/")
echo "direct to the instance: $direct req/s"
echo "through the router:     $routed req/s"
python3 -c "print(f'router / direct throughput: {float($routed)/float($direct):.2f}')"

echo "== 2. bare runc vs a no-change kiln push (hyperfine)"
bundle=$(mktemp -d)
mkdir -p "$bundle/rootfs"
( cd "$bundle" && runc spec && python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["terminal"] = False
c["process"]["args"] = ["/usr/bin/true"]
c["root"] = {"path": "rootfs", "readonly": True}
c["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
json.dump(c, open("config.json", "w"))
PY
)
mkdir -p "$bundle/rootfs/usr"
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$bundle/rootfs/$d"; done
hyperfine --warmup 1 --runs "${RUNS:-5}" --export-json "$bundle/push.json" \
  "runc --root $bundle/state run --bundle $bundle bench-\$RANDOM" \
  "$KILN push hello -p examples/hello"
rm -rf "$bundle"
