#!/usr/bin/env bash
# What the cell's limits add to a container's start, side by side in one
# run, each against a bare `runc run` of /usr/bin/true in a read-only bundle
# with the host's /usr (the issue's floor):
#   bare     runc run, no limits, no seccomp
#   seccomp  + Kiln's seccomp allowlist (read from crates/kiln-cell/src/runtime/seccomp.rs)
#   limits   + memory, memory+swap, cpu.shares, pids (cgroup writes)
#   disk     + a 1 GiB sparse ext4 image made, loop-mounted as /tmp, unmounted, removed
#   kiln     all of the above, with `runc run --keep` then `runc delete`, as the cell runs it
# Needs root, runc, mkfs.ext4 and python3. Prints the median of N runs of
# each (interleaved, so drift hits all alike) and the ratio to bare.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
work=$(mktemp -d /tmp/kiln-bench-limits.XXXXXX)
root="$work/runc"
cleanup() {
  for id in $(runc --root "$root" list -q 2>/dev/null); do runc --root "$root" delete -f "$id" >/dev/null 2>&1 || true; done
  awk '{print $5}' /proc/self/mountinfo | grep "^$work/" | while read -r m; do umount -l "$m" || true; done
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/rootfs"/{usr,proc,dev,sys,tmp,etc}
for l in bin lib lib64 sbin; do ln -s "usr/$l" "$work/rootfs/$l"; done
python3 - "$work" crates/kiln-cell/src/runtime/seccomp.rs <<'PY'
import json, re, sys, copy
work, seccomp_rs = sys.argv[1], sys.argv[2]
src = open(seccomp_rs).read()
allowed = re.findall(r'"([a-z0-9_]+)"', src.split("const ALLOWED")[1].split("];")[0])
profile = {"defaultAction": "SCMP_ACT_ERRNO",
           "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
           "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"},
                        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}
base = {
    "ociVersion": "1.0.2",
    "process": {"terminal": False, "user": {"uid": 2000, "gid": 2000}, "args": ["/usr/bin/true"],
                "env": ["PATH=/usr/bin"], "cwd": "/", "noNewPrivileges": True,
                "capabilities": {k: [] for k in ["bounding", "effective", "inheritable", "permitted", "ambient"]}},
    "root": {"path": f"{work}/rootfs", "readonly": True},
    "hostname": "bench",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
               {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
               {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}],
    "linux": {"namespaces": [{"type": t} for t in ["pid", "ipc", "uts", "mount"]],
              "resources": {"devices": [{"allow": False, "access": "rwm"}]}},
}
mb = 256 * 1024 * 1024
def variant(name, seccomp=False, limits=False, disk=False):
    c = copy.deepcopy(base)
    if seccomp:
        c["linux"]["seccomp"] = profile
    if limits:
        c["linux"]["resources"].update({"memory": {"limit": mb, "swap": mb}, "cpu": {"shares": 30}, "pids": {"limit": 1024}})
    if disk:
        c["mounts"].append({"destination": "/tmp", "type": "bind", "source": f"{work}/disk-{name}", "options": ["rbind", "rw"]})
    import os
    os.makedirs(f"{work}/{name}", exist_ok=True)
    json.dump(c, open(f"{work}/{name}/config.json", "w"))
variant("bare"); variant("seccomp", seccomp=True); variant("limits", limits=True)
variant("disk", disk=True); variant("kiln", seccomp=True, limits=True, disk=True)
PY

now() { date +%s%N; }
disk_up() { truncate -s 1G "$work/$1.img"; mkfs.ext4 -q -F -m 0 -O ^has_journal -E nodiscard,lazy_itable_init=1 "$work/$1.img"; mkdir -p "$work/disk-$1"; mount -t ext4 -o loop,nosuid,nodev "$work/$1.img" "$work/disk-$1"; }
disk_down() { umount "$work/disk-$1"; rm -f "$work/$1.img"; }
run_once() { # variant, iteration → elapsed ns on stdout
  local v=$1 id="bench-$1-$2-$$" t0 t1
  t0=$(now)
  case $v in
    disk) disk_up "$v"; runc --root "$root" run --bundle "$work/$v" "$id" >/dev/null; disk_down "$v" ;;
    kiln) disk_up "$v"; runc --root "$root" run --keep --bundle "$work/$v" "$id" >/dev/null
          runc --root "$root" delete -f "$id"; disk_down "$v" ;;
    *) runc --root "$root" run --bundle "$work/$v" "$id" >/dev/null ;;
  esac
  t1=$(now)
  echo $((t1 - t0))
}

variants=(bare seccomp limits disk kiln)
declare -A samples
for i in $(seq 1 "$N"); do
  for v in "${variants[@]}"; do samples[$v]+="$(run_once "$v" "$i") "; done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bare=$(echo "${samples[bare]}" | median)
echo "container create -> /usr/bin/true exited -> removed, median of $N (ms), ratio to bare runc:"
for v in "${variants[@]}"; do
  m=$(echo "${samples[$v]}" | median)
  python3 -c "print(f'  {\"$v\":8s} {$m/1e6:7.1f} ms   {$m/$bare:5.2f}x')"
done
