#!/usr/bin/env bash
# Kiln on its embedded stores (SQLite files, a blob directory) against Kiln
# on shared ones (PostgreSQL, an S3 bucket served by moto), side by side in
# one run: two all-in-one servers on 127.0.0.1, each with its own cell and
# router. Per store: one warm-up push, then ROUNDS pushes of a new app
# (examples/hello), each timed from `kiln push` to the first HTTP 200
# through the router, alternating between the two; then APPS more apps are created and `GET /v3/apps` is
# loaded with wrk for SECS seconds (CONNS connections). Prints each push,
# the medians, the p50/p99 latencies and the ratios shared/embedded.
#   bench/storage.sh                          # the debug build
#   ROUNDS=5 APPS=500 SECS=20 bench/storage.sh
# Needs root, runc, curl, wrk, python3, Debian's postgresql and moto
# (scripts/install-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
KILN=${KILN:-$TARGET/debug/kiln}
ROUNDS=${ROUNDS:-3}
APPS=${APPS:-200}
SECS=${SECS:-10}
CONNS=${CONNS:-4}
MOTO=${KILN_MOTO_SERVER:-/opt/kiln-py/bin/moto_server}
PG_BIN=${KILN_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
[ -x "$KILN" ] || cargo build -q -p kiln --bin kiln
for tool in curl wrk python3 runc "$MOTO" "$PG_BIN/initdb"; do
    command -v "$tool" >/dev/null || { echo "storage.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/kiln-bench-storage.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -d "$work/pg" ] && su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $work/pg -m immediate -w stop" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# COUNT /24s under 10.0.0.0/8 that no interface here uses, chosen before
# either cell starts (a cell's bridge appears only once it runs).
free_subnets() { # COUNT
    local taken found=0; taken=$(ip -4 -o addr show | awk '{print $4}')
    for n in $(seq 0 500); do
        local net="10.$((120 + n / 256)).$((n % 256))"
        grep -q "^$net\." <<<"$taken" && continue
        echo "$net.0/24"; found=$((found + 1))
        [ "$found" = "$1" ] && return
    done
}
read -r -d '' subnet_embedded subnet_shared < <(free_subnets 2) || true

echo "==> PostgreSQL (Debian's, defaults but for the port) and moto on 127.0.0.1"
pg_port=$(free_port)
install -d -o postgres "$work/pg" "$work/pgsock"
su postgres -s /bin/sh -c "$PG_BIN/initdb -D $work/pg -U kiln --auth=trust" >/dev/null
su postgres -s /bin/sh -c "$PG_BIN/pg_ctl -D $work/pg -l $work/pgsock/pg.log -w -o '-p $pg_port -c listen_addresses=127.0.0.1 -k $work/pgsock' start" >/dev/null
moto_port=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$moto_port/" && break; sleep 0.1; done
curl -fs -o /dev/null -X PUT "http://127.0.0.1:$moto_port/kiln-bench"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret

declare -A api router
start() { # NAME SUBNET EXTRA-FLAGS...
    local name=$1 subnet=$2; shift 2
    api[$name]=$(free_port) router[$name]=$(free_port)
    KILN_ADMIN_PASSWORD=bench-pw "$KILN" server --data-dir "$work/$name" --domain localhost \
        --api-listen "127.0.0.1:${api[$name]}" --router-listen "127.0.0.1:${router[$name]}" \
        --cell-id "bench-$name-$$" --cell-network "$subnet" "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 300); do curl -fs -o /dev/null "http://127.0.0.1:${api[$name]}/" && break; sleep 0.2; done
    curl -fs -o /dev/null "http://127.0.0.1:${api[$name]}/" || { cat "$work/$name.log"; exit 1; }
    KILN_HOME=$work/$name-home "$KILN" login -a "http://127.0.0.1:${api[$name]}" -u admin -p bench-pw >/dev/null
    KILN_HOME=$work/$name-home "$KILN" create-buildpack python examples/buildpacks/python 1 >/dev/null
}
echo "==> two Kiln servers: embedded (SQLite + directory), shared (PostgreSQL + S3)"
start embedded "$subnet_embedded"
start shared "$subnet_shared" --database-url "postgres://kiln@127.0.0.1:$pg_port/postgres" \
    --blobstore-url "s3://kiln-bench?endpoint=http://127.0.0.1:$moto_port&region=us-east-1"
# The cell of the server started first now competes for the same cores:
# the rounds alternate so that neither always goes first.

now_ms() { date +%s%3N; }
push_ms() { # NAME APP -> ms from `kiln push` to the first 200
    local t; t=$(now_ms)
    KILN_HOME=$work/$1-home "$KILN" push "$2" -p examples/hello >"$work/push-$1-$2.log" 2>&1 ||
        { cat "$work/push-$1-$2.log" "$work/$1.log" >&2; exit 1; }
    until curl -fs -o /dev/null -H "Host: $2.localhost" "http://127.0.0.1:${router[$1]}/"; do sleep 0.01; done
    echo $(( $(now_ms) - t ))
}
# One push each first, not counted: the first staging on a cell prepares
# its stack and caches the buildpack.
for name in embedded shared; do echo "warm-up push on $name: $(push_ms "$name" warmup) ms"; done
declare -A pushes=([embedded]="" [shared]="")
for round in $(seq 1 "$ROUNDS"); do
    order="embedded shared"; [ $((round % 2)) = 0 ] && order="shared embedded"
    for name in $order; do pushes[$name]+=" $(push_ms "$name" "app$round")"; done
    echo "round $round: push to first 200: embedded $(awk '{print $NF}' <<<"${pushes[embedded]}") ms, shared $(awk '{print $NF}' <<<"${pushes[shared]}") ms"
done

echo "==> $APPS more apps on each, then GET /v3/apps with wrk ($CONNS connections, ${SECS}s each)"
token() {
    curl -fs -u cf: "http://127.0.0.1:${api[$1]}/oauth/token" -d grant_type=password -d username=admin -d password=bench-pw |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
declare -A tokens
for name in embedded shared; do
    tokens[$name]=$(token "$name")
    space=$(curl -fs -H "authorization: bearer ${tokens[$name]}" "http://127.0.0.1:${api[$name]}/v3/spaces" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["guid"])')
    for a in $(seq 1 "$APPS"); do
        echo "{\"name\":\"seed$a\",\"relationships\":{\"space\":{\"data\":{\"guid\":\"$space\"}}}}"
    done | xargs -d '\n' -P 4 -I{} curl -fs -o /dev/null -H "authorization: bearer ${tokens[$name]}" \
        -H 'content-type: application/json' "http://127.0.0.1:${api[$name]}/v3/apps" -d {}
done
latency() { # NAME -> "p50_ms p99_ms requests_per_s"
    wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -H "Authorization: bearer ${tokens[$1]}" \
        "http://127.0.0.1:${api[$1]}/v3/apps" | python3 -c '
import re, sys
text = sys.stdin.read()
def ms(label):
    m = re.search(r"^\s*" + label + r"\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
rate = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
if non2xx:
    sys.exit("wrk: %s non-2xx answers" % non2xx.group(1))
print("%.2f %.2f %s" % (ms("50%"), ms("99%"), rate))'
}
read -r e50 e99 erate < <(latency embedded)
read -r s50 s99 srate < <(latency shared)

python3 - "${pushes[embedded]}" "${pushes[shared]}" "$e50 $e99 $erate" "$s50 $s99 $srate" "$APPS" "$KILN" <<'PY'
import statistics, sys
emb = [int(x) for x in sys.argv[1].split()]
sha = [int(x) for x in sys.argv[2].split()]
e50, e99, erate = (float(x) for x in sys.argv[3].split())
s50, s99, srate = (float(x) for x in sys.argv[4].split())
me, ms = statistics.median(emb), statistics.median(sha)
print()
print(f"Kiln {sys.argv[6]}; embedded = SQLite + blob directory, shared = PostgreSQL + S3 (moto)")
print(f"{'':34} {'embedded':>10} {'shared':>10} {'shared/embedded':>16}")
print(f"{'push to first 200, median (ms)':34} {me:>10.0f} {ms:>10.0f} {ms / me:>15.2f}x")
print(f"{'GET /v3/apps p50 (ms), ' + sys.argv[5] + '+ apps':34} {e50:>10.2f} {s50:>10.2f} {s50 / e50:>15.2f}x")
print(f"{'GET /v3/apps p99 (ms)':34} {e99:>10.2f} {s99:>10.2f} {s99 / e99:>15.2f}x")
print(f"{'GET /v3/apps requests/s':34} {erate:>10.0f} {srate:>10.0f} {srate / erate:>15.2f}x")
PY
