#!/usr/bin/env bash
# Installs the Debian packages berth needs to build and test, as root.
# Usage: scripts/install-deps.sh [build|run|test|vm]
#   build: what compiling needs; run: build + the CNI plugins pods use;
#   vm: what the VM lane (tests/vm/) needs to build and boot its guest;
#   test (default): run + vm + what the test suite uses.
set -euo pipefail

what=${1:-test}
build_pkgs=(gcc pkg-config libseccomp-dev)
# The tests pull from a real registry on loopback and run real containers.
test_pkgs=(docker-registry busybox-static apache2-utils runc crun
           containernetworking-plugins iproute2 iptables openssl
           python3-venv make)

run_pkgs=(containernetworking-plugins iproute2 iptables)
# The cgroup v2 + systemd guest: qemu (TCG here), its root filesystem from
# Debian's archive, made into an ext4 image, busybox in its initrd.
# (Debian's qemu-system-x86 replaces a backported qemu-utils if present.)
vm_pkgs=(qemu-system-x86 debootstrap e2fsprogs busybox-static)

pkgs=("${build_pkgs[@]}")
[ "$what" = run ] && pkgs+=("${run_pkgs[@]}")
[ "$what" = vm ] && pkgs+=("${vm_pkgs[@]}")
[ "$what" = test ] && pkgs+=("${run_pkgs[@]}" "${vm_pkgs[@]}" "${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-deps: installed ${missing[*]}"
fi

# Debian's own cargo is too old for edition 2024; rustup's stable is needed.
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found: install Rust >= 1.95 with rustup (https://rustup.rs)" >&2
  exit 1
fi
