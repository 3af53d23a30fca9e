#!/usr/bin/env bash
# Lists with 1,000 apps in 50 spaces (20 each): `GET /v3/apps`, and
# `/v3/processes` and `/v3/audit_events` (one web process and one
# `audit.app.create` per app), as the admin (no visibility filter) and as a
# space developer of 5 spaces (narrowed to its spaces). Per binary, one Kiln
# (`kiln server --roles api,bbs` on 127.0.0.1, no cell or router needed),
# seeded through the API; then, per list and caller, N sequential requests
# timed by curl (`time_total`). Prints p50/p99 in ms.
#
# With BASELINE=path/to/kiln, that binary is measured too, in the same run
# and the same way (per list and caller, this tree's round and then the
# baseline's, both servers up), and the table gives this tree's time over the
# baseline's
# (below 1.00x: faster). Build the baseline from the commit before the
# lists moved to SQL paging (999e103: in-memory filtering and paging):
#   git worktree add --detach ../base 999e103
#   (cd ../base && CARGO_TARGET_DIR=../tgt-base cargo build -p kiln --bin kiln)
#   BASELINE=../tgt-base/debug/kiln bench/list-apps.sh
#   KILN=target/release/kiln N=500 bench/list-apps.sh
# Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
KILN=${KILN:-$TARGET/debug/kiln}
BASELINE=${BASELINE:-}
N=${N:-200}
[ -x "$KILN" ] || cargo build -q -p kiln --bin kiln
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || { echo "BASELINE=$BASELINE is not executable" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

token() { # API USER PASSWORD
    curl -sf -u cf: "$1/oauth/token" -d grant_type=password -d "username=$2" -d "password=$3" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
post() { # API TOKEN PATH JSON -> guid
    curl -sf -H "authorization: bearer $2" -H 'content-type: application/json' "$1$3" -d "$4" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("guid") or d.get("id"))'
}

# Starts BINARY as NAME and seeds it; sets api_NAME, admin_NAME, dev_NAME.
start_seeded() { # NAME BINARY
    local name=$1 bin=$2 port bbs_port api admin org user dev
    port=$(free_port)
    bbs_port=$(free_port)
    KILN_ADMIN_PASSWORD=bench-pw "$bin" server --roles api,bbs --data-dir "$work/$name" \
        --api-listen "127.0.0.1:$port" --bbs-listen "127.0.0.1:$bbs_port" >"$work/$name.log" 2>&1 &
    pids+=($!)
    api=http://127.0.0.1:$port
    for _ in $(seq 1 150); do curl -sf "$api/v3/info" >/dev/null && break; sleep 0.2; done
    admin=$(token "$api" admin bench-pw)
    echo "seeding $name ($bin): 1 org, 50 spaces, 1,000 apps..."
    org=$(post "$api" "$admin" /v3/organizations '{"name":"bench"}')
    local spaces=()
    for s in $(seq 1 50); do
        spaces+=("$(post "$api" "$admin" /v3/spaces "{\"name\":\"s$s\",\"relationships\":{\"organization\":{\"data\":{\"guid\":\"$org\"}}}}")")
    done
    for s in $(seq 0 49); do
        for a in $(seq 1 20); do
            echo "{\"name\":\"a$a\",\"relationships\":{\"space\":{\"data\":{\"guid\":\"${spaces[$s]}\"}}},\"metadata\":{\"labels\":{\"tier\":\"t$((a % 4))\"}}}"
        done
    done | xargs -d '\n' -P 4 -I{} curl -sf -o /dev/null -H "authorization: bearer $admin" \
        -H 'content-type: application/json' "$api/v3/apps" -d {}
    user=$(post "$api" "$admin" /Users '{"userName":"dev","password":"dev-pw","emails":[{"value":"dev@example.com"}]}')
    post "$api" "$admin" /v3/users "{\"guid\":\"$user\"}" >/dev/null
    role() { post "$api" "$admin" /v3/roles "{\"type\":\"$1\",\"relationships\":{\"user\":{\"data\":{\"guid\":\"$user\"}},\"$2\":{\"data\":{\"guid\":\"$3\"}}}}" >/dev/null; }
    role organization_user organization "$org"
    for s in 0 10 20 30 40; do role space_developer space "${spaces[$s]}"; done
    dev=$(token "$api" dev dev-pw)
    printf -v "api_$name" %s "$api"
    printf -v "admin_$name" %s "$admin"
    printf -v "dev_$name" %s "$dev"
}

# total_results, p50 and p99 in ms of N requests.
measure() { # API TOKEN PATH
    local total
    total=$(curl -sf -H "authorization: bearer $2" "$1$3" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["pagination"]["total_results"])')
    for _ in $(seq 1 "$N"); do
        curl -s -o /dev/null -w '%{time_total}\n' -H "authorization: bearer $2" "$1$3"
    done | sort -n | awk -v n="$N" -v total="$total" '
        { t[NR] = $1 * 1000 }
        END { printf "%d %.1f %.1f\n", total, t[int(n * 0.5 + 0.5)], t[int(n * 0.99 + 0.5)] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

start_seeded new "$KILN"
[ -z "$BASELINE" ] || start_seeded base "$BASELINE"

queries=(
    "/v3/apps"
    "/v3/apps?per_page=5000"
    "/v3/apps?label_selector=tier=t1&per_page=5000"
    "/v3/processes"
    "/v3/processes?per_page=5000"
    "/v3/audit_events?per_page=50"
    "/v3/audit_events?types=audit.app.create&order_by=-created_at&per_page=1"
)
echo
echo "$N requests per list and caller; p50/p99 in ms; this tree: $KILN${BASELINE:+; baseline: $BASELINE}"
if [ -z "$BASELINE" ]; then
    printf '%-70s %-5s %6s %8s %8s\n' list as total p50 p99
else
    printf '%-70s %-5s %6s %8s %8s %8s %8s %8s %8s\n' list as total base_p50 new_p50 base_p99 new_p99 p50_ratio p99_ratio
fi
for q in "${queries[@]}"; do
    for who in admin dev; do
        tok_new=${who}_new
        read -r nt n50 n99 < <(measure "$api_new" "${!tok_new}" "$q")
        if [ -z "$BASELINE" ]; then
            printf '%-70s %-5s %6s %8s %8s\n' "$q" "$who" "$nt" "$n50" "$n99"
            continue
        fi
        tok_base=${who}_base
        read -r bt b50 b99 < <(measure "$api_base" "${!tok_base}" "$q")
        [ "$bt" = "$nt" ] || echo "warning: $q as $who: baseline counts $bt, this tree $nt" >&2
        printf '%-70s %-5s %6s %8s %8s %8s %8s %8s %8s\n' "$q" "$who" "$nt" "$b50" "$n50" "$b99" "$n99" \
            "$(ratio "$n50" "$b50")" "$(ratio "$n99" "$b99")"
    done
done
