#!/usr/bin/env bash
# Router throughput to an instance through its mapped host port (the cell's
# network: DNAT to the container's 8080) against the previous host-port
# path (`--cell-network none`: the app listens on the host port itself), in
# one run: two servers of the same binary side by side, the same app pushed
# to each, wrk against them in alternation (ROUNDS times, medians), through
# the router and straight to the host port. Needs root, runc, wrk.
# Measure the build you ship:
#   cargo build --release --bin kiln; KILN=target/release/kiln bench/cell-network-router.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-${CARGO_TARGET_DIR:-target}/debug/kiln}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
SUBNET=${SUBNET:-10.198.0.0/24}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
scratch=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rps() { wrk -t1 -c2 -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

# Starts a server with --cell-network "$1" and pushes hello; sets
# ROUTER_<name> and PORT_<name> (the instance's host port).
start() {
  local network=$1 name=$2 data=$scratch/$2 api router
  api=$(free_port); router=$(free_port)
  mkdir -p "$data"
  KILN_ADMIN_PASSWORD=bench "$KILN" server --data-dir "$data" --api-listen "127.0.0.1:$api" \
    --router-listen "127.0.0.1:$router" --cell-id "bench-$name-$$" --cell-network "$network" \
    >"$data.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 150); do curl -fsS "http://127.0.0.1:$api/" >/dev/null 2>&1 && break; sleep 0.2; done
  export KILN_HOME=$data/home
  "$KILN" login -a "http://127.0.0.1:$api" -u admin -p bench >/dev/null
  "$KILN" create-buildpack python examples/buildpacks/python 1 >/dev/null
  "$KILN" push hello -p examples/hello >/dev/null
  curl -fsS --retry 20 --retry-delay 1 --retry-all-errors -H "Host: hello.localhost" "http://127.0.0.1:$router/" >/dev/null
  local guid process
  guid=$("$KILN" curl "/v3/apps?names=hello" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')
  process=$("$KILN" curl "/v3/apps/$guid/processes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')
  printf -v "ROUTER_$name" '%s' "$router"
  printf -v "PORT_$name" '%s' "$("$KILN" curl "/v3/processes/$process/stats" | python3 -c 'import json,sys; r=json.load(sys.stdin)["resources"]; print([i for i in r if i["state"]=="RUNNING"][0]["instance_ports"][0]["external"])')"
}

start none hostport
start "$SUBNET" mapped
declare -A runs
for _ in $(seq 1 "$ROUNDS"); do
  for name in hostport mapped; do
    router_var=ROUTER_$name port_var=PORT_$name
    runs[$name-router]+=" $(rps -H "Host: hello.localhost" "http://127.0.0.1:${!router_var}/")"
    runs[$name-direct]+=" $(rps "http://127.0.0.1:${!port_var}/")"
  done
done
echo "== wrk -t1 -c2 -d$DURATION, GET / of examples/hello, $ROUNDS alternating rounds (median req/s), $KILN"
for key in hostport-router mapped-router hostport-direct mapped-direct; do
  # shellcheck disable=SC2086
  printf '%-16s %8.1f   (%s )\n' "$key" "$(median ${runs[$key]})" "${runs[$key]}"
done
# shellcheck disable=SC2086
python3 -c "import sys; a,b,c,d=map(float,sys.argv[1:]); print(f'router, mapped / host-port: {b/a:.2f}'); print(f'direct, mapped / host-port: {d/c:.2f}')" \
  "$(median ${runs[hostport-router]})" "$(median ${runs[mapped-router]})" \
  "$(median ${runs[hostport-direct]})" "$(median ${runs[mapped-direct]})"
