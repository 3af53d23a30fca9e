#!/usr/bin/env bash
# BBS failover time over several kills: runs the cluster test
# (crates/kiln/tests/e2e/cluster.rs, a_cluster_of_two_nodes_survives_losing_the_active_bbs)
# RUNS times; each run starts two nodes on a fresh PostgreSQL and moto S3,
# pushes an app, SIGKILLs the node whose BBS is active and measures, from
# the kill, (1) until the other node's BBS is active and (2) until the app
# answers 200 again through the surviving node's router. The floor is the
# lease TTL (5 s, `kiln_bbs::lock::LEASE_TTL`): a standby cannot take over
# before the dead holder's lease ends; the ratio to it is printed. There is
# no Diego here to compare with (Locket's TTL is 15 s). The second time
# depends on where the auction put the app: on the surviving cell it is the
# BBS failover plus a stats read (~5 s); on the killed node's cell the new
# BBS first waits one cell TTL (15 s) before it declares that cell lost and
# starts the instance again (~21 s).
# Needs what the e2e suite needs (root, runc, postgresql, moto, faketime).
# Usage: bench/failover.sh [RUNS]   (default 3)
set -euo pipefail
runs=${1:-3}
cd "$(dirname "$0")/.."
ttl=5
bbs=() app=()
for i in $(seq 1 "$runs"); do
  out=$(cargo nextest run -p kiln --test e2e a_cluster_of_two_nodes_survives_losing_the_active_bbs \
        --no-capture 2>&1) || { echo "$out" | tail -40; echo "run $i failed" >&2; exit 1; }
  b=$(echo "$out" | sed -n "s/.*BBS active \([0-9.]*\)s after SIGKILL.*/\1/p" | head -1)
  a=$(echo "$out" | sed -n "s/.*router \([0-9.]*\)s after SIGKILL.*/\1/p" | head -1)
  echo "run $i: bbs active after ${b}s, app served again after ${a}s"
  bbs+=("$b") app+=("$a")
done
summary() { # NAME VALUES...
  local name=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v name="$name" -v ttl="$ttl" '
    { v[NR] = $1 }
    END { med = v[int((NR + 1) / 2)];
          printf "%-22s min %6.2fs  median %6.2fs  max %6.2fs  median/TTL %.2f\n",
                 name, v[1], med, v[NR], med / ttl }'
}
summary "bbs failover" "${bbs[@]}"
summary "app served again" "${app[@]}"
