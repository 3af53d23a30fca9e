#!/usr/bin/env bash
# Installs what Kiln needs from Debian's packages, only where it is missing:
# runc (the container runtime), iproute2 and nftables (the cell's container
# network: namespaces, veths, bridge, DNAT), python3 (the sample app's
# interpreter, taken from the host's /usr into the stack), curl (the quick
# start's check), mkfs.ext4 (each container's disk quota is an ext4 file
# system of its own) and git (the API clones custom buildpacks given by git
# URL).
set -euo pipefail
need=()
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
[ -x /usr/bin/python3 ] || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v git >/dev/null 2>&1 || need+=(git)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
[ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ] || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || [ -x /usr/sbin/losetup ] || [ -x /sbin/losetup ] || need+=(mount)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
