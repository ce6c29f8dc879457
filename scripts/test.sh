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
  # cgroup v2 and systemd: the tests that touch them, in a Debian guest
  # under qemu (tests/vm/). Where qemu cannot run it says SKIPPED and why.
  rc=0
  tests/vm/lane.sh || rc=$?
  if [ "$rc" -eq 77 ]; then
    echo "test.sh: the VM lane was SKIPPED (see its banner above)" >&2
  elif [ "$rc" -ne 0 ]; then
    echo "test.sh: the VM lane failed (exit $rc)" >&2
    exit "$rc"
  fi
fi
