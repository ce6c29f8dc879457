#!/usr/bin/env bash
# The VM lane (scripts/test.sh and CI run it): builds the workspace and the
# integration tests here, then runs in the cgroup v2 + systemd guest of
# tests/vm/run.sh the tests that touch cgroups, systemd and the kernel,
# first under the cgroupfs driver, then under the systemd one.
#
# Usage: tests/vm/lane.sh [TEST-FILE...]   (default: the lane's selection)
# Env:   BERTH_VM_DRIVERS  the drivers to run them under ("cgroupfs systemd")
# Exit:  the guest's result; 77 when qemu cannot run here (SKIPPED).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --locked --workspace
# The integration test binaries, by test file name.
declare -A bin
while read -r name path; do bin[$name]=$path; done < <(
  cargo test --locked -p berth-tests --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
files=("$@")
# What touches cgroups, systemd and the kernel: the cgroup drivers, pods and
# their cgroups, containers (OOM, PID namespaces, restarts), stats and
# live resource updates, the security settings the kernel enforces,
# AppArmor and CRIU's checkpoints (which the guest has and this host lacks).
[ ${#files[@]} -gt 0 ] || files=(cgroups pods stats containers security apparmor checkpoint)
cmds=()
for driver in ${BERTH_VM_DRIVERS:-cgroupfs systemd}; do
  for f in "${files[@]}"; do
    [ -n "${bin[$f]:-}" ] || { echo "lane: no test file $f" >&2; exit 2; }
    cmds+=("BERTH_TEST_CGROUP_DRIVER=$driver BERTH_TEST_CRIU=1 ${bin[$f]#"$PWD/"} --test-threads=2")
  done
done
exec tests/vm/run.sh -- "${cmds[@]}"
