# Sourced by bench/router.sh and bench/router-proxy.sh (issue 16): the parts
# both share, so the two compare Kiln's router with the same nginx set up
# the same way and read wrk the same way.
#
#   start_nginx_proxy DIR LISTEN_PORT UPSTREAM_PORT
#       nginx as a reverse proxy on 127.0.0.1:LISTEN_PORT to the instance at
#       127.0.0.1:UPSTREAM_PORT (`worker_processes auto`, upstream
#       keep-alive, access log buffered to a file — Kiln's router writes an
#       RTR line per request too), its files in DIR; sets nginx_pid.
#   measure CONNS URL [WRK ARGS...]
#       one `wrk --latency -t1 -cCONNS -dDURATION` run; prints
#       "req_per_s p99_ms" (errors go to stderr).
#   compare NAME DIRECT_URL NGINX_URL NAME_URL HOST
#       for each of CONNS, ROUNDS alternating rounds straight to the
#       instance, through nginx and through NAME (with `Host: HOST`); then
#       the medians and the ratios NAME/nginx, and the RSS (from the caller's
#       `rss`) idle (rss_idle), right after the load, SETTLE and 2×SETTLE
#       seconds later. Needs $work, DURATION, ROUNDS, CONNS, SETTLE.

command -v wrk >/dev/null && command -v nginx >/dev/null || apt-get install -y -qq wrk nginx-light >/dev/null

start_nginx_proxy() {
  local dir=$1 listen_port=$2 upstream_port=$3
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
daemon off;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log $dir/access.log combined buffer=64k flush=1s;
  upstream app { server 127.0.0.1:$upstream_port; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$listen_port;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
  nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
  nginx_pid=$!
}

measure() {
  local conns=$1 url=$2; shift 2
  wrk --latency -t1 -c"$conns" -d"$DURATION" "$@" "$url" | python3 -c '
import re, sys
out = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
sock = re.search(r"Socket errors: (.*)", out)
if errs or sock:
    print("wrk reported errors:", (errs.group(0) if errs else ""), (sock.group(0) if sock else ""), file=sys.stderr)
print(f"{rps:.0f} {p99:.3f}")'
}

compare() {
  local name=$1 direct=$2 via_nginx=$3 via_name=$4 host=$5
  local results=$work/results
  : >"$results"
  echo "==> wrk --latency -t1 -d$DURATION, $ROUNDS alternating rounds, GET /index.html ($(nproc) cores)"
  for conns in $CONNS; do
    for round in $(seq 1 "$ROUNDS"); do
      local load
      load=$(cut -d' ' -f1 /proc/loadavg)
      echo "c=$conns direct $(measure "$conns" "$direct")" >>"$results"
      echo "c=$conns nginx $(measure "$conns" "$via_nginx")" >>"$results"
      echo "c=$conns $name $(measure "$conns" "$via_name" -H "Host: $host")" >>"$results"
      echo "   c=$conns round $round (load $load): $(grep "^c=$conns " "$results" | tail -3 | awk '{printf "%s %s req/s p99 %s ms; ", $2, $3, $4}')"
    done
  done
  local rss_loaded rss_settled rss_later
  rss_loaded=$(rss)
  sleep "$SETTLE"
  rss_settled=$(rss)
  sleep "$SETTLE"
  rss_later=$(rss)

  python3 - "$results" "$name" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
name = sys.argv[2]
rate, ratio, p99 = f"{name} req/s", f"{name}/nginx", f"{name} p99"
print()
print(f"{'conns':>6} {'direct req/s':>13} {'nginx req/s':>12} {rate:>{len(rate)}} {ratio:>{len(ratio)}} | {'nginx p99':>10} {p99:>{len(p99)}} {ratio:>{len(ratio)}}")
for c in dict.fromkeys(r[0] for r in rows):
    med = lambda who, i: statistics.median(float(r[i]) for r in rows if r[0] == c and r[1] == who)
    d, n, k = med("direct", 2), med("nginx", 2), med(name, 2)
    np99, kp99 = med("nginx", 3), med(name, 3)
    print(f"{c[2:]:>6} {d:>13.0f} {n:>12.0f} {k:>{len(rate)}.0f} {k/n:>{len(ratio)-1}.2f}x | {np99:>8.2f}ms {kp99:>{len(p99)-2}.2f}ms {kp99/np99:>{len(ratio)-1}.2f}x")
# The spread of the same ratios round by round (each round's two runs
# follow each other): how far one run's figure can be trusted on a machine
# whose speed moves between rounds.
print()
for c in dict.fromkeys(r[0] for r in rows):
    pairs = list(zip((r for r in rows if r[0] == c and r[1] == "nginx"),
                     (r for r in rows if r[0] == c and r[1] == name)))
    rates = [float(k[2]) / float(n[2]) for n, k in pairs]
    tails = [float(k[3]) / float(n[3]) for n, k in pairs]
    print(f"   {c}: {name}/nginx per round, throughput {min(rates):.2f}-{max(rates):.2f}x, p99 {min(tails):.2f}-{max(tails):.2f}x")
PY
  echo
  echo "$name RSS: idle $rss_idle, after the load $rss_loaded, ${SETTLE}s later $rss_settled, $((2 * SETTLE))s later $rss_later (load now $(cut -d' ' -f1-3 /proc/loadavg))"
}
