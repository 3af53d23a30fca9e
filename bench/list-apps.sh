#!/usr/bin/env bash
# `GET /v3/apps` with 1,000 apps in 50 spaces (20 each), as the admin (no
# visibility filter) and as a space developer of 5 spaces (the fetcher's SQL
# narrows to its spaces and a label selector runs in SQL too). One Kiln
# (`kiln server --roles api,bbs` on 127.0.0.1, no cell or router needed),
# seeded through the API; then, per caller, N sequential requests timed by
# curl (`time_total`). Prints p50/p99 in ms and developer/admin ratios; the
# admin is the baseline: the same list with nothing to narrow.
#   bench/list-apps.sh                  # N=200, the debug build
#   KILN=target/release/kiln N=500 bench/list-apps.sh
# Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
KILN=${KILN:-$TARGET/debug/kiln}
N=${N:-200}
[ -x "$KILN" ] || cargo build -q -p kiln --bin kiln

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bbs_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KILN_ADMIN_PASSWORD=bench-pw "$KILN" server --roles api,bbs --data-dir "$work/data" \
    --api-listen "127.0.0.1:$port" --bbs-listen "127.0.0.1:$bbs_port" >"$work/kiln.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
api=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -sf "$api/v3/info" >/dev/null && break; sleep 0.2; done

token() { # USER PASSWORD
    curl -sf -u cf: "$api/oauth/token" -d grant_type=password -d "username=$1" -d "password=$2" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
admin=$(token admin bench-pw)
post() { # TOKEN PATH JSON -> guid
    curl -sf -H "authorization: bearer $1" -H 'content-type: application/json' "$api$2" -d "$3" |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("guid") or d.get("id"))'
}

echo "seeding 1 org, 50 spaces, 1,000 apps..."
org=$(post "$admin" /v3/organizations '{"name":"bench"}')
spaces=()
for s in $(seq 1 50); do
    spaces+=("$(post "$admin" /v3/spaces "{\"name\":\"s$s\",\"relationships\":{\"organization\":{\"data\":{\"guid\":\"$org\"}}}}")")
done
for s in $(seq 0 49); do
    for a in $(seq 1 20); do
        echo "{\"name\":\"a$a\",\"relationships\":{\"space\":{\"data\":{\"guid\":\"${spaces[$s]}\"}}},\"metadata\":{\"labels\":{\"tier\":\"t$((a % 4))\"}}}"
    done
done | xargs -d '\n' -P 4 -I{} curl -sf -o /dev/null -H "authorization: bearer $admin" \
    -H 'content-type: application/json' "$api/v3/apps" -d {}
user=$(post "$admin" /Users '{"userName":"dev","password":"dev-pw","emails":[{"value":"dev@example.com"}]}')
post "$admin" /v3/users "{\"guid\":\"$user\"}" >/dev/null
role() { post "$admin" /v3/roles "{\"type\":\"$1\",\"relationships\":{\"user\":{\"data\":{\"guid\":\"$user\"}},\"$2\":{\"data\":{\"guid\":\"$3\"}}}}" >/dev/null; }
role organization_user organization "$org"
for s in 0 10 20 30 40; do role space_developer space "${spaces[$s]}"; done
dev=$(token dev dev-pw)

# p50 and p99 in ms of N requests, and the list's total_results.
measure() { # TOKEN QUERY
    local total
    total=$(curl -sf -H "authorization: bearer $1" "$api/v3/apps$2" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["pagination"]["total_results"])')
    for _ in $(seq 1 "$N"); do
        curl -s -o /dev/null -w '%{time_total}\n' -H "authorization: bearer $1" "$api/v3/apps$2"
    done | sort -n | awk -v n="$N" -v total="$total" '
        { t[NR] = $1 * 1000 }
        END { printf "%d %.1f %.1f\n", total, t[int(n * 0.5 + 0.5)], t[int(n * 0.99 + 0.5)] }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

echo "GET /v3/apps, $N requests each ($KILN)"
printf '%-34s %8s %8s %8s %8s %8s %10s %10s\n' query admin_n dev_n adm_p50 dev_p50 adm_p99 dev_p99 dev/adm_p50
for q in "" "?per_page=5000" "?label_selector=tier=t1&per_page=5000"; do
    read -r an a50 a99 < <(measure "$admin" "$q")
    read -r dn d50 d99 < <(measure "$dev" "$q")
    printf '%-34s %8s %8s %8s %8s %8s %10s %10s\n' "${q:-(default page of 50)}" "$an" "$dn" "$a50" "$d50" "$a99" "$d99" "$(ratio "$d50" "$a50")"
done
