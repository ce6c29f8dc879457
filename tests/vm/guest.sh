#!/usr/bin/env bash
# Runs inside the VM lane's guest, as root, at boot (tests/vm/run.sh passes
# the arguments). Each argument is one command, run from the checkout in
# order, e.g. "BERTH_TEST_CGROUP_DRIVER=systemd target/debug/deps/pods-… cgroup";
# every command runs even when an earlier one failed. Exits non-zero if any
# failed.
set -u
cd "$(dirname "$0")/../.."
echo "guest: kernel $(uname -r), PID 1 is $(cat /proc/1/comm)," \
  "/sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)," \
  "root controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
failed=()
for cmd in "$@"; do
  echo "=== guest: $cmd"
  start=$(date +%s)
  if bash -c "$cmd"; then
    echo "=== guest: ok in $(( $(date +%s) - start ))s: $cmd"
  else
    echo "=== guest: FAILED (exit $?) in $(( $(date +%s) - start ))s: $cmd"
    failed+=("$cmd")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "guest: ${#failed[@]} of $# commands failed:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "guest: all $# commands passed"
