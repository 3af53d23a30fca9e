#!/usr/bin/env bash
# The quick start: build Kiln, start the all-in-one server in the background,
# log in, register the sample buildpack and push the sample app, then ask the
# router for it. Idempotent: run it again to re-push.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-target/debug/kiln}
DATA_DIR=${KILN_DATA_DIR:-$PWD/.kiln-data}
export KILN_HOME=${KILN_HOME:-$DATA_DIR/home}
API=${KILN_API_LISTEN:-127.0.0.1:9022}
ROUTER=${KILN_ROUTER_LISTEN:-127.0.0.1:8080}
DOMAIN=${KILN_DOMAIN:-localhost}

mkdir -p "$DATA_DIR"
pidfile=$DATA_DIR/server.pid
if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "==> kiln server already running (pid $(cat "$pidfile"))"
else
  echo "==> starting kiln server (log: $DATA_DIR/server.log)"
  nohup "$KILN" server --data-dir "$DATA_DIR" --api-listen "$API" --router-listen "$ROUTER" \
    --domain "$DOMAIN" >"$DATA_DIR/server.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    curl -fsS "http://$API/" >/dev/null 2>&1 && break
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$DATA_DIR/server.log"; exit 1; }
    sleep 0.2
  done
fi

password=${KILN_ADMIN_PASSWORD:-$(cat "$DATA_DIR/api/admin-password" 2>/dev/null || true)}
if [ -z "$password" ]; then
  echo "up: set KILN_ADMIN_PASSWORD to the admin password you started this data dir with" >&2
  exit 1
fi
"$KILN" login -a "http://$API" -u admin -p "$password"
if ! "$KILN" buildpacks | grep -q '\bpython\b'; then
  "$KILN" create-buildpack python examples/buildpacks/python 1
fi
"$KILN" push hello -p examples/hello

url="http://hello.$DOMAIN:${ROUTER##*:}/"
echo
echo "==> curl $url"
curl -fsS --retry 10 --retry-delay 1 --retry-all-errors --resolve "hello.$DOMAIN:${ROUTER##*:}:${ROUTER%:*}" "$url"
echo
echo "Kiln is up. Your app: $url   (stop the platform with: make down)"
