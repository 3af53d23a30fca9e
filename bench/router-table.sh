#!/usr/bin/env bash
# The router's route table at 1,000, 10,000 and 100,000 routes (issue 16):
# CPU nanoseconds per lookup and the ratio to the 1,000-route table (flat is
# the goal), the CPU and wall-clock time to rebuild the table (CPU time
# holds on a shared machine; the load average is printed), and per-lookup
# latency on the 100,000-route table alone and while another thread
# rebuilds and swaps it in back to back (updates must not stall requests).
#
#   bench/router-table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -q -p kiln-router --bench table
