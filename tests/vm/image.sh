#!/usr/bin/env bash
# Builds the guest of the VM test lane once and caches it outside the
# checkout: a Debian 12 root filesystem (debootstrap from the Debian archive
# apt already uses) with systemd as PID 1 on the unified cgroup hierarchy,
# Debian's kernel, and a small initrd that mounts the root disk.
#
# Usage: tests/vm/image.sh        prints the cache directory (building it if
#                                  it is missing or this script changed)
# Env:   BERTH_VM_CACHE            where images live (/var/cache/berth/vm)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${BERTH_VM_CACHE:-/var/cache/berth/vm}
# Everything the guest is made of comes from this script and the guest
# files beside it: their hash names the image.
key=$(cat "$here/image.sh" "$here"/guest/* | sha256sum | cut -c1-16)
out="$cache/$key"
if [ -f "$out/ready" ]; then
  echo "$out"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "vm image: must run as root" >&2; exit 1; }
for tool in debootstrap mkfs.ext4 busybox; do
  command -v "$tool" >/dev/null || { echo "vm image: $tool missing (scripts/install-deps.sh vm)" >&2; exit 1; }
done
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-$(sed -n 's/^deb \(http[^ ]*\/debian\) bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}

rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'umount -R "$work/root" 2>/dev/null || true; rm -rf "$work"' EXIT
root=$work/root
echo "vm image: debootstrap bookworm from $mirror into $root" >&2
# What the tests run inside: systemd and D-Bus (the systemd cgroup driver),
# the kernel, the registry, busybox for test images, the CNI plugins, the
# OCI runtimes berth hands off to, AppArmor, CRIU, and the tools the tests call.
pkgs=systemd,systemd-sysv,dbus,kmod,linux-image-amd64,libseccomp2,iproute2,iptables
pkgs+=,docker-registry,busybox-static,containernetworking-plugins,runc,crun
pkgs+=,apparmor,openssl,apache2-utils,procps,util-linux,ca-certificates
# CRIU, for CheckpointContainer (this host's kernel fails `criu check`).
pkgs+=,criu
debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -30 "$work/debootstrap.log" >&2; exit 1; }

kver=$(ls "$root/lib/modules" | sort -V | tail -1)
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
rm -f "$root"/boot/initrd.img* "$root"/initrd.img*

# The guest: root on /dev/vda, a root login on the serial console for
# `tests/vm/run.sh --shell`, and the unit that runs the host's job.
echo berth-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 berth-vm\n::1 localhost\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
chroot "$root" passwd -d root >/dev/null
install -m 0755 "$here/guest/berth-vm-job" "$root/usr/local/sbin/berth-vm-job"
install -m 0644 "$here/guest/berth-vm-job.service" "$root/etc/systemd/system/"
ln -sf /etc/systemd/system/berth-vm-job.service "$root/etc/systemd/system/multi-user.target.wants/"
mkdir -p "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
printf '[Unit]\nConditionKernelCommandLine=berth.shell\n[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200 %%I $TERM\n' \
  >"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
# Nothing in the guest may reach out, and nothing needs to wait for it.
rm -f "$root/etc/systemd/system/multi-user.target.wants/docker-registry.service"
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  fstrim.timer systemd-timesyncd.service >/dev/null 2>&1 || true

# A small initrd: busybox, the modules the root disk and 9p need, and an
# init that loads them and switches to the root filesystem.
ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$(command -v busybox)" "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
mods=$root/lib/modules/$kver
need() {  # a module and what it depends on, in load order, once each
  local rel
  rel=$(grep -E "(^|/)$1\.ko(\.[a-z]+)?:" "$mods/modules.dep" | head -1) || return 0
  [ -n "$rel" ] || return 0
  local deps=${rel#*:}
  for d in $deps; do need "$(basename "$d" | sed 's/\.ko.*//')"; done
  local file=${rel%%:*}
  grep -qx "$file" "$ird/order" 2>/dev/null && return 0
  echo "$file" >>"$ird/order"
}
: >"$ird/order"
# ext4 asks the crypto API for crc32c at mount: without it, ENOENT.
for m in crc32c_generic virtio_pci virtio_blk ext4 9p 9pnet_virtio; do need "$m"; done
while read -r f; do
  case "$f" in
    *.ko) cp "$mods/$f" "$ird/lib/modules/" ;;
    *.ko.xz) xz -dc "$mods/$f" >"$ird/lib/modules/$(basename "${f%.xz}")" ;;
    *.ko.zst) zstd -qdc "$mods/$f" >"$ird/lib/modules/$(basename "${f%.zst}")" ;;
  esac
done <"$ird/order"
sed 's#.*/##; s/\.\(xz\|zst\)$//' "$ird/order" >"$ird/lib/modules/order"
rm "$ird/order"
cat >"$ird/init" <<'INIT'
#!/bin/sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
while read -r m; do /bin/busybox insmod "/lib/modules/$m" || echo "initrd: insmod $m failed"; done </lib/modules/order
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do /bin/busybox sleep 0.1; i=$((i+1)); done
/bin/busybox mount -t ext4 -o rw /dev/vda /newroot || {
  echo "initrd: cannot mount /dev/vda"
  /bin/busybox poweroff -f
}
/bin/busybox umount /proc
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/init
INIT
chmod 0755 "$ird/init"
(cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$out/initrd.img"

# The root disk: an ext4 image made from the tree (no loop device needed).
# Boots use it read-only with a throw-away overlay (qemu's snapshot=on).
truncate -s 8G "$out/rootfs.img"
mkfs.ext4 -q -F -L berth-vm -d "$root" "$out/rootfs.img"
echo "$kver" >"$out/kernel-version"
touch "$out/ready"
# Older images of this lane are no longer wanted.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
echo "vm image: built $out (kernel $kver)" >&2
echo "$out"
