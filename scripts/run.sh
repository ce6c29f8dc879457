#!/usr/bin/env bash
# Builds berthd (release) and starts it in the foreground with its defaults:
# socket /run/berth/berth.sock, config /etc/berth/config.toml if present.
# Extra arguments go to berthd, e.g. scripts/run.sh --log-level debug
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
cargo build --release --locked -p berthd
exec target/release/berthd "$@"
