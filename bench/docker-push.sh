#!/usr/bin/env bash
# `kiln push APP -o IMAGE` of a small image (static busybox httpd), from the
# command to the first HTTP 200 through the router: cold (a new image each
# round, so its layer is not cached) and warm (the same image again under
# another app name: layers cached, staging resolves the manifest and finds
# every layer in the cache),
# side by side with the floor, the same image by hand: `skopeo copy` from
# the registry, `umoci unpack`, a bare `runc run` on the host network, first
# 200. Then a second instance's start (`kiln scale -i 2` until two run).
# ROUNDS rounds in one run; prints each time, the medians and the ratios.
# Run `make up` first (see bench/push.sh). Needs root, runc,
# docker-registry, skopeo, umoci, busybox-static, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/release/kiln}
DATA_DIR=${KILN_DATA_DIR:-$PWD/.kiln-data}
export KILN_HOME=${KILN_HOME:-$DATA_DIR/home}
ROUTER=${KILN_ROUTER_LISTEN:-127.0.0.1:8080}
ROUNDS=${ROUNDS:-3}
REG_PORT=${REGISTRY_PORT:-15000}
BARE_PORT=${BARE_PORT:-18556}
work=$(mktemp -d /tmp/kiln-docker-bench.XXXXXX)
reg=127.0.0.1:$REG_PORT
trap 'kill "$reg_pid" 2>/dev/null || true
      runc --root "$work/state" delete -f "bare-$$" >/dev/null 2>&1 || true
      rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }
wait_200() { # HOST-HEADER URL
  until curl -fsS -o /dev/null -H "Host: $1" "$2"; do sleep 0.01; done
}

# A registry on loopback (plain HTTP, storage in the scratch dir).
cat > "$work/registry.yml" <<EOF
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: $reg}
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
until curl -fsS -o /dev/null "http://$reg/v2/"; do sleep 0.05; done

# An image with one layer: busybox, a page, and a round-specific file (a
# new layer digest per round: cold for Kiln's cache).
build_image() { # TAG ROUND
  local layout=$work/oci bundle=$work/bundle-$1
  [ -d "$layout" ] || umoci init --layout "$layout"
  umoci new --image "$layout:$1"
  umoci unpack --rootless --image "$layout:$1" "$bundle" >/dev/null
  mkdir -p "$bundle/rootfs/bin" "$bundle/rootfs/www"
  cp /bin/busybox "$bundle/rootfs/bin/busybox"
  for a in sh httpd; do ln -sf busybox "$bundle/rootfs/bin/$a"; done
  echo "round $2" > "$bundle/rootfs/www/index.html"
  umoci repack --image "$layout:$1" "$bundle"
  umoci config --image "$layout:$1" --config.exposedports 8080/tcp \
    --config.entrypoint /bin/sh --config.entrypoint -c \
    --config.cmd 'exec httpd -f -p ${PORT:-8080} -h /www'
  skopeo copy -q --dest-tls-verify=false "oci:$layout:$1" "docker://$reg/bench:$1"
  rm -rf "$bundle"
}

kiln_push() { # APP TAG
  "$KILN" push "$1" -o "$reg/bench:$2" -m 64M >/dev/null
  wait_200 "$1.localhost" "http://$ROUTER/"
}

# The floor: fetch, unpack, run the same image with runc on the host network.
bare_run() { # TAG
  local dir=$work/bare
  rm -rf "$dir"
  skopeo copy -q --src-tls-verify=false "docker://$reg/bench:$1" "oci:$work/floor:$1"
  umoci unpack --image "$work/floor:$1" "$dir" >/dev/null
  python3 - "$dir/config.json" "$BARE_PORT" <<'PY'
import json, sys
path, port = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["env"].append(f"PORT={port}")
c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
json.dump(c, open(path, "w"))
PY
  runc --root "$work/state" run -d --bundle "$dir" "bare-$$" >/dev/null 2>&1 </dev/null
  wait_200 bare "http://127.0.0.1:$BARE_PORT/"
  runc --root "$work/state" delete -f "bare-$$" >/dev/null
}

second_instance() { # APP
  "$KILN" scale "$1" -i 2 >/dev/null
  until [ "$("$KILN" app "$1" | grep -c ' running ')" -ge 2 ]; do sleep 0.05; done
}

cold=() warm=() floor=() second=()
for round in $(seq 1 "$ROUNDS"); do
  build_image "r$round" "$round"
  t=$(now_ms); kiln_push "dcold$round" "r$round"; cold+=($(( $(now_ms) - t )))
  t=$(now_ms); kiln_push "dwarm$round" "r$round"; warm+=($(( $(now_ms) - t )))
  t=$(now_ms); bare_run "r$round"; floor+=($(( $(now_ms) - t )))
  t=$(now_ms); second_instance "dwarm$round"; second+=($(( $(now_ms) - t )))
  echo "round $round: cold ${cold[-1]} ms, warm ${warm[-1]} ms, skopeo+runc ${floor[-1]} ms, second instance ${second[-1]} ms"
  "$KILN" delete "dcold$round" -f >/dev/null
  "$KILN" delete "dwarm$round" -f >/dev/null
done
python3 - "${cold[*]}" "${warm[*]}" "${floor[*]}" "${second[*]}" <<'PY'
import statistics, sys
c, w, f, s = ([int(x) for x in a.split()] for a in sys.argv[1:5])
mc, mw, mf, ms = map(statistics.median, (c, w, f, s))
print(f"median: cold push {mc:.0f} ms ({mc / mf:.2f}x the floor), warm push {mw:.0f} ms "
      f"({mw / mf:.2f}x), skopeo copy + runc run {mf:.0f} ms, second instance {ms:.0f} ms")
PY
