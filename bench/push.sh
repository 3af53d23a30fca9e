#!/usr/bin/env bash
# A warm, no-change `kiln push` of the sample app, from the command to the
# first HTTP 200 through the router, against the same work done by hand
# (bench/bare-push.sh), alternating, ROUNDS rounds in one run; prints each
# time, the medians and their ratio. Run `make up` first, with the same
# KILN. Debug or release: the baseline's work is all in programs Kiln runs
# too (zip, unzip, runc, tar, python, the buildpack's scripts), so a debug
# Kiln only adds its own slower orchestration, and its ratio is an upper
# bound of a release build's (what users run: `cargo build --release --bin
# kiln`, then `make down; KILN=target/release/kiln scripts/up.sh`). The
# binary measured is printed. Needs root, runc, zip, unzip, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN:-${CARGO_TARGET_DIR:-target}/release/kiln}
echo "measuring $KILN (a ${KILN%/kiln} build; ${ROUNDS:-3} rounds)"
DATA_DIR=${KILN_DATA_DIR:-$PWD/.kiln-data}
export KILN_HOME=${KILN_HOME:-$DATA_DIR/home}
ROUTER=${KILN_ROUTER_LISTEN:-127.0.0.1:8080}
ROUNDS=${ROUNDS:-3}
PORT=${BARE_PORT:-18555}
command -v zip >/dev/null && command -v unzip >/dev/null || apt-get install -y -qq zip unzip >/dev/null

now_ms() { date +%s%3N; }
kiln_push() {
  "$KILN" push hello -p examples/hello >/dev/null
  # push returns once an instance is RUNNING; the first 200 through the
  # router is what a user waits for.
  until curl -fsS -o /dev/null -H "Host: hello.localhost" "http://$ROUTER/"; do sleep 0.01; done
}
bare_push() { bench/bare-push.sh examples/hello examples/buildpacks/python "$PORT"; }

kiln_push # warm: the app exists, its files are on the platform
bare_push # and the bundles exist
kiln_times=() bare_times=()
for round in $(seq 1 "$ROUNDS"); do
  t=$(now_ms); kiln_push; kiln_times+=($(( $(now_ms) - t )))
  t=$(now_ms); bare_push; bare_times+=($(( $(now_ms) - t )))
  echo "round $round: kiln push ${kiln_times[-1]} ms, by hand ${bare_times[-1]} ms"
done
python3 - "${kiln_times[*]}" "${bare_times[*]}" <<'PY'
import statistics, sys
k = [int(x) for x in sys.argv[1].split()]
b = [int(x) for x in sys.argv[2].split()]
mk, mb = statistics.median(k), statistics.median(b)
print(f"median: kiln push {mk:.0f} ms, by hand {mb:.0f} ms, ratio {mk / mb:.2f}x")
PY
