#!/usr/bin/env bash
# The work of a push done by hand, the floor `bench/push.sh` compares Kiln
# with: zip the app, unzip it, run the example buildpack (detect, supply,
# finalize, release) in a runc container, tar the droplet, untar it, start
# the app in a second container, wait for its first HTTP 200. Both
# containers use the host's network and a read-only root of the host's /usr,
# as cheap as containers get here. The two OCI bundles are written once, in
# BARE_DIR, outside the timed work. Needs root, runc, zip, unzip, curl.
# Usage: bench/bare-push.sh APP_DIR BUILDPACK_DIR PORT
set -euo pipefail
app=$(realpath "$1") buildpack=$(realpath "$2") port=$3
dir=${BARE_DIR:-/tmp/kiln-bare-push}
stage_tmp=$dir/stage-tmp run_tmp=$dir/run-tmp
id=bare-$$
trap 'runc --root "$dir/state" delete -f "$id-stage" >/dev/null 2>&1 || true
      runc --root "$dir/state" delete -f "$id-run" >/dev/null 2>&1 || true' EXIT

# A bundle: read-only root with the host's /usr and the merged-/usr links,
# a writable /tmp bound from the host, the buildpack read-only, host network.
bundle() { # NAME TMPDIR ARGS...
  local name=$1 tmp=$2; shift 2
  mkdir -p "$dir/$name/rootfs/usr" "$dir/$name/rootfs/tmp" "$dir/$name/rootfs/buildpack"
  for d in bin lib lib64 sbin; do ln -sfn "usr/$d" "$dir/$name/rootfs/$d"; done
  python3 - "$dir/$name" "$tmp" "$buildpack" "$@" <<'PY'
import json, sys
d, tmp, bp, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
c = {"ociVersion": "1.0.2",
     "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args,
                 "env": ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp"], "cwd": "/tmp"},
     "root": {"path": "rootfs", "readonly": True},
     "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
                {"destination": "/buildpack", "type": "bind", "source": bp, "options": ["rbind", "ro"]},
                {"destination": "/tmp", "type": "bind", "source": tmp, "options": ["rbind", "rw"]}],
     "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}}
json.dump(c, open(d + "/config.json", "w"))
PY
}
# Bundles left by another checkout name its buildpack: write them again.
if [ ! -f "$dir/run/config.json" ] || [ "$(cat "$dir/buildpack" 2>/dev/null)" != "$buildpack" ]; then
  mkdir -p "$stage_tmp" "$run_tmp"
  bundle stage "$stage_tmp" /bin/sh /tmp/stage.sh
  bundle run "$run_tmp" /bin/sh /tmp/run.sh
  echo "$buildpack" >"$dir/buildpack"
fi
rm -rf "$stage_tmp" "$run_tmp" "$dir/app.zip"
mkdir -p "$stage_tmp/app" "$stage_tmp/deps/0" "$stage_tmp/cache" "$stage_tmp/profile.d" "$run_tmp"

# 1. zip and unzip (what the CLI uploads and the platform extracts).
(cd "$app" && zip -qr "$dir/app.zip" .)
unzip -q "$dir/app.zip" -d "$stage_tmp/app"

# 2. stage in a container: the buildpack contract, then the droplet tarball.
cat > "$stage_tmp/stage.sh" <<'SH'
set -e
cd /tmp
/buildpack/bin/detect app >/dev/null
/buildpack/bin/supply app cache deps 0
/buildpack/bin/finalize app cache deps 0 profile.d
/buildpack/bin/release app >release.yml
mkdir -p droplet && mv app deps profile.d droplet/
tar -czf droplet.tgz -C droplet .
SH
runc --root "$dir/state" run --bundle "$dir/stage" "$id-stage" >/dev/null

# 3. run the droplet in a second container and wait for the first 200.
tar -xzf "$stage_tmp/droplet.tgz" -C "$run_tmp"
cat > "$run_tmp/run.sh" <<SH
cd /tmp/app && for f in /tmp/profile.d/*.sh; do . "\$f"; done
export PORT=$port DEPS_DIR=/tmp/deps
exec python3 app.py
SH
runc --root "$dir/state" run --detach --bundle "$dir/run" "$id-run" >/dev/null 2>&1
for _ in $(seq 1 1000); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && exit 0
  sleep 0.01
done
echo "bare-push: no 200 from the app" >&2
exit 1
