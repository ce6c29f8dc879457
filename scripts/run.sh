#!/usr/bin/env bash
# Builds berthd (release) and starts it in the foreground with its defaults:
# socket /run/berth/berth.sock, config /etc/berth/config.toml if present.
# Extra arguments go to berthd, e.g. scripts/run.sh --log-level debug
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh run

# A node with no pod network yet gets a private one (manifests/10-berth.conflist:
# bridge + host-local 10.88.0.0/16 + portmap + bandwidth; berth brings lo up), from
# Debian's containernetworking-plugins).
conf_dir=/etc/cni/net.d
if ! ls "$conf_dir"/*.conf "$conf_dir"/*.conflist "$conf_dir"/*.json >/dev/null 2>&1; then
  mkdir -p "$conf_dir"
  install -m 0644 manifests/10-berth.conflist "$conf_dir/10-berth.conflist"
  echo "run.sh: wrote $conf_dir/10-berth.conflist (pod network 10.88.0.0/16)"
fi

cargo build --release --locked -p berthd -p berth-runtime
exec target/release/berthd "$@"
