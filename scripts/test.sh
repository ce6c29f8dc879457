#!/usr/bin/env bash
# Runs berth's whole test suite as root: unit tests and the integration
# tests that start real berthd processes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
# The integration tests start the berthd binary this builds.
cargo build --locked --workspace
cargo test --locked --workspace "$@"
# The manifests, the install script and the node switch (no cargo needed).
if [ $# -eq 0 ]; then
  tests/manifests.sh
  # A kubelet running pods on berth, when the machine has one; otherwise it
  # says SKIPPED and why.
  tests/kubelet.sh
fi
