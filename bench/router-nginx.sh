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
