#!/usr/bin/env bash
# Installs what Kiln needs from Debian's packages, only where it is missing:
# runc (the container runtime), python3 (the sample app's interpreter, taken
# from the host's /usr into the stack), curl (the quick start's check) and git
# (the API clones custom buildpacks given by git URL).
set -euo pipefail
need=()
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/bin/python3 ] || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v git >/dev/null 2>&1 || need+=(git)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
