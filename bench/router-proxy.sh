#!/usr/bin/env bash
# The router's proxy alone (no Kiln server, no container) against nginx as a
# reverse proxy, in front of the same nginx serving a static file on the
# host, in one run (issue 16). For profiling and for the proxy's own memory:
# bench/router.sh is the whole-platform comparison.
#
#   1. starts nginx on 127.0.0.1 as the "instance" (one worker, keep-alive,
#      a static file), nginx as a reverse proxy to it (`worker_processes
#      auto`, upstream keepalive, buffered access log) and
#      `kiln-router --example proxy` routing a host to it;
#   2. runs `wrk --latency -t1 -cN -dD` straight to the instance, through
#      nginx and through the router, alternating, ROUNDS times, at each of
#      CONNS; prints the medians and the ratios router/nginx, with the load
#      average (the machine is shared: compare only figures of one run);
#   3. prints the proxy's RSS idle, right after the load, and SETTLE and
#      2×SETTLE seconds later (the example uses jemalloc, as `kiln` does).
#
# PROXY=BINARY runs another binary with the example's command line
# (LISTEN INSTANCE HOST) in its place; `examples/floor.rs`, the leanest
# proxy this stack allows (a measuring instrument, not product code), is
# what a purpose-built client side could reach at best:
#   cargo build --release -p kiln-router --example floor
#   PROXY=$CARGO_TARGET_DIR/release/examples/floor CPU=1 CONNS=64 bench/router-proxy.sh
#
# Needs wrk and nginx (`apt-get install wrk nginx-light`; installed if
# missing). Builds the example in release unless PROXY= names a binary.
#
#   bench/router-proxy.sh            # CONNS="2 64 1000" ROUNDS=3 DURATION=5s
#   CPU=1 bench/router-proxy.sh      # also CPU time per request, user and
#                                    # system, of the whole path (needs perf)
#   SYSCALLS=1 bench/router-proxy.sh # also system calls per request (strace)
#   BASELINE=BINARY bench/router-proxy.sh
#       # also that binary (another build of the example, e.g. main's) as a
#       # second router, against this one, alternating at each of CONNS
#       # (and, with CPU=1, its CPU per request): a before/after in one run
#   INSTRUCTIONS=1 bench/router-proxy.sh
#       # also the instructions the router runs per request (and
#       # BASELINE's), counted by callgrind: steady where throughput is not
#   ROUTES=100000 bench/router-proxy.sh
#       # also a second router whose table holds 100,000 other routes,
#       # against the one-route router, alternating, at 64 connections:
#       # what a large table costs a request (the ratio should be ~1)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-2 64 1000}
SETTLE=${SETTLE:-10}
. bench/router-nginx.sh
if [ -z "${PROXY:-}" ]; then
  cargo build -q --release -p kiln-router --example proxy
  PROXY=${CARGO_TARGET_DIR:-target}/release/examples/proxy
fi

work=$(mktemp -d /tmp/kiln-bench-router-proxy.XXXXXX)
# nginx's workers run unprivileged and read the static file from here.
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT=$(free_port) NGINX_PORT=$(free_port) ROUTER_PORT=$(free_port)
HOST=static.bench.test
mkdir -p "$work/app/public"
printf 'hello from a static file served by nginx\n' >"$work/app/public/index.html"

cat >"$work/app/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/app/nginx.pid;
error_log $work/app/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$APP_PORT; root $work/app/public; }
}
CONF
nginx -p "$work/app" -e "$work/app/error.log" -c "$work/app/nginx.conf" &
app_pid=$!
pids+=($app_pid)
start_nginx_proxy "$work/nginx" "$NGINX_PORT" "$APP_PORT"
pids+=("$nginx_pid")
env -u ROUTES "$PROXY" "127.0.0.1:$ROUTER_PORT" "127.0.0.1:$APP_PORT" "$HOST" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=($proxy_pid)
DIRECT=http://127.0.0.1:$APP_PORT/index.html
VIA_NGINX=http://127.0.0.1:$NGINX_PORT/index.html
VIA_ROUTER=http://127.0.0.1:$ROUTER_PORT/index.html
for url in "$DIRECT" "$VIA_NGINX"; do
  curl -fsS --retry 20 --retry-delay 1 --retry-all-errors "$url" >/dev/null
done
curl -fsS --retry 20 --retry-delay 1 --retry-all-errors -H "Host: $HOST" "$VIA_ROUTER" >/dev/null

rss() { awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$proxy_pid/status"; }
rss_idle=$(rss)

compare router "$DIRECT" "$VIA_NGINX" "$VIA_ROUTER" "$HOST"

# CPU=1: the CPU time per request of each proxy, of the instance and of
# wrk, over a wrk run at 64 connections (nginx against the router,
# alternating, ROUNDS times), and how busy the machine was. At 64
# connections the 2 cores are nearly saturated, so the throughput ratio
# follows the ratio of the whole path's CPU per request (wrk + instance +
# proxy), printed as "predicted"; CPU per request is much steadier than
# throughput on a shared machine. Proxy and instance from /proc/PID/stat
# (user and system time; the proxy's context switches too), wrk from `perf
# stat` (needs `apt-get install linux-perf`); bench/router-nginx.sh's
# cpu_per_request, which bench/router.sh uses as well.
if [ "${CPU:-0}" = 1 ]; then
  nginx_workers=$(pgrep -d, -P "$nginx_pid")
  instance_pids=$(pgrep -d, -P "$app_pid")
  echo "==> CPU per request at 64 connections (user + system; whole path = wrk + instance + proxy)"
  for round in $(seq 1 "$ROUNDS"); do
    echo "   round $round (load $(cut -d' ' -f1 /proc/loadavg)): $(cpu_per_request nginx "$VIA_NGINX" "$nginx_workers")$(cpu_per_request router "$VIA_ROUTER" "$proxy_pid" -H "Host: $HOST")"
  done
  python3 - "$work/cpu.totals" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda who: statistics.median(float(r[1]) for r in rows if r[0] == who)
print(f"   medians: whole path via nginx {med('nginx'):.1f} us/req, via router {med('router'):.1f};"
      f" predicted throughput router/nginx {med('nginx') / med('router'):.2f}x")
PY
fi

# SYSCALLS=1: system calls per request at 64 connections (strace -c over a
# short wrk run), nginx's workers against the router: where the kernel half
# of the CPU goes. strace slows both, so only the counts mean anything.
syscalls_per_request() {
  local label=$1 port=$2 pids=$3; shift 3
  local out=$work/strace.$label reqs args=()
  for pid in ${pids//,/ }; do args+=(-p "$pid"); done
  strace -c -f -o "$out" "${args[@]}" &
  local trace=$!
  sleep 0.5
  reqs=$(wrk -t1 -c64 -d2s "$@" "http://127.0.0.1:$port/index.html" | awk '/requests in/ {print $1}')
  kill -INT "$trace"; wait "$trace" 2>/dev/null || true
  echo "   $label: $(awk -v n="$reqs" '$NF == "total" {printf "%.2f system calls/request", $4 / n}' "$out");" \
    "$(awk -v n="$reqs" 'NF >= 5 && $NF != "total" && $NF != "syscall" && $1 ~ /^[0-9.]+$/ {printf "%s %.2f, ", $NF, $4 / n}' "$out")"
}
if [ "${SYSCALLS:-0}" = 1 ]; then
  echo "==> system calls per request at 64 connections (strace -c -f)"
  syscalls_per_request nginx "$NGINX_PORT" "$(pgrep -d, -P "$nginx_pid")"
  syscalls_per_request router "$ROUTER_PORT" "$proxy_pid" -H "Host: $HOST"
fi

# ROUTES=N: the same proxy with N other routes in its table against the
# one-route proxy, alternating at 64 connections: a lookup's share of a
# request, which a table that stays flat keeps the same.
if [ -n "${ROUTES:-}" ]; then
  BIG_PORT=$(free_port)
  ROUTES=$ROUTES "$PROXY" "127.0.0.1:$BIG_PORT" "127.0.0.1:$APP_PORT" "$HOST" >"$work/proxy-big.log" 2>&1 &
  big_pid=$!
  pids+=($big_pid)
  curl -fs --retry 60 --retry-delay 1 --retry-all-errors -H "Host: $HOST" "http://127.0.0.1:$BIG_PORT/index.html" >/dev/null
  echo "==> one route against $ROUTES more, wrk -t1 -c64 -d$DURATION, $ROUNDS alternating rounds"
  : >"$work/routes"
  for round in $(seq 1 "$ROUNDS"); do
    one=$(measure 64 "$VIA_ROUTER" -H "Host: $HOST")
    big=$(measure 64 "http://127.0.0.1:$BIG_PORT/index.html" -H "Host: $HOST")
    echo "$one $big" >>"$work/routes"
    echo "   round $round (load $(cut -d' ' -f1 /proc/loadavg)): 1 route $one; $ROUTES routes $big (req/s p99 ms)"
  done
  python3 - "$work/routes" "$ROUTES" <<'PY'
import statistics, sys
rows = [[float(x) for x in l.split()] for l in open(sys.argv[1])]
med = lambda i: statistics.median(r[i] for r in rows)
print(f"   medians: 1 route {med(0):.0f} req/s p99 {med(1):.2f} ms; {sys.argv[2]} routes {med(2):.0f} req/s p99 {med(3):.2f} ms;"
      f" throughput {med(2)/med(0):.2f}x, p99 {med(3)/med(1):.2f}x")
PY
  echo "   RSS: 1 route $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$proxy_pid/status"), $ROUTES routes $(awk '/VmRSS/ {printf "%.1f MB", $2/1024}' "/proc/$big_pid/status")"
fi

# BASELINE=BINARY: a second router from another build, against this one,
# alternating at each of CONNS, then CPU per request of both with CPU=1.
if [ -n "${BASELINE:-}" ]; then
  BASE_PORT=$(free_port)
  env -u ROUTES "$BASELINE" "127.0.0.1:$BASE_PORT" "127.0.0.1:$APP_PORT" "$HOST" >"$work/proxy-base.log" 2>&1 &
  base_pid=$!
  pids+=($base_pid)
  curl -fs --retry 20 --retry-delay 1 --retry-all-errors -H "Host: $HOST" "http://127.0.0.1:$BASE_PORT/index.html" >/dev/null
  echo "==> this router against BASELINE ($BASELINE), wrk -t1 -d$DURATION, $ROUNDS alternating rounds"
  : >"$work/baseline"
  for conns in $CONNS; do
    for round in $(seq 1 "$ROUNDS"); do
      base=$(measure "$conns" "http://127.0.0.1:$BASE_PORT/index.html" -H "Host: $HOST")
      this=$(measure "$conns" "$VIA_ROUTER" -H "Host: $HOST")
      echo "$conns $base $this" >>"$work/baseline"
      echo "   c=$conns round $round (load $(cut -d' ' -f1 /proc/loadavg)): baseline $base; this $this (req/s p99 ms)"
    done
  done
  python3 - "$work/baseline" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for c in dict.fromkeys(r[0] for r in rows):
    med = lambda i: statistics.median(float(r[i]) for r in rows if r[0] == c)
    print(f"   c={c} medians: baseline {med(1):.0f} req/s p99 {med(2):.2f} ms; this {med(3):.0f} req/s p99 {med(4):.2f} ms;"
          f" throughput {med(3)/med(1):.2f}x, p99 {med(4)/med(2):.2f}x")
PY
  if [ "${CPU:-0}" = 1 ]; then
    echo "==> CPU per request at 64 connections, baseline against this router"
    for round in $(seq 1 "$ROUNDS"); do
      echo "   round $round (load $(cut -d' ' -f1 /proc/loadavg)): $(cpu_per_request baseline "http://127.0.0.1:$BASE_PORT/index.html" "$base_pid" -H "Host: $HOST")$(cpu_per_request router "$VIA_ROUTER" "$proxy_pid" -H "Host: $HOST")"
    done
  fi
fi

# INSTRUCTIONS=1: the instructions the router runs per request (and
# BASELINE's, if given), counted by callgrind (`apt-get install valgrind`)
# over a wrk run at 8 connections against one worker: its own threads, the
# access log's writer included, the kernel not. Where throughput on a
# shared machine moves by several percent from run to run, this count
# comes out the same, so it tells small changes to the request path apart.
instructions_per_request() {
  local label=$1 binary=$2 port out pid reqs total
  port=$(free_port) out=$work/callgrind.$label
  WORKERS=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$binary" "127.0.0.1:$port" "127.0.0.1:$APP_PORT" "$HOST" >"$out.log" 2>&1 &
  pid=$!
  curl -fs --retry 60 --retry-delay 1 --retry-all-errors -H "Host: $HOST" "http://127.0.0.1:$port/index.html" >/dev/null
  # Counted from here: start-up and the first request are left out.
  callgrind_control -i on "$pid" >/dev/null 2>&1
  reqs=$(wrk -t1 -c8 -d"$DURATION" -H "Host: $HOST" "http://127.0.0.1:$port/index.html" | awk '/requests in/ {print $1}')
  callgrind_control -i off "$pid" >/dev/null 2>&1
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo "$label $((total / reqs))"
}
if [ "${INSTRUCTIONS:-0}" = 1 ]; then
  command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
  echo "==> instructions per request (callgrind, one worker, wrk -t1 -c8 -d$DURATION)"
  this=$(instructions_per_request router "$PROXY")
  echo "   $this"
  if [ -n "${BASELINE:-}" ]; then
    base=$(instructions_per_request baseline "$BASELINE")
    echo "   $base"
    echo "   router/baseline $(echo "$this $base" | awk '{printf "%.3f", $2 / $4}')"
  fi
fi
