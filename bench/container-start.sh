#!/usr/bin/env bash
# Container start time with and without networking, side by side with a
# bare `runc run` of the same bundle, in one run (needs root and runc):
#   bare `runc run` | Kiln's runtime, host network | Kiln's runtime with the
#   container's own network namespace, veth and port mapping set up first.
# Each figure is create -> /bin/true exited, median of RUNS interleaved
# runs; prints the ratios against bare runc. Twice: with each networked
# container's namespace removed right after its run (the kernel's late
# cleanup of it then competes with the next runs), and with the removals
# after all runs. SUBNET must be free on this machine (the cell refuses one
# that overlaps an address here).
#   RUNS=30 SUBNET=10.199.0.0/24 bench/container-start.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}
SUBNET=${SUBNET:-10.199.0.0/24}
PROFILE=${PROFILE:-dev}
cargo build -q -p kiln-cell --example container_start --profile "$PROFILE"
dir=debug
[ "$PROFILE" = dev ] || dir=$PROFILE
bin="${CARGO_TARGET_DIR:-target}/$dir/examples/container_start"
"$bin" "$RUNS" "$SUBNET"
echo
"$bin" "$RUNS" "$SUBNET" deferred
