#!/usr/bin/env bash
# Boots the VM lane's guest (tests/vm/image.sh builds it: Debian 12,
# systemd as PID 1, cgroup v2) with no network, shares this checkout into
# it over 9p at the same path, runs `tests/vm/guest.sh ARGS...` inside as
# root and returns its output and exit code.
#
# Usage: tests/vm/run.sh [--timeout SECS] [--] ARGS...   run guest.sh ARGS
#        tests/vm/run.sh --shell                          a root shell on the
#            guest's console (the checkout mounted at the same path; leave
#            with `poweroff`, or Ctrl-A X)
# Exit:  guest.sh's code; 77 when qemu cannot run here (SKIPPED, and why).
# Env:   BERTH_VM_MEM (MiB, 6144), BERTH_VM_CPUS (2), BERTH_VM_CACHE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
shell=0
timeout=2400
while [ $# -gt 0 ]; do
  case "$1" in
    --shell) shell=1; shift ;;
    --timeout) timeout=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done

skip() {
  echo "########################################################" >&2
  echo "# VM lane SKIPPED: $*" >&2
  echo "########################################################" >&2
  exit 77
}
qemu=$(command -v qemu-system-x86_64 || true)
[ -n "$qemu" ] || skip "qemu-system-x86_64 is not installed (scripts/install-deps.sh vm)"
"$qemu" -accel help 2>/dev/null | grep -qx tcg || skip "$qemu has no TCG accelerator"

image=$("$here/image.sh")

# KVM only where it is a real one: this machine's paravirtual kvm_pvm runs
# only kernels built for it, so a stock kernel goes to qemu's TCG.
if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
  accel=(-accel kvm -cpu host)
  how=KVM
else
  accel=(-accel tcg,thread=multi -cpu max)
  how="TCG (software CPU, 15-30x slower than the host)"
fi

out=$(mktemp -d /tmp/berth-vm-out.XXXXXX)
trap 'rm -rf "$out"' EXIT
printf '%s\n' "$@" >"$out/args"
append="console=ttyS0 root=/dev/vda rw quiet loglevel=3 systemd.show_status=false"
append+=" systemd.unified_cgroup_hierarchy=1 berth.src=$src"
serial=(-serial stdio)
stdin=/dev/null
if [ $shell -eq 1 ]; then
  append+=" berth.shell"
  serial=(-serial mon:stdio)
  stdin=/dev/stdin
fi
echo "vm: booting $(cat "$image/kernel-version") under $how; checkout $src" >&2
set +e
timeout -k 10 "$timeout" "$qemu" -nodefaults -no-user-config -machine q35 "${accel[@]}" \
  -smp "${BERTH_VM_CPUS:-2}" -m "${BERTH_VM_MEM:-6144}" -display none "${serial[@]}" -no-reboot \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" -append "$append" \
  -drive "file=$image/rootfs.img,format=raw,if=virtio,snapshot=on" \
  -device virtio-rng-pci \
  -virtfs "local,path=$src,mount_tag=src,security_model=none,readonly=on" \
  -virtfs "local,path=$out,mount_tag=out,security_model=none" \
  <"$stdin"
q=$?
set -e
[ $shell -eq 1 ] && exit 0
if [ $q -eq 124 ]; then
  echo "vm: the guest ran past ${timeout}s and was stopped" >&2
  exit 124
fi
if [ ! -f "$out/rc" ]; then
  echo "vm: the guest stopped (qemu exit $q) without finishing its job" >&2
  exit 1
fi
rc=$(cat "$out/rc")
echo "vm: guest.sh exited $rc" >&2
exit "$rc"
