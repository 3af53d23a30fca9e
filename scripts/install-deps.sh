#!/usr/bin/env bash
# Installs what Kiln needs from Debian's packages, only where it is missing:
# runc (the container runtime), iproute2 and nftables (the cell's container
# network: namespaces, veths, bridge, DNAT), python3 (the sample app's
# interpreter, taken from the host's /usr into the stack), curl (the quick
# start's check), mkfs.ext4 (each container's disk quota is an ext4 file
# system of its own), git (the API clones custom buildpacks given by git
# URL), and for Docker images (issue 12): docker-registry (the tests' real
# registry on 127.0.0.1), apache2-utils (its htpasswd users), busybox-static
# (a statically linked payload for test images), skopeo and umoci (the
# benchmark's floor: copy an image and unpack it for a bare runc run), and
# python3-venv for two venvs of pinned PyPI packages: the cloudfoundry-client
# in /opt/kiln-compat (the compatibility suite: an e2e test drives Kiln with
# it) and moto's S3 server in /opt/kiln-py (the S3 blobstore's tests; Debian
# has no S3-compatible server), locales (its sources and localedef: the
# cell compiles the en_US.UTF-8 locale Kiln's LANG names into the stack),
# and postgresql (issue 15: the tests start their own clusters from its
# initdb and pg_ctl, on 127.0.0.1; the package's own cluster on 5432, if it
# starts one, is not used), and faketime (the cluster test runs one node
# with its wall clock 30 s ahead through libfaketime's LD_PRELOAD), and make
# and gcc (issue 16: jemalloc, the kiln binary's allocator, is built from its
# C source by tikv-jemalloc-sys).
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
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
# Static: the test images hold nothing else (Debian's plain busybox is dynamic).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need+=(busybox-static)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v umoci >/dev/null 2>&1 || need+=(umoci)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
[ -e /usr/share/i18n/locales/en_US ] || need+=(locales)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || need+=(faketime)
# wrk: bench/storage.sh's load on GET /v3/apps.
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cc >/dev/null 2>&1 || need+=(gcc)
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
# The compatibility suite's client, unmodified from PyPI and pinned, in a
# venv of its own (KILN_CF_PYTHON overrides where the test looks for it).
CF_CLIENT_VERSION=1.40.4
compat=/opt/kiln-compat
if ! "$compat/bin/pip" show cloudfoundry-client 2>/dev/null | grep -qx "Version: $CF_CLIENT_VERSION"; then
  echo "install-deps: installing cloudfoundry-client $CF_CLIENT_VERSION into $compat"
  /usr/bin/python3 -m venv "$compat"
  "$compat/bin/pip" install -q "cloudfoundry-client==$CF_CLIENT_VERSION"
fi
# moto's S3 server for the S3 blobstore's tests, pinned.
if [ ! -x /opt/kiln-py/bin/moto_server ]; then
  echo "install-deps: installing moto[server] into /opt/kiln-py"
  [ -x /opt/kiln-py/bin/python ] || /usr/bin/python3 -m venv /opt/kiln-py
  /opt/kiln-py/bin/pip install -q 'moto[server]==5.1.22'
fi
