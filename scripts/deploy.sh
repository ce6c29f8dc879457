#!/usr/bin/env bash
# Installs berth on a Kubernetes node and switches the node's kubelet from
# its runtime (containerd, CRI-O) to berth, or the reverse. The DaemonSets of
# manifests/berth-deploy.yaml run it from the berth-deploy image, with the
# node's / at /host; run as root on a node itself (HOST_ROOT=/, the default)
# it does the same there.
#
# Usage: scripts/deploy.sh COMMAND [--wait]
#   install          scripts/install.sh into HOST_ROOT, start berthd, then
#                    switch-kubelet (unless SWITCH_KUBELET=false) and label
#                    the node berth.io/runtime=berth
#   uninstall        restore-kubelet, remove the label, stop berthd, then
#                    scripts/install.sh --uninstall
#   switch-kubelet   point the kubelet at berth, keeping a backup of each file
#                    changed; restart the kubelet; put the backup back if the
#                    kubelet does not stay up
#   restore-kubelet  put the backup back and restart the kubelet
#   --wait           then sleep until SIGTERM (what a DaemonSet's pod does)
#
# Environment (defaults in brackets):
#   HOST_ROOT       where the node's / is [/]
#   HOST_EXEC       runs a command on the node [nothing when HOST_ROOT is /,
#                   else nsenter into PID 1's namespaces]
#   PREFIX          passed to scripts/install.sh [/usr/local]
#   BIN_DIR_SRC     passed to scripts/install.sh [target/release]
#   INSTALL_CNI     write the default CNI network when the node has none [false]
#   SWITCH_KUBELET  install also switches the kubelet [true]
#   BERTH_SOCKET    berthd's socket [/run/berth/berth.sock]
#   KUBELET_CONFIG  the kubelet's config file [/var/lib/kubelet/config.yaml]
#   KUBELET_FLAGS_FILES  files that may hold kubelet flags [/var/lib/kubelet/kubeadm-flags.env
#                   /etc/default/kubelet /etc/sysconfig/kubelet]
#   KUBELET_SETTLE  seconds the kubelet must stay up after its restart [20]
#   FORCE_RESTORE   restore-kubelet replaces files changed since the switch [false]
#   NODE_NAME       the node to label; labels are set only with a service
#                   account token (in a pod) and LABEL_NODE not false
#
# What switch-kubelet changes, in files that exist (never creating one):
#   - in each flags file: --container-runtime-endpoint and
#     --image-service-endpoint to berth's socket, --cgroup-driver to the
#     node's driver (systemd where systemd is PID 1 on cgroup v2, else
#     cgroupfs: what berth's default cgroup_driver = "auto" picks);
#   - in KUBELET_CONFIG: containerRuntimeEndpoint (added if missing),
#     imageServiceEndpoint (if present) and cgroupDriver (if present), the
#     same values.
# The originals are kept under /var/lib/berth/kubelet-backup/ until
# restore-kubelet copies them back byte for byte.
set -euo pipefail

src_dir=$(cd "$(dirname "$0")/.." && pwd)
host_root=${HOST_ROOT:-/}
host_root=${host_root%/}
if [ -z "$host_root" ]; then
  default_exec=""
else
  default_exec="nsenter --target 1 --mount --uts --ipc --net --pid --"
fi
host_exec=${HOST_EXEC-$default_exec}
socket=${BERTH_SOCKET:-/run/berth/berth.sock}
endpoint=unix://$socket
kubelet_config=${KUBELET_CONFIG:-/var/lib/kubelet/config.yaml}
flags_files=${KUBELET_FLAGS_FILES:-/var/lib/kubelet/kubeadm-flags.env /etc/default/kubelet /etc/sysconfig/kubelet}
settle=${KUBELET_SETTLE:-20}
backup=/var/lib/berth/kubelet-backup
label=berth.io/runtime
prefix=${PREFIX:-/usr/local}

say() { echo "deploy.sh: $*"; }
die() { echo "deploy.sh: $*" >&2; exit 1; }

# host CMD...: runs CMD on the node (its mount, PID, network namespaces).
host() {
  # shellcheck disable=SC2086 # HOST_EXEC is a command line
  $host_exec "$@"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# set_key FILE KEY VALUE ADD: sets a top-level YAML key; adds it when ADD=add.
set_key() {
  local file=$1 key=$2 value=$3 add=$4
  if grep -q "^$key:" "$file"; then
    sed -i --follow-symlinks "s#^$key:.*#$key: $value#" "$file"
  elif [ "$add" = add ]; then
    [ -z "$(tail -c1 "$file")" ] || echo >> "$file"
    echo "$key: $value" >> "$file"
  fi
}

# set_flag FILE FLAG VALUE: rewrites --FLAG=X or --FLAG X.
set_flag() {
  sed -E -i --follow-symlinks "s#--$2(=|[[:space:]]+)[^[:space:]\"']+#--$2=$3#g" "$1"
}

switched_files() {
  sed -n 's/^[0-9a-f]\{64\} //p' "$host_root$backup/files"
}

# restart_kubelet: restarts it; fails unless it is still up, never
# restarted by systemd in between, KUBELET_SETTLE seconds later.
restart_kubelet() {
  local restarts
  host systemctl restart kubelet
  say "restarted the kubelet; checking it stays up for ${settle}s"
  sleep "$settle"
  host systemctl is-active --quiet kubelet || return 1
  restarts=$(host systemctl show -p NRestarts --value kubelet)
  [ "${restarts:-0}" = 0 ]
}

# The node's cgroup driver, as berthd's `auto` resolves it.
node_driver() {
  if [ -d "$host_root/run/systemd/system" ] && [ -f "$host_root/sys/fs/cgroup/cgroup.controllers" ]; then
    echo systemd
  else
    echo cgroupfs
  fi
}

do_switch() {
  local f files=() changed=0 driver
  driver=$(node_driver)
  if [ -f "$host_root$backup/files" ]; then
    say "the kubelet is switched to berth already (backup in $host_root$backup)"
    return 0
  fi
  for f in $flags_files; do
    if [ -f "$host_root$f" ] && grep -q -- '--container-runtime-endpoint\|--image-service-endpoint\|--cgroup-driver' "$host_root$f"; then
      files+=("$f")
    fi
  done
  if [ -f "$host_root$kubelet_config" ]; then
    if grep -q '^[[:space:]]*{' "$host_root$kubelet_config"; then
      die "$host_root$kubelet_config is JSON: switch it by hand (manifests/kubelet-config.yaml)"
    fi
    files+=("$kubelet_config")
  fi
  if [ ${#files[@]} -eq 0 ]; then
    die "found neither $kubelet_config nor a kubelet flags file ($flags_files): set KUBELET_CONFIG or KUBELET_FLAGS_FILES"
  fi

  # Back up every file before changing any.
  rm -rf "$host_root$backup.new"
  mkdir -p "$host_root$backup.new/orig"
  for f in "${files[@]}"; do
    mkdir -p "$host_root$backup.new/orig$(dirname "$f")"
    cp -aL "$host_root$f" "$host_root$backup.new/orig$f"
  done

  for f in "${files[@]}"; do
    if [ "$f" = "$kubelet_config" ]; then
      set_key "$host_root$f" containerRuntimeEndpoint "$endpoint" add
      set_key "$host_root$f" imageServiceEndpoint "$endpoint" keep
      set_key "$host_root$f" cgroupDriver "$driver" keep
    else
      set_flag "$host_root$f" container-runtime-endpoint "$endpoint"
      set_flag "$host_root$f" image-service-endpoint "$endpoint"
      set_flag "$host_root$f" cgroup-driver "$driver"
    fi
    if cmp -s "$host_root$f" "$host_root$backup.new/orig$f"; then
      say "$host_root$f already points at berth"
    else
      changed=1
      say "pointed $host_root$f at $endpoint"
    fi
    # The sum after the switch: restore-kubelet checks nobody changed it.
    echo "$(sha "$host_root$f") $f" >> "$host_root$backup.new/files"
  done
  mv "$host_root$backup.new" "$host_root$backup"

  if [ "$changed" = 0 ]; then
    say "nothing changed: not restarting the kubelet"
    return 0
  fi
  if ! restart_kubelet; then
    say "the kubelet did not stay up on berth: putting its files back"
    FORCE_RESTORE=true do_restore
    die "switch failed: the kubelet runs with its old runtime again (see journalctl -u kubelet on the node)"
  fi
  say "the kubelet runs on berth"
}

do_restore() {
  local f sum
  if [ ! -f "$host_root$backup/files" ]; then
    say "the kubelet was not switched by deploy.sh: nothing to restore"
    rm -rf "$host_root$backup"
    return 0
  fi
  while read -r sum f; do
    if [ "$(sha "$host_root$f")" != "$sum" ] && [ "${FORCE_RESTORE:-false}" != true ]; then
      die "$host_root$f changed since the switch: merge it with $host_root$backup/orig$f by hand, or run again with FORCE_RESTORE=true to put the backup back"
    fi
  done < "$host_root$backup/files"
  for f in $(switched_files); do
    cp -a "$host_root$backup/orig$f" "$host_root$f"
    say "restored $host_root$f"
  done
  rm -rf "$host_root$backup"
  if ! restart_kubelet; then
    die "the kubelet did not stay up after its files were restored (see journalctl -u kubelet on the node)"
  fi
  say "the kubelet runs with its old runtime again"
}

# label_node VALUE: sets berth.io/runtime (a JSON value; null removes it).
label_node() {
  local sa=/var/run/secrets/kubernetes.io/serviceaccount api_host
  if [ "${LABEL_NODE:-true}" = false ] || [ ! -r "$sa/token" ] || [ -z "${NODE_NAME:-}" ]; then
    say "node label $label not changed (no service account token, NODE_NAME or LABEL_NODE=false)"
    return 0
  fi
  api_host=$KUBERNETES_SERVICE_HOST
  case $api_host in *:*) api_host="[$api_host]" ;; esac
  curl -sS --fail --cacert "$sa/ca.crt" \
    -H "Authorization: Bearer $(cat "$sa/token")" \
    -H "Content-Type: application/merge-patch+json" -X PATCH \
    --data "{\"metadata\":{\"labels\":{\"$label\":$1}}}" \
    "https://$api_host:$KUBERNETES_SERVICE_PORT/api/v1/nodes/$NODE_NAME" >/dev/null
  say "node $NODE_NAME: label $label=$1"
}

do_install() {
  local before after args=(--no-systemd) i
  [ "${INSTALL_CNI:-false}" = true ] || args+=(--no-cni)
  before=$( (cat "$host_root$prefix/bin/berthd" "$host_root$prefix/bin/berth-monitor" "$host_root$prefix/bin/berth-pump" 2>/dev/null || true) | sha256sum)
  DESTDIR=$host_root PREFIX=$prefix "$src_dir/scripts/install.sh" "${args[@]}"
  after=$(cat "$host_root$prefix/bin/berthd" "$host_root$prefix/bin/berth-monitor" "$host_root$prefix/bin/berth-pump" | sha256sum)

  host systemctl daemon-reload
  host systemctl enable berthd
  if ! host systemctl is-active --quiet berthd; then
    host systemctl start berthd || die "berthd did not start (see journalctl -u berthd on the node)"
    say "started berthd"
  elif [ "$before" != "$after" ]; then
    host systemctl restart berthd || die "berthd did not restart (see journalctl -u berthd on the node)"
    say "restarted berthd on the new binaries (pods and containers keep running)"
  fi
  for ((i = 0; i < 30; i++)); do
    host test -S "$socket" && break
    sleep 1
  done
  host test -S "$socket" || die "berthd runs but $socket did not appear"
  say "berthd serves $socket"

  if [ "${SWITCH_KUBELET:-true}" = true ]; then
    do_switch
    label_node '"berth"'
  else
    say "SWITCH_KUBELET=false: the kubelet is left as it is"
  fi
}

do_uninstall() {
  do_restore
  label_node null
  if host systemctl cat berthd >/dev/null 2>&1; then
    host systemctl disable --now berthd || true
    say "stopped berthd (what it runs keeps running until the node reboots)"
  fi
  DESTDIR=$host_root PREFIX=$prefix "$src_dir/scripts/install.sh" --uninstall --no-systemd
  host systemctl daemon-reload
}

cmd=${1:-}
wait_after=false
[ "${2:-}" = --wait ] && wait_after=true

# One deploy.sh at a time per node: after a switch the kubelet starts a new
# pod of the DaemonSet on the other runtime while the old one may still run.
# (The lock file stays in the node's /run, which a reboot empties.)
exec 9> "$host_root/run/berth-deploy.lock"
flock 9

case $cmd in
  install) do_install ;;
  uninstall) do_uninstall ;;
  switch-kubelet) do_switch ;;
  restore-kubelet) do_restore ;;
  *) echo "usage: scripts/deploy.sh install|uninstall|switch-kubelet|restore-kubelet [--wait]" >&2; exit 2 ;;
esac
exec 9>&-

if [ "$wait_after" = true ]; then
  say "done; waiting for SIGTERM"
  trap 'exit 0' TERM INT
  sleep infinity &
  wait $!
fi
