#!/usr/bin/env bash
# Pulling a Docker image onto a cell, Kiln against its floor, side by side
# in one run: `skopeo copy` to an OCI layout + `umoci unpack` (the floor)
# versus Kiln's `Registry::resolve` + `LayerCache::rootfs` with an empty
# cache (cold) and with the layers cached (warm, what a second instance
# pays). A local Debian docker-registry on 127.0.0.1 serves a 5-layer
# image of about 18 MB built by the driver. Prints medians and ratios to the
# floor. Needs docker-registry, skopeo, umoci, busybox-static and root
# (whiteouts and owners). Usage: bench/image-pull.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p kiln-image --features test-support --example pull_bench -- "${1:-5}"
