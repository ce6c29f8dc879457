#!/usr/bin/env bash
# Installs berth on this machine (as root), or removes what it installed.
# `make install` and `make uninstall` call it.
#
# Usage: scripts/install.sh [--uninstall] [--no-systemd] [--no-cni]
#   --uninstall   remove what an earlier install recorded, and nothing else
#   --no-systemd  make no systemctl call (also skipped when DESTDIR is set or
#                 systemd is not running, i.e. /run/systemd/system is missing)
#   --no-cni      never write the default CNI network
# Environment:
#   PREFIX       the binaries go to $PREFIX/bin (default /usr/local)
#   DESTDIR      a staging root put before every path written or removed
#                (default: none, the real root)
#   BIN_DIR_SRC  where berthd, berth-monitor and berth-pump are taken from
#                (default: target/release of this repository: `make build`)
#
# What an install writes:
#   $PREFIX/bin/berthd, $PREFIX/bin/berth-monitor, $PREFIX/bin/berth-pump  always (replaced)
#   /etc/systemd/system/berthd.service             always (ExecStart under $PREFIX)
#   /etc/berth/config.toml                         only if there is none
#   /etc/cni/net.d/10-berth.conflist               only if /etc/cni/net.d holds no
#                                                  .conf/.conflist/.json
#   /etc/crictl.yaml                               only if there is none
# Each file and directory it creates is recorded, with its sha256, in
# /var/lib/berth/install-manifest. --uninstall removes exactly those:
# directories only when empty, and a config, CNI or crictl file it wrote is
# kept (and named) if it was changed since. A file that existed before the
# install, other than berth's own binaries and unit, is never recorded.
set -euo pipefail

src_dir=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
destdir=${destdir%/}
bin_src=${BIN_DIR_SRC:-$src_dir/target/release}
manifest=/var/lib/berth/install-manifest
kubelet_backup=/var/lib/berth/kubelet-backup

action=install
use_systemd=1
install_cni=1
for arg in "$@"; do
  case $arg in
    --uninstall) action=uninstall ;;
    --no-systemd) use_systemd=0 ;;
    --no-cni) install_cni=0 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

case $prefix in
  /*) ;;
  *) echo "install.sh: PREFIX must be an absolute path, not $prefix" >&2; exit 2 ;;
esac
prefix=${prefix%/}
if [ -n "$destdir" ] || [ ! -d /run/systemd/system ]; then
  use_systemd=0
fi

say() { echo "install.sh: $*"; }

# The manifest, one entry a line: `dir - PATH`, `own SHA256 PATH` (berth's
# binaries and unit: removed at uninstall whatever their content) or
# `conf SHA256 PATH` (site files: kept at uninstall if changed).
declare -a m_kind=() m_sum=() m_path=()

load_manifest() {
  local kind sum path
  [ -f "$destdir$manifest" ] || return 0
  while read -r kind sum path; do
    [ -n "$path" ] || continue
    m_kind+=("$kind"); m_sum+=("$sum"); m_path+=("$path")
  done < "$destdir$manifest"
}

# record KIND SUM PATH: adds the entry, or updates the sum of one recorded.
record() {
  local i
  for i in "${!m_path[@]}"; do
    if [ "${m_path[$i]}" = "$3" ]; then
      m_sum[i]=$2
      return 0
    fi
  done
  m_kind+=("$1"); m_sum+=("$2"); m_path+=("$3")
}

recorded() {
  local p
  for p in "${m_path[@]}"; do [ "$p" = "$1" ] && return 0; done
  return 1
}

save_manifest() {
  local i tmp=$destdir$manifest.tmp
  : > "$tmp"
  for i in "${!m_path[@]}"; do
    printf '%s %s %s\n' "${m_kind[$i]}" "${m_sum[$i]}" "${m_path[$i]}" >> "$tmp"
  done
  chmod 0644 "$tmp"
  mv -f "$tmp" "$destdir$manifest"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# mkdirs DIR: makes DIR and its missing parents, recording each one made.
mkdirs() {
  local dir=$1 path="" part
  local IFS=/
  for part in $dir; do
    [ -n "$part" ] || continue
    path=$path/$part
    if [ ! -d "$destdir$path" ]; then
      mkdir -m 0755 "$destdir$path"
      record dir - "$path"
    fi
  done
}

# put KIND SRC DEST MODE: writes SRC to DEST (through a temporary file and a
# rename, so a running binary is replaced, not overwritten) and records it.
put() {
  local kind=$1 src=$2 dest=$3 mode=$4
  mkdirs "$(dirname "$dest")"
  install -m "$mode" "$src" "$destdir$dest.berth-new"
  mv -f "$destdir$dest.berth-new" "$destdir$dest"
  record "$kind" "$(sha "$destdir$dest")" "$dest"
  say "installed $destdir$dest"
}

# put_if_absent SRC DEST: a site file, written only when DEST is missing.
put_if_absent() {
  local src=$1 dest=$2
  if [ -e "$destdir$dest" ] || [ -L "$destdir$dest" ]; then
    if recorded "$dest"; then
      say "kept $destdir$dest (written by an earlier install)"
    else
      say "kept $destdir$dest (it existed before: not replaced, never removed)"
    fi
    return 0
  fi
  put conf "$src" "$dest" 0644
}

has_cni_config() {
  local f
  for f in "$destdir"/etc/cni/net.d/*.conf "$destdir"/etc/cni/net.d/*.conflist \
           "$destdir"/etc/cni/net.d/*.json; do
    [ -e "$f" ] && return 0
  done
  return 1
}

do_install() {
  local b tmp unit cni
  for b in berthd berth-monitor berth-pump; do
    if [ ! -x "$bin_src/$b" ]; then
      echo "install.sh: $bin_src/$b is missing: run \`make build\` first, or set BIN_DIR_SRC" >&2
      exit 1
    fi
  done
  load_manifest
  mkdirs "$(dirname "$manifest")"

  for b in berthd berth-monitor berth-pump; do
    put own "$bin_src/$b" "$prefix/bin/$b" 0755
  done

  unit=$src_dir/manifests/berthd.service
  if ! grep -q '^ExecStart=/usr/local/bin/berthd$' "$unit"; then
    echo "install.sh: $unit has no line ExecStart=/usr/local/bin/berthd to point at $prefix/bin" >&2
    exit 1
  fi
  tmp=$(mktemp)
  sed "s|^ExecStart=/usr/local/bin/berthd\$|ExecStart=$prefix/bin/berthd|" "$unit" > "$tmp"
  put own "$tmp" /etc/systemd/system/berthd.service 0644
  rm -f "$tmp"

  put_if_absent "$src_dir/manifests/config.toml" /etc/berth/config.toml
  put_if_absent "$src_dir/manifests/crictl.yaml" /etc/crictl.yaml
  if [ "$install_cni" = 1 ]; then
    cni=/etc/cni/net.d/10-berth.conflist
    if [ ! -e "$destdir$cni" ] && has_cni_config; then
      say "wrote no CNI network: $destdir/etc/cni/net.d has one already"
    else
      put_if_absent "$src_dir/manifests/10-berth.conflist" "$cni"
    fi
  fi

  record own - "$manifest"
  save_manifest
  # The manifest's own sum is not known before it is written: `-`.
  say "recorded what was installed in $destdir$manifest"

  if [ "$use_systemd" = 1 ]; then
    systemctl daemon-reload
    if systemctl is-active --quiet berthd; then
      say "berthd runs: \`systemctl restart berthd\` starts the new binaries (containers keep running)"
    else
      say "start it: systemctl enable --now berthd"
    fi
  else
    say "no systemctl call made (DESTDIR set, --no-systemd, or no systemd running)"
  fi
}

do_uninstall() {
  local i kind sum path target
  if [ -e "$destdir$kubelet_backup" ]; then
    echo "install.sh: the kubelet was switched to berth by scripts/deploy.sh ($destdir$kubelet_backup holds its old config): run \`scripts/deploy.sh restore-kubelet\` first" >&2
    exit 1
  fi
  if [ ! -f "$destdir$manifest" ]; then
    say "no $destdir$manifest: nothing recorded, nothing removed"
    return 0
  fi
  load_manifest
  if [ "$use_systemd" = 1 ] && systemctl cat berthd >/dev/null 2>&1; then
    systemctl disable --now berthd || true
  fi
  for ((i = ${#m_path[@]} - 1; i >= 0; i--)); do
    kind=${m_kind[$i]} sum=${m_sum[$i]} path=${m_path[$i]}
    case $path in
      /*/../*|/*/./*|*/..|*/.|/) say "skipped the entry $path (not a plain absolute path)"; continue ;;
      /*) ;;
      *) say "skipped the entry $path (not absolute)"; continue ;;
    esac
    target=$destdir$path
    case $kind in
      dir)
        if [ -d "$target" ] && [ ! -L "$target" ]; then
          if rmdir "$target" 2>/dev/null; then
            say "removed $target/"
          else
            say "kept $target/ (not empty)"
          fi
        fi
        ;;
      own|conf)
        if [ ! -e "$target" ] && [ ! -L "$target" ]; then
          continue
        fi
        if [ "$kind" = conf ] && [ -f "$target" ] && [ "$(sha "$target")" != "$sum" ]; then
          say "kept $target (changed since it was installed)"
          continue
        fi
        rm -f "$target"
        say "removed $target"
        ;;
      *) say "skipped the entry $path (unknown kind $kind)" ;;
    esac
  done
  if [ "$use_systemd" = 1 ]; then
    systemctl daemon-reload
  fi
}

case $action in
  install) do_install ;;
  uninstall) do_uninstall ;;
esac
