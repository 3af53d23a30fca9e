#!/usr/bin/env bash
# Scheduler benchmark: simulated cells (heartbeat, read their work when work
# is placed on them and every 30 s, report RUNNING, as the rep does; set
# SCHED_BULK_SYNC_S=2 for a 2 s one; kiln-cell's is 30 s too) drive the in-process BBS through BbsClient
# (crates/kiln-bbs/examples/scheduler.rs). Prints, per size, the time to
# desire, to place and to run everything, one convergence pass, the
# re-placement after 10% of the cells vanish (from their presence expiring),
# peak RSS and database size; for this tree and, side by side with ratios,
# for the BBS of BASE (default: main), built from `git archive` in a temp
# directory with the same benchmark source. The CPU seconds the process
# used (BBS and simulated cells together) are printed too: on a shared
# machine they depend on the load much less than the wall-clock figures.
#   bench/scheduler.sh                 # 25,000/100 both; 250,000/1,000 this tree
#   BASE_LARGE=1 bench/scheduler.sh    # also 250,000/1,000 on BASE
#   SIZES="2500:10" bench/scheduler.sh # other sizes, INSTANCES:CELLS
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-main}
SIZES=${SIZES:-"25000:100 250000:1000"}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build -q --release -p kiln-bbs --example scheduler
here="$work/scheduler-kiln"
cp "$TARGET/release/examples/scheduler" "$here"

# BASE from `git archive` (no worktree), built in a target dir of its own
# (the workspace crates share names and hashes with this tree's, and the
# archive's old mtimes would pass for fresh), seeded once from this tree's
# release build so the dependencies are not built again; the archive's
# sources are touched so its own crates are.
base_target="$TARGET/bench-base"
[ -d "$base_target/release" ] || { mkdir -p "$base_target" && cp -a "$TARGET/release" "$base_target/"; }
mkdir "$work/base"
git archive "$BASE" | tar -x -C "$work/base"
mkdir -p "$work/base/crates/kiln-bbs/examples"
cp crates/kiln-bbs/examples/scheduler.rs "$work/base/crates/kiln-bbs/examples/"
find "$work/base/crates" -type f -exec touch {} +
(cd "$work/base" && CARGO_TARGET_DIR="$base_target" cargo build -q --release -p kiln-bbs --example scheduler)
base="$work/scheduler-base"
cp "$base_target/release/examples/scheduler" "$base"

field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.1fx", a / b; else print "-" }'; }

# The machine's load, printed with the figures: on a shared machine they
# mean little without it.
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
for size in $SIZES; do
    instances=${size%:*}
    cells=${size#*:}
    echo "== $instances instances on $cells cells (load before: $(cut -d' ' -f1-3 /proc/loadavg))"
    new=$("$here" "$instances" "$cells" kiln)
    echo "$new"
    echo "   load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$instances" -le 25000 ] || [ "${BASE_LARGE:-0}" = 1 ]; then
        old=$("$base" "$instances" "$cells" "$BASE")
        echo "$old"
        printf '%-28s %12s %12s %8s\n' metric "$BASE" kiln "$BASE/kiln"
        for f in desire_s placed_s placed_after_desire_s running_s converge_s replaced_after_expiry_s rerunning_after_expiry_s peak_rss_mb db_mb wal_peak_mb running_cpu_s replaced_cpu_s cpu_s replaced_syncs; do
            a=$(field "$old" $f)
            b=$(field "$new" $f)
            printf '%-28s %12s %12s %8s\n' "$f" "$a" "$b" "$(ratio "$a" "$b")"
        done
    else
        echo "$BASE at this size: not run (BASE_LARGE=1 runs it too, ~80 s a run)."
    fi
done
