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
#   cpu_per_request LABEL URL PIDS [WRK ARGS...]
#       one `wrk -t1 -c64 -dDURATION` run against URL; prints the CPU time
#       per request of PIDS (a comma-separated list: the proxy's processes,
#       all their threads), user and system, their context switches per
#       request (voluntary/involuntary: a thread that is preempted or
#       sleeps costs the machine a switch), and, but for LABEL nginx, the
#       instance's CPU (pids in $instance_pids), wrk's (`perf stat`; `apt-get
#       install linux-perf`) and how idle the machine was. The whole path
#       (wrk + instance + proxy) per request goes to $work/cpu.totals. At 64
#       connections the 2 cores are nearly saturated, so the throughput
#       ratio follows the whole path's CPU per request, which is much
#       steadier than throughput on a shared machine.
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

# utime and stime (clock ticks) summed over a comma-separated list of pids.
cpu_ticks() {
  local pid user=0 sys=0
  for pid in ${1//,/ }; do
    read -r -a stat <"/proc/$pid/stat"
    # Fields 14 and 15 (all the process's threads); the command name
    # (field 2) has no spaces here.
    user=$((user + stat[13])) sys=$((sys + stat[14]))
  done
  echo "$user $sys"
}
# Voluntary and involuntary context switches of every thread of the pids.
ctx_switches() {
  local pid
  for pid in ${1//,/ }; do cat /proc/"$pid"/task/*/status; done |
    awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {print v + 0, n + 0}'
}
# Idle and total clock ticks of the whole machine.
machine_ticks() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t}' /proc/stat; }
cpu_per_request() {
  local label=$1 url=$2 pids=$3; shift 3
  local out=$work/cpu.$label reqs proxy0 proxy1 switches0 switches1 app0 app1 machine0 machine1
  proxy0=$(cpu_ticks "$pids") switches0=$(ctx_switches "$pids") app0=$(cpu_ticks "$instance_pids") machine0=$(machine_ticks)
  reqs=$(perf stat -x, -e task-clock -o "$out" -- wrk -t1 -c64 -d"$DURATION" "$@" "$url" | awk '/requests in/ {print $1}')
  proxy1=$(cpu_ticks "$pids") switches1=$(ctx_switches "$pids") app1=$(cpu_ticks "$instance_pids") machine1=$(machine_ticks)
  awk -F, '$3 == "task-clock" {print $1}' "$out" | paste -d' ' - <(echo "$proxy0 $proxy1 $app0 $app1 $machine0 $machine1 $switches0 $switches1") |
    awk -v n="$reqs" -v hz="$(getconf CLK_TCK)" -v who="$label" -v totals="$work/cpu.totals" '{
      us = 1e6 / hz / n
      user = ($4 - $2) * us; sys = ($5 - $3) * us; app = ($8 - $6 + $9 - $7) * us; wrk = $1 * 1000 / n
      total = wrk + app + user + sys
      printf "%s %.1f us/req (user %.1f + sys %.1f; switches %.2f/%.2f), whole path %.1f; ", who, user + sys, user, sys, ($16 - $14) / n, ($17 - $15) / n, total
      printf "%s %s\n", who, total >>totals
      if (who != "nginx") printf "(instance %.1f, wrk %.1f, machine idle %.0f%%) ", app, wrk, 100 * ($12 - $10) / ($13 - $11)
    }'
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
