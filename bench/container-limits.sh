#!/usr/bin/env bash
# What the cell's limits add to a container's start, side by side in one
# run, each against a bare `runc run` of /usr/bin/true in a read-only bundle
# with the host's /usr (the issue's floor):
#   bare     runc run, no limits, no seccomp
#   seccomp  + Kiln's seccomp allowlist (read from crates/kiln-cell/src/runtime/seccomp.rs)
#   limits   + memory, memory+swap, cpu.shares, pids (cgroup writes)
#   disk     + a 1 GiB sparse ext4 image copied from a template, loop-mounted as /tmp, unmounted, removed
#   kiln     all of the above, with `runc run --keep` then `runc delete`, as the cell runs it
# Needs root, runc, mkfs.ext4 and python3. Prints the median of N runs of
# each (interleaved, so drift hits all alike) and the ratio to bare.
# STEPS=1 instead prints where the kiln variant's time goes, run by run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
work=$(mktemp -d /tmp/kiln-bench-limits.XXXXXX)
root="$work/runc"
cleanup() {
  set +e
  for id in $(runc --root "$root" list -q 2>/dev/null); do runc --root "$root" delete -f "$id" >/dev/null 2>&1 || true; done
  awk '{print $5}' /proc/self/mountinfo | grep "^$work/" | while read -r m; do umount -l "$m" || true; done
  rm -rf "$work"
  for d in /sys/fs/cgroup/*/"${parent:-none}" /sys/fs/cgroup/"${parent:-none}"; do
    if [ -d "$d" ]; then find "$d" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true; rmdir "$d" || true; fi
  done
}
trap cleanup EXIT

mkdir -p "$work/rootfs"/{usr,proc,dev,sys,tmp,etc}
for l in bin lib lib64 sbin; do ln -s "usr/$l" "$work/rootfs/$l"; done
parent="kiln-bench-$$"
python3 - "$work" crates/kiln-cell/src/runtime/seccomp.rs "$parent" <<'PY'
import json, re, sys, copy
work, seccomp_rs, parent = sys.argv[1], sys.argv[2], sys.argv[3]
src = open(seccomp_rs).read()
allowed = re.findall(r'"([a-z0-9_]+)"', src.split("const ALLOWED")[1].split("];")[0])
profile = {"defaultAction": "SCMP_ACT_ERRNO",
           "architectures": ["SCMP_ARCH_X86_64"],
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
    # Under one parent, as the cell's containers are under /kiln: CPU
    # shares weigh containers against each other, not against the host.
    c["linux"]["cgroupsPath"] = f"/{parent}/{name}"
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
# As the cell does: one empty 1 GiB ext4 made once, copied (sparse) per container.
truncate -s 1G "$work/template.img"
mkfs.ext4 -q -F -m 0 -O ^has_journal -E nodiscard,lazy_itable_init=1 "$work/template.img"
disk_up() { cp --sparse=always --reflink=auto "$work/template.img" "$work/$1.img"; mkdir -p "$work/disk-$1"; mount -t ext4 -o loop,nosuid,nodev "$work/$1.img" "$work/disk-$1"; }
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

if [ -n "${STEPS:-}" ]; then # where the kiln variant's time goes
  for i in $(seq 1 "$N"); do
    id="steps-$i-$$"; t0=$(now); disk_up kiln; t1=$(now)
    runc --root "$root" run --keep --bundle "$work/kiln" "$id" >/dev/null; t2=$(now)
    runc --root "$root" delete -f "$id"; t3=$(now); disk_down kiln; t4=$(now)
    echo "disk up $(( (t1-t0)/1000000 )) ms, run $(( (t2-t1)/1000000 )) ms, delete $(( (t3-t2)/1000000 )) ms, disk down $(( (t4-t3)/1000000 )) ms"
  done
  exit 0
fi

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
