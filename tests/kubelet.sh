#!/usr/bin/env bash
# Runs a real kubelet against berth: the kubelet standalone (no API server,
# one static pod), a berthd started here from target/debug (or $BERTHD_BIN)
# on a private socket, root, state and CNI network, and checks with crictl
# what a node would see:
# - the static pod (two busybox containers sharing an emptyDir, a hostPort,
#   an exec liveness probe) reaches Running, its port answers on the node's
#   address with what the containers wrote in the emptyDir;
# - the probed container is restarted after its probe starts failing (and
#   not before), in the same pod;
# - removing the manifest tears the pod down: containers stopped, sandbox
#   removed, host port rules gone.
# Needs root, `kubelet` on PATH (or KUBELET=...), crictl, Debian's busybox,
# iptables, and BERTH_TEST_IMAGE: a busybox image berth can pull (the Rust
# harness pushes one to a loopback registry). Without a kubelet or an image
# it prints SKIPPED and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

skip() { echo "SKIPPED: tests/kubelet.sh: $*"; exit 0; }
kubelet=${KUBELET:-$(command -v kubelet || true)}
[ -n "$kubelet" ] || skip "no kubelet binary on PATH (set KUBELET=...)"
[ -x "$kubelet" ] || { echo "FAIL: KUBELET=$kubelet is not an executable file"; exit 1; }
[ -n "${BERTH_TEST_IMAGE:-}" ] || skip "BERTH_TEST_IMAGE is not set (a busybox image berth can pull, e.g. from a loopback registry)"
[ "$(id -u)" -eq 0 ] || skip "needs root"
for tool in crictl busybox iptables ip findmnt python3; do
  command -v "$tool" >/dev/null || skip "no $tool on PATH"
done
berthd=${BERTHD_BIN:-$repo/target/debug/berthd}
if [ ! -x "$berthd" ] || [ ! -x "$(dirname "$berthd")/berth-monitor" ] || [ ! -x "$(dirname "$berthd")/berth-pump" ]; then
  echo "FAIL: $berthd, or berth-monitor or berth-pump next to it, is missing: cargo build --workspace first (or set BERTHD_BIN)"
  exit 1
fi
image=$BERTH_TEST_IMAGE

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

work=$(mktemp -d /tmp/berth-kubelet.XXXXXX)
sock=$work/berth.sock
bridge=bkubelet$(($$ % 100))
subnet=10.214.$(($$ % 200)).0/24
host_port=$((20000 + $$ % 1000))
healthz_port=$((21000 + $$ % 1000))
namespace=berth-kubelet-test
node_ip=$(ip -o -4 addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1)
[ -n "$node_ip" ] || skip "the node has no global IPv4 address for the host port check"
kubelet_pid=""
berthd_pid=""

cri() { crictl --config "$work/crictl.yaml" "$@"; }

# What the kubelet changes on the node, to put back afterwards.
sysctls="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
declare -A sysctl_before=()
for s in $sysctls; do
  sysctl_before[$s]=$(sysctl -n "$s" 2>/dev/null || true)
done
find /sys/fs/cgroup -maxdepth 3 -type d -name 'kubepods*' 2>/dev/null | sort > "$work/cgroups.before"

cleanup() {
  set +e
  if [ -n "$kubelet_pid" ]; then
    kill "$kubelet_pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$kubelet_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$kubelet_pid" 2>/dev/null
    { wait "$kubelet_pid"; } 2>/dev/null
  fi
  if [ -n "$berthd_pid" ]; then
    for p in $(cri pods -q 2>/dev/null); do cri rmp -f "$p" >/dev/null 2>&1; done
    kill "$berthd_pid" 2>/dev/null
    { wait "$berthd_pid"; } 2>/dev/null
  fi
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | while read -r m; do umount -l "$m"; done
  ip link del "$bridge" 2>/dev/null
  for s in $sysctls; do
    [ -z "${sysctl_before[$s]}" ] || sysctl -q -w "$s=${sysctl_before[$s]}" >/dev/null 2>&1
  done
  find /sys/fs/cgroup -maxdepth 3 -type d -name 'kubepods*' 2>/dev/null | sort |
    comm -13 "$work/cgroups.before" - | while read -r cg; do
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  find /var/log/containers -maxdepth 1 -type l -lname "$work/*" -delete 2>/dev/null
  if [ "$failed" -ne 0 ] || [ "${KEEP:-}" = 1 ]; then
    echo "kubelet.sh: kept $work (berthd.log, kubelet.log)"
  elif ! findmnt -rn -o TARGET | grep -q "^$work/"; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT

logs() {
  echo "--- berthd.log (last 20 lines)"; tail -n 20 "$work/berthd.log"
  echo "--- kubelet.log (last 30 lines)"; tail -n 30 "$work/kubelet.log"
}
# wait_for SECONDS CMD...: until CMD succeeds, or fail after SECONDS.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# --- berthd, on its own socket and CNI network --------------------------------
mkdir -p "$work/net.d" "$work/ipam" "$work/pods" "$work/logs"
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "$sock" "$sock" > "$work/crictl.yaml"
cat > "$work/net.d/10-kubelet-test.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "berth-kubelet-test",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "dataDir": "$work/ipam",
                "ranges": [[{ "subnet": "$subnet" }]], "routes": [{ "dst": "0.0.0.0/0" }] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "loopback" }
  ]
}
EOF
printf '[cni]\nconf_dir = "%s"\n' "$work/net.d" > "$work/berth.toml"
"$berthd" --config "$work/berth.toml" --root "$work/root" --state "$work/state" \
  --socket "$sock" > "$work/berthd.log" 2>&1 &
berthd_pid=$!
if ! wait_for 30 cri version; then
  fail "berthd did not answer on $sock"
  logs
  echo "kubelet.sh: $passed passed, $failed failed"
  exit 1
fi

# --- the kubelet, standalone ------------------------------------------------
cat > "$work/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
staticPodPath: $work/pods
podLogsDir: $work/logs
fileCheckFrequency: 2s
syncFrequency: 10s
enableServer: false
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
makeIPTablesUtilChains: false
resolvConf: /etc/resolv.conf
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
EOF
"$kubelet" --config="$work/kubelet.yaml" --root-dir="$work/kubelet" --cert-dir="$work/pki" \
  --hostname-override=berth-kubelet-test --v=2 > "$work/kubelet.log" 2>&1 &
kubelet_pid=$!
healthz() { [ "$(busybox wget -q -O- "http://127.0.0.1:$healthz_port/healthz")" = ok ]; }
if wait_for 60 healthz; then
  pass "the kubelet ($("$kubelet" --version 2>/dev/null)) runs on berth"
else
  fail "the kubelet did not become healthy on 127.0.0.1:$healthz_port"
  logs
  echo "kubelet.sh: $passed passed, $failed failed"
  exit 1
fi

# --- a static pod -----------------------------------------------------------
cat > "$work/pods/web.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: $namespace
spec:
  dnsPolicy: Default
  terminationGracePeriodSeconds: 2
  volumes:
    - name: data
      emptyDir: {}
  containers:
    - name: web
      image: $image
      imagePullPolicy: IfNotPresent
      command: ["busybox", "sh", "-c", "echo ok > /data/ok && exec busybox httpd -f -p 8080 -h /data"]
      ports:
        - containerPort: 8080
          hostPort: $host_port
          protocol: TCP
      volumeMounts:
        - name: data
          mountPath: /data
    - name: probed
      image: $image
      imagePullPolicy: IfNotPresent
      # Healthy for 20 s, then the probe fails and the kubelet restarts it.
      command: ["busybox", "sh", "-c", "echo start >> /data/starts; touch /tmp/healthy; busybox sleep 20; busybox rm -f /tmp/healthy; exec busybox sleep 3600"]
      livenessProbe:
        exec:
          command: ["busybox", "test", "-e", "/tmp/healthy"]
        initialDelaySeconds: 2
        periodSeconds: 2
        timeoutSeconds: 2
        failureThreshold: 2
      volumeMounts:
        - name: data
          mountPath: /data
EOF

pod_id() { cri pods --namespace "$namespace" -q | head -n 1; }
ready_pod() { cri pods --namespace "$namespace" --state ready -q | head -n 1; }
running() { [ "$(cri ps --pod "$1" --state running -q | wc -l)" -eq 2 ]; }
both_running() { local p; p=$(ready_pod) && [ -n "$p" ] && running "$p"; }
# containers JSON: name, attempt, id, state of every container of the pod.
containers() {
  cri ps -a --pod "$1" -o json | python3 -c '
import json, sys
for c in json.load(sys.stdin)["containers"]:
    print(c["metadata"]["name"], c["metadata"].get("attempt", 0), c["id"], c["state"])'
}

if wait_for 180 both_running; then
  pod=$(ready_pod)
  pass "the static pod is Running with its two containers (pod $pod)"
else
  fail "the static pod did not reach Running with two running containers in 180 s"
  cri pods --namespace "$namespace" || true
  [ -z "$(pod_id)" ] || cri ps -a --pod "$(pod_id)" || true
  logs
  echo "kubelet.sh: $passed passed, $failed failed"
  exit 1
fi

fetch() { busybox wget -q -T 2 -O- "http://$node_ip:$host_port/$1"; }
if wait_for 30 fetch ok && [ "$(fetch ok)" = ok ] && [ "$(fetch starts)" = start ]; then
  pass "hostPort $host_port on $node_ip reaches the pod, which serves the emptyDir both containers write"
else
  fail "http://$node_ip:$host_port/ok and /starts did not answer ok and start ($(fetch ok 2>&1 | head -c 200))"
fi

probed_id=$(containers "$pod" | awk '$1 == "probed" && $2 == 0 {print $3}')
if out=$(cri exec -s --timeout 5 "$probed_id" busybox true 2>&1); then
  pass "ExecSync runs a command in a container (what exec probes use)"
else
  fail "ExecSync failed, so the kubelet's exec probes cannot work: $out"
fi

restarted() { containers "$pod" | awk '$1 == "probed" && $2 >= 1 && $4 == "CONTAINER_RUNNING"' | grep -q .; }
if wait_for 120 restarted; then
  # The first attempt must have lived through its healthy 20 s: a restart
  # caused by a probe that errors from the start would come after ~6 s.
  lived=$(cri inspect -o json "$probed_id" | python3 -c '
import json, re, sys
from datetime import datetime
s = json.load(sys.stdin)["status"]
def t(v):  # RFC 3339; both times carry the same offset, which is ignored
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?", v)
    return datetime.fromisoformat(m.group(1)).timestamp() + float(m.group(2) or 0)
print(int(t(s["finishedAt"]) - t(s["startedAt"])))')
  if [ "$lived" -ge 18 ] && [ "$(cri pods --namespace "$namespace" -q | wc -l)" -eq 1 ] &&
     [ "$(fetch starts | wc -l)" -ge 2 ]; then
    pass "the liveness probe restarted the probed container after it turned unhealthy (${lived}s), in the same pod and emptyDir"
  else
    fail "the probed container restarted after ${lived}s (expected >= 18 s), or in a new pod, or lost its emptyDir"
  fi
else
  fail "the probed container was not restarted within 120 s of its probe failing"
  containers "$pod" || true
fi

# --- teardown -----------------------------------------------------------------
rm -f "$work/pods/web.yaml"
stopped() { [ -z "$(ready_pod)" ] && [ -z "$(cri ps --pod "$pod" --state running -q)" ]; }
if wait_for 90 stopped; then
  pass "removing the manifest stops the pod's containers and sandbox"
else
  fail "the pod still runs 90 s after its manifest was removed"
fi
removed() { [ -z "$(pod_id)" ]; }
if wait_for 150 removed && ! iptables -t nat -S | grep -q -- "--dport $host_port"; then
  pass "the kubelet removes the sandbox; no host port rule is left"
else
  fail "the sandbox or its host port rules are still there 150 s after the manifest was removed"
fi

[ "$failed" -eq 0 ] || logs
echo "kubelet.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
