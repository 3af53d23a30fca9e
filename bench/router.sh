#!/usr/bin/env bash
# Kiln's router against nginx as a reverse proxy, in front of the same app
# instance, in one run (issue 16). Needs root, runc, wrk and nginx (Debian:
# `apt-get install wrk nginx-light`; this script installs them if missing).
#
#   1. starts a release build of Kiln on free loopback ports in a scratch
#      data dir, pushes an app whose instance is nginx serving a static file
#      (keep-alive) inside its container;
#   2. starts nginx on the host as a reverse proxy to that instance
#      (bench/router-nginx.sh: `worker_processes auto`, upstream keepalive,
#      access log buffered to a file — Kiln's router writes an RTR line per
#      request too);
#   3. runs `wrk --latency -t1 -cN -dD` straight to the instance, through
#      nginx and through Kiln's router, alternating, ROUNDS times (default
#      5: on 2 cores shared by wrk, the instance and the proxy one round's
#      ratio moves by ±15%, and a median of three with it), at 2, 64
#      and 1000 connections; prints the medians and the ratios
#      kiln/nginx (throughput: higher is better; p99: lower is better),
#      and the range of each ratio round by round (its spread on this
#      machine);
#   4. prints the Kiln server's RSS idle, right after the load, and SETTLE
#      and 2×SETTLE seconds later (default 10: the router closes instance
#      connections opened for a burst after 5 s idle, sweeping every
#      second, and jemalloc's background thread returns the freed memory
#      to the system over about ten seconds).
#
# Build first: `cargo build --release --bin kiln` (KILN= to use another).
#
# FLOOR=BINARY adds a fifth step: `examples/floor.rs` (the leanest proxy
# this stack allows, a measuring instrument, not product code) in front of
# the same instance, alternating with nginx and Kiln's router at 64
# connections, FLOOR_ROUNDS times (default 5): how far a proxy on this
# machine can get ahead of nginx at all, in the same run.
#   cargo build --release -p kiln-router --example floor
#   FLOOR=$CARGO_TARGET_DIR/release/examples/floor bench/router.sh
#
# CPU=1 adds the CPU time per request of each proxy's whole path at 64
# connections — the proxy's user and system time and context switches, the
# instance's, wrk's — and the throughput ratio it predicts (needs perf:
# `apt-get install linux-perf`).
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-${CARGO_TARGET_DIR:-target}/release/kiln}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-2 64 1000}
SETTLE=${SETTLE:-10}
[ -x "$KILN" ] || { echo "router.sh: no $KILN; run cargo build --release --bin kiln" >&2; exit 1; }
. bench/router-nginx.sh

work=$(mktemp -d /tmp/kiln-bench-router.XXXXXX)
server_pid= nginx_pid= floor_pid=
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  [ -n "$floor_pid" ] && kill "$floor_pid" 2>/dev/null || true
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API=127.0.0.1:$(free_port)
ROUTER=127.0.0.1:$(free_port)
PROXY_PORT=$(free_port)
DOMAIN=bench.test
export KILN_HOME=$work/home

echo "==> kiln server ($KILN) on api $API, router $ROUTER; data in $work"
# No per-instance connection limit: nginx has none here either, and at
# 1,000 connections Gorouter's default of 500 would answer 503s.
"$KILN" server --data-dir "$work/data" --api-listen "$API" --router-listen "$ROUTER" \
  --domain "$DOMAIN" --router-max-conns-per-backend 0 >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 150); do
  curl -fsS "http://$API/" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
  sleep 0.2
done
"$KILN" login -a "http://$API" -u admin -p "$(cat "$work/data/api/admin-password")" >/dev/null

# A buildpack that runs nginx from the stack's /usr as vcap, every path
# under /tmp, listening on $PORT.
bp=$work/buildpack app=$work/app
mkdir -p "$bp/bin" "$app/public"
cat >"$bp/bin/detect" <<'SH'
#!/usr/bin/env bash
[ -f "$1/nginx.conf.in" ] && echo static-nginx
SH
cat >"$bp/bin/finalize" <<'SH'
#!/usr/bin/env bash
echo "-----> static nginx app"
SH
cat >"$bp/bin/release" <<'SH'
#!/usr/bin/env bash
cat <<'YAML'
---
default_process_types:
  web: mkdir -p /tmp/nginx && sed "s/@PORT@/$PORT/; s#@ROOT@#$PWD/public#" nginx.conf.in >/tmp/nginx/nginx.conf && exec /usr/sbin/nginx -p /tmp/nginx -e /tmp/nginx/error.log -c /tmp/nginx/nginx.conf
YAML
SH
chmod +x "$bp/bin/"*
cat >"$app/nginx.conf.in" <<'CONF'
daemon off;
worker_processes 1;
pid /tmp/nginx/nginx.pid;
error_log /tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path /tmp/nginx/body;
  proxy_temp_path /tmp/nginx/proxy;
  fastcgi_temp_path /tmp/nginx/fastcgi;
  uwsgi_temp_path /tmp/nginx/uwsgi;
  scgi_temp_path /tmp/nginx/scgi;
  keepalive_requests 1000000;
  server {
    listen @PORT@;
    root @ROOT@;
  }
}
CONF
printf 'hello from a static file served by nginx in a kiln container\n' >"$app/public/index.html"
"$KILN" create-buildpack static-nginx "$bp" 1 >/dev/null
"$KILN" push static -p "$app" >"$work/push.log" 2>&1 || { cat "$work/push.log"; exit 1; }

guid=$("$KILN" curl "/v3/apps?names=static" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')
process=$("$KILN" curl "/v3/apps/$guid/processes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')
port=$("$KILN" curl "/v3/processes/$process/stats" | python3 -c 'import json,sys; r=json.load(sys.stdin)["resources"]; print([i for i in r if i["state"]=="RUNNING"][0]["instance_ports"][0]["external"])')
DIRECT=http://127.0.0.1:$port/index.html
HOST=static.$DOMAIN
curl -fsS --retry 20 --retry-delay 1 --retry-all-errors -H "Host: $HOST" "http://$ROUTER/index.html" >/dev/null

start_nginx_proxy "$work/nginx" "$PROXY_PORT" "$port"
curl -fsS --retry 20 --retry-delay 1 --retry-all-errors "http://127.0.0.1:$PROXY_PORT/index.html" >/dev/null

rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$server_pid/status"; }
rss_idle=$(rss)

compare kiln "$DIRECT" "http://127.0.0.1:$PROXY_PORT/index.html" "http://$ROUTER/index.html" "$HOST"

if [ -n "${FLOOR:-}" ]; then
  FLOOR_PORT=$(free_port)
  "$FLOOR" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$port" "$HOST" >"$work/floor.log" 2>&1 &
  floor_pid=$!
  curl -fsS --retry 20 --retry-delay 1 --retry-all-errors -H "Host: $HOST" "http://127.0.0.1:$FLOOR_PORT/index.html" >/dev/null
  echo
  echo "==> the floor ($FLOOR) beside nginx and kiln, wrk -t1 -c64 -d$DURATION, ${FLOOR_ROUNDS:-5} alternating rounds"
  : >"$work/floor-results"
  for round in $(seq 1 "${FLOOR_ROUNDS:-5}"); do
    echo "nginx $(measure 64 "http://127.0.0.1:$PROXY_PORT/index.html")" >>"$work/floor-results"
    echo "kiln $(measure 64 "http://$ROUTER/index.html" -H "Host: $HOST")" >>"$work/floor-results"
    echo "floor $(measure 64 "http://127.0.0.1:$FLOOR_PORT/index.html" -H "Host: $HOST")" >>"$work/floor-results"
    echo "   round $round: $(tail -3 "$work/floor-results" | awk '{printf "%s %s req/s p99 %s ms; ", $1, $2, $3}')"
  done
  python3 - "$work/floor-results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
runs = {who: [(float(r[1]), float(r[2])) for r in rows if r[0] == who] for who in ("nginx", "kiln", "floor")}
for who in ("kiln", "floor"):
    rates = [k[0] / n[0] for n, k in zip(runs["nginx"], runs[who])]
    tails = [k[1] / n[1] for n, k in zip(runs["nginx"], runs[who])]
    print(f"   {who}/nginx: throughput {statistics.median(rates):.2f}x (rounds {min(rates):.2f}-{max(rates):.2f}x), "
          f"p99 {statistics.median(tails):.2f}x (rounds {min(tails):.2f}-{max(tails):.2f}x)")
PY
fi

# CPU=1: the CPU each proxy's path costs per request at 64 connections
# (bench/router-nginx.sh's cpu_per_request), nginx against Kiln's router
# (and the floor, with FLOOR=), alternating, ROUNDS times: the proxy's
# user and system time and context switches, the instance's and wrk's
# CPU, and the throughput ratio the whole path's CPU predicts.
if [ "${CPU:-0}" = 1 ]; then
  nginx_workers=$(pgrep -d, -P "$nginx_pid")
  # The app's container: its processes, from its cgroup (v1's cpu
  # hierarchy on this machine, or v2's).
  instance_pids=$({ cat /sys/fs/cgroup/cpu/kiln/*/cgroup.procs /sys/fs/cgroup/kiln/*/cgroup.procs 2>/dev/null || true; } | paste -sd,)
  echo
  echo "==> CPU per request at 64 connections (user + system; switches voluntary/involuntary; whole path = wrk + instance + proxy)"
  : >"$work/cpu.totals"
  for round in $(seq 1 "$ROUNDS"); do
    echo "   round $round (load $(cut -d' ' -f1 /proc/loadavg)):"
    echo "      $(cpu_per_request nginx "http://127.0.0.1:$PROXY_PORT/index.html" "$nginx_workers")"
    echo "      $(cpu_per_request kiln "http://$ROUTER/index.html" "$server_pid" -H "Host: $HOST")"
    [ -z "$floor_pid" ] || echo "      $(cpu_per_request floor "http://127.0.0.1:$FLOOR_PORT/index.html" "$floor_pid" -H "Host: $HOST")"
  done
  python3 - "$work/cpu.totals" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda who: statistics.median(float(r[1]) for r in rows if r[0] == who)
for who in dict.fromkeys(r[0] for r in rows if r[0] != "nginx"):
    print(f"   medians: whole path via nginx {med('nginx'):.1f} us/req, via {who} {med(who):.1f};"
          f" predicted throughput {who}/nginx {med('nginx') / med(who):.2f}x")
PY
fi
