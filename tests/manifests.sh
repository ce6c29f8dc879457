#!/usr/bin/env bash
# Checks what berth ships besides its Rust code, without building anything:
# - manifests/: yamllint (.yamllint), the Kubernetes API schemas of every
#   Kubernetes release from 1.30 that PyPI's kubernetes-validate ships
#   (--strict), and what no schema checks (references between the objects,
#   the kubelet config's field names, crictl.yaml, config.toml against the
#   README, the CNI network, the systemd unit);
# - scripts/install.sh and the Makefile, installing fake binaries into
#   DESTDIR staging roots: files land, what existed is left alone, uninstall
#   removes exactly what was installed, a second install changes nothing;
# - scripts/deploy.sh's kubelet switch and its way back, on fake kubelet
#   files, with a fake node that records the commands run on it.
# Each check prints PASS or FAIL; the last line counts them, and the exit
# status is 1 if any failed. Run as root (it installs the Python tools in a
# venv under /var/cache/berth-test-venv; Debian needs python3-venv).

# The checks given to `eval` are single-quoted on purpose.
# shellcheck disable=SC2016
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

KUBERNETES_VALIDATE=1.37.0
YAMLLINT=1.38.0
OLDEST_KUBERNETES=1.30 # appArmorProfile, used by berth-deploy.yaml, is 1.30's
SOCKET=/run/berth/berth.sock

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# check NAME CMD...: PASS if CMD succeeds. CMD runs with errexit off (it is
# tested by `if`), so check functions chain their steps with && or return.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    pass "$name"
  else
    fail "$name"
    [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
  fi
}

# step CMD...: a step the checks after it rely on; its failure is a FAIL.
step() {
  "$@" || fail "the step \`$*\` exited $?"
}

tmp=$(mktemp -d /tmp/berth-manifests.XXXXXX)
cleanup() {
  if [ "$failed" -eq 0 ]; then
    rm -rf "$tmp"
  else
    echo "manifests.sh: kept $tmp (install.log, deploy.log, host.log)"
  fi
}
trap cleanup EXIT

# --- the Python tools ------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
  venv=${BERTH_TEST_VENV:-/var/cache/berth-test-venv}
else
  venv=${BERTH_TEST_VENV:-$repo/target/test-venv}
fi
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3)
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE" ||
   ! "$venv/bin/yamllint" --version 2>/dev/null | grep -qx "yamllint $YAMLLINT"; then
  echo "manifests.sh: installing kubernetes-validate $KUBERNETES_VALIDATE and yamllint $YAMLLINT in $venv"
  if [ ! -x "$venv/bin/pip" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv" || {
      echo "manifests.sh: $python -m venv failed: install Debian's python3-venv" >&2
      exit 1
    }
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE" "yamllint==$YAMLLINT"
fi
vpy=$venv/bin/python
versions=$("$vpy" -c '
import sys
from kubernetes_validate.utils import all_versions
from packaging.version import Version
print(" ".join(sorted({v for v in all_versions() if Version(v) >= Version(sys.argv[1])}, key=Version)))
' "$OLDEST_KUBERNETES")

# --- yamllint -------------------------------------------------------------
yaml_files=(manifests/*.yaml)
lint() { "$venv/bin/yamllint" --strict -c .yamllint "$@"; }
check "yamllint (.yamllint) accepts ${yaml_files[*]}" lint "${yaml_files[@]}"
printf 'a:  1\nb: [1,2]   \n' > "$tmp/bad-style.yaml"
check "yamllint rejects a badly styled file (control)" eval '! lint "$tmp/bad-style.yaml"'

# --- Kubernetes API schemas -----------------------------------------------
# validate FILE: every document passes --strict against every version; a
# kind without a schema (kubernetes-validate only warns) is a failure too.
validate() {
  local file=$1 docs out args=() v
  for v in $versions; do args+=(-k "$v"); done
  docs=$("$vpy" -c 'import sys, yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$file")
  out=$("$venv/bin/kubernetes-validate" --strict "${args[@]}" "$file" 2>&1) || { echo "$out"; return 1; }
  if grep -v '^INFO ' <<< "$out" | grep -q .; then echo "$out"; return 1; fi
  [ "$(grep -c ' passed for resource ' <<< "$out")" -eq $((docs * ${#args[@]} / 2)) ] || {
    echo "$out"; echo "expected $docs documents x $((${#args[@]} / 2)) versions"; return 1; }
}
for f in manifests/runtimeclass.yaml manifests/berth-deploy.yaml; do
  check "$f passes the Kubernetes $versions schemas (strict)" validate "$f"
done
sed 's/^handler: builtin$/handlr: builtin/' manifests/runtimeclass.yaml > "$tmp/unknown-field.yaml"
check "a RuntimeClass with an unknown field fails (control)" eval '! validate "$tmp/unknown-field.yaml"'
sed 's/^kind: RuntimeClass$/kind: RuntimeClas/' manifests/runtimeclass.yaml > "$tmp/unknown-kind.yaml"
check "a kind with no schema fails (control)" eval '! validate "$tmp/unknown-kind.yaml"'

# --- what no schema checks ------------------------------------------------
# pycheck NAME: runs the Python below the matching `== NAME` marker.
pycheck() {
  "$vpy" - "$1" "$repo" "$SOCKET" <<'PY'
import json, pathlib, re, sys, tomllib, yaml

what, repo, socket = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
m = repo / "manifests"
def docs(name):
    return [d for d in yaml.safe_load_all((m / name).read_text()) if d]
def readme_defaults():
    text = (repo / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]
def need(cond, msg):
    if not cond:
        sys.exit(msg)

if what == "runtimeclass":
    rcs = docs("runtimeclass.yaml")
    handlers = {d["handler"]: d["metadata"]["name"] for d in rcs}
    need(sorted(handlers) == ["builtin", "crun", "runc"], f"handlers {sorted(handlers)}")
    conf = tomllib.loads((m / "config.toml").read_text())
    defined = {"builtin", "runc"} | set(conf.get("runtimes", {}))
    need(set(handlers) <= defined, f"handlers without a [runtimes.*] table: {set(handlers) - defined}")
    for d in rcs:
        need("overhead" not in d and "scheduling" not in d,
             f"{d['metadata']['name']}: overhead/scheduling must stay comments")
    text = (m / "runtimeclass.yaml").read_text()
    need(text.count("# overhead:") == 3 and text.count("# scheduling:") == 3,
         "each RuntimeClass documents overhead and scheduling in comments")

elif what == "deploy":
    objs = docs("berth-deploy.yaml")
    by = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs}
    namespaces = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    for o in objs:
        ns = o["metadata"].get("namespace")
        need(ns is None or ns in namespaces, f"{o['kind']}/{o['metadata']['name']}: namespace {ns} is not in the file")
    for b in [o for o in objs if o["kind"] == "ClusterRoleBinding"]:
        need(("ClusterRole", None, b["roleRef"]["name"]) in by, f"binding to a missing ClusterRole {b['roleRef']}")
        for s in b["subjects"]:
            need(("ServiceAccount", s["namespace"], s["name"]) in by, f"binding of a missing {s}")
    ds = {o["metadata"]["name"]: o for o in objs if o["kind"] == "DaemonSet"}
    need(sorted(ds) == ["berth-cleanup", "berth-deploy"], f"DaemonSets {sorted(ds)}")
    images = set()
    for name, d in ds.items():
        t = d["spec"]["template"]
        sel = d["spec"]["selector"]["matchLabels"]
        need(sel.items() <= t["metadata"]["labels"].items(), f"{name}: selector {sel} does not match its pods")
        spec = t["spec"]
        need(("ServiceAccount", d["metadata"]["namespace"], spec["serviceAccountName"]) in by,
             f"{name}: no ServiceAccount {spec['serviceAccountName']}")
        need(spec.get("hostPID") is True, f"{name}: nsenter into PID 1 needs hostPID")
        (c,) = spec["containers"]
        images.add(c["image"])
        env = {e["name"]: e.get("value") for e in c["env"]}
        need(env.get("HOST_ROOT") == "/host", f"{name}: HOST_ROOT is {env.get('HOST_ROOT')}")
        mounts = {v["name"]: v["mountPath"] for v in c["volumeMounts"]}
        vols = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
        need(any(vols.get(n) == "/" and p == "/host" for n, p in mounts.items()), f"{name}: the node's / is not at /host")
        need(not c.get("securityContext", {}).get("privileged"),
             f"{name}: privileged, which berth cannot run (the way back must run on berth)")
        caps = set(c["securityContext"]["capabilities"]["add"])
        need({"SYS_ADMIN", "SYS_PTRACE", "SYS_CHROOT"} <= caps, f"{name}: nsenter needs SYS_ADMIN, SYS_PTRACE, SYS_CHROOT")
        need(c["args"][0] in ("install", "uninstall"), f"{name}: args {c['args']}")
        for k, v in env.items():
            need(k not in ("SWITCH_KUBELET", "INSTALL_CNI") or v in ("true", "false"), f"{name}: {k}={v}")
    need(ds["berth-deploy"]["spec"]["template"]["spec"]["nodeSelector"] == {"berth.io/deploy": "install"}, "berth-deploy's nodeSelector")
    need(ds["berth-cleanup"]["spec"]["template"]["spec"]["nodeSelector"] == {"berth.io/deploy": "uninstall"}, "berth-cleanup's nodeSelector")
    need(ds["berth-deploy"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "install", "berth-deploy runs install")
    need(ds["berth-cleanup"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "uninstall", "berth-cleanup runs uninstall")
    need(len(images) == 1, f"the two DaemonSets run different images: {images}")

elif what == "kubelet":
    (k,) = docs("kubelet-config.yaml")
    need(k.get("apiVersion") == "kubelet.config.k8s.io/v1beta1" and k.get("kind") == "KubeletConfiguration",
         f"apiVersion/kind {k.get('apiVersion')} {k.get('kind')}")
    # The top-level fields of KubeletConfiguration (k8s.io/kubelet/config/v1beta1, types.go).
    fields = set("""apiVersion kind enableServer staticPodPath podLogsDir syncFrequency
    fileCheckFrequency httpCheckFrequency staticPodURL staticPodURLHeader address port
    readOnlyPort tlsCertFile tlsPrivateKeyFile tlsCipherSuites tlsCurvePreferences
    tlsMinVersion rotateCertificates serverTLSBootstrap authentication authorization
    registryPullQPS registryBurst imagePullCredentialsVerificationPolicy
    preloadedImagesVerificationAllowlist eventRecordQPS eventBurst enableDebuggingHandlers
    enableContentionProfiling healthzPort healthzBindAddress oomScoreAdj clusterDomain
    clusterDNS streamingConnectionIdleTimeout nodeStatusUpdateFrequency
    nodeStatusReportFrequency nodeLeaseDurationSeconds imageMinimumGCAge imageMaximumGCAge
    imageGCHighThresholdPercent imageGCLowThresholdPercent volumeStatsAggPeriod
    kubeletCgroups systemCgroups cgroupRoot cgroupsPerQOS cgroupDriver cpuManagerPolicy
    singleProcessOOMKill cpuManagerPolicyOptions cpuManagerReconcilePeriod
    draManagerReconcilePeriod memoryManagerPolicy topologyManagerPolicy
    topologyManagerScope topologyManagerPolicyOptions qosReserved runtimeRequestTimeout
    hairpinMode maxPods podCIDR podPidsLimit resolvConf runOnce cpuCFSQuota
    cpuCFSQuotaPeriod nodeStatusMaxImages maxOpenFiles contentType kubeAPIQPS kubeAPIBurst
    serializeImagePulls maxParallelImagePulls evictionHard evictionSoft
    evictionSoftGracePeriod evictionPressureTransitionPeriod evictionMaxPodGracePeriod
    evictionMinimumReclaim mergeDefaultEvictionSettings podsPerCore
    enableControllerAttachDetach protectKernelDefaults makeIPTablesUtilChains
    iptablesMasqueradeBit iptablesDropBit featureGates failSwapOn memorySwap
    containerLogMaxSize containerLogMaxFiles containerLogMaxWorkers
    containerLogMonitorInterval configMapAndSecretChangeDetectionStrategy systemReserved
    kubeReserved reservedSystemCPUs showHiddenMetricsForVersion systemReservedCgroup
    kubeReservedCgroup enforceNodeAllocatable allowedUnsafeSysctls volumePluginDir
    providerID kernelMemcgNotification logging enableSystemLogHandler
    enableSystemLogQuery shutdownGracePeriod shutdownGracePeriodCriticalPods
    shutdownGracePeriodByPodPriority crashLoopBackOff reservedMemory
    enableProfilingHandler enableDebugFlagsHandler seccompDefault memoryThrottlingFactor
    memoryReservationPolicy registerWithTaints registerNode tracing
    localStorageCapacityIsolation containerRuntimeEndpoint imageServiceEndpoint
    failCgroupV1 userNamespaces""".split())
    need(set(k) <= fields, f"not KubeletConfiguration fields: {sorted(set(k) - fields)}")
    need(k.get("containerRuntimeEndpoint") == "unix://" + socket, f"containerRuntimeEndpoint {k.get('containerRuntimeEndpoint')}")
    need(k.get("imageServiceEndpoint") == "unix://" + socket, f"imageServiceEndpoint {k.get('imageServiceEndpoint')}")
    defaults = tomllib.loads(readme_defaults())
    need(defaults["socket"] == socket, f"the README's socket is {defaults['socket']}")
    # berth's default, auto, is systemd on a systemd node with cgroup v2,
    # the normal node the example kubelet config is for.
    berth = {"auto": "systemd"}.get(defaults["cgroup_driver"], defaults["cgroup_driver"])
    need(k.get("cgroupDriver") == berth, f"cgroupDriver {k.get('cgroupDriver')} is not berth's {berth}")

elif what == "crictl":
    c = yaml.safe_load((m / "crictl.yaml").read_text())
    known = {"runtime-endpoint", "image-endpoint", "timeout", "debug", "pull-image-on-create", "disable-pull-on-run"}
    need(isinstance(c, dict) and set(c) <= known, f"not crictl config keys: {set(c) - known}")
    need(c["runtime-endpoint"] == c["image-endpoint"] == "unix://" + socket, f"endpoints {c}")

elif what == "config":
    text = (m / "config.toml").read_text()
    conf = tomllib.loads(text)
    block = re.search(r"^# --- defaults \(README: Configuration\) ---\n(.*?)^# --- end of defaults ---$", text, re.S | re.M)
    need(block, "no defaults block")
    uncommented = "".join(re.sub(r"^# ?", "", l) for l in block.group(1).splitlines(True))
    need(uncommented == readme_defaults(), "the commented defaults differ from the README's Configuration block")
    need(tomllib.loads(uncommented) == tomllib.loads(readme_defaults()), "the defaults do not parse")
    need(set(conf) <= {"runtimes"}, f"config.toml sets more than handlers: {sorted(conf)}")
    for name, h in conf.get("runtimes", {}).items():
        need(h.get("type") == "oci" and set(h) == {"type", "path"} and h["path"].startswith("/"), f"runtimes.{name}: {h}")

elif what == "cni":
    c = json.loads((m / "10-berth.conflist").read_text())
    need(c["cniVersion"] == "1.0.0", f"cniVersion {c['cniVersion']}")
    types = [p["type"] for p in c["plugins"]]
    need(types[0] == "bridge" and "portmap" in types and "loopback" not in types, f"plugins {types}")
    b = c["plugins"][0]
    need(b["bridge"] == "berth0" and b["isGateway"] is True and b["ipMasq"] is True, f"bridge {b}")
    need(b["ipam"]["type"] == "host-local" and b["ipam"]["ranges"] == [[{"subnet": "10.88.0.0/16"}]], f"ipam {b['ipam']}")

else:
    sys.exit(f"unknown check {what}")
PY
}
check "runtimeclass.yaml: handlers builtin, runc, crun, each configured; overhead and scheduling documented" pycheck runtimeclass
check "berth-deploy.yaml: namespace, RBAC and DaemonSet references resolve; host access; not privileged" pycheck deploy
check "kubelet-config.yaml: KubeletConfiguration fields only; berth's socket and cgroup driver" pycheck kubelet
check "crictl.yaml: crictl's keys; berth's socket" pycheck crictl
check "config.toml: parses; its commented defaults are the README's Configuration block" pycheck config
check "10-berth.conflist: cniVersion 1.0.0, bridge berth0 (gateway, masquerade), host-local 10.88.0.0/16, portmap, no loopback (berth brings lo up)" pycheck cni

# --- the systemd unit -------------------------------------------------------
unit_directives() {
  local d
  for d in '^Type=notify$' '^KillMode=process$' '^Delegate=yes$' '^LimitNOFILE=[0-9]' \
           '^OOMScoreAdjust=-999$' '^ExecStart=/usr/local/bin/berthd$' '^ExecReload=/bin/kill -HUP \$MAINPID$'; do
    grep -q "$d" manifests/berthd.service || { echo "manifests/berthd.service lacks $d"; return 1; }
  done
}
check "berthd.service: Type=notify, KillMode=process, Delegate=yes, LimitNOFILE, OOMScoreAdjust=-999, ExecReload sends SIGHUP" unit_directives

# --- scripts/install.sh ---------------------------------------------------
fake_bins=$tmp/bins
mkdir -p "$fake_bins"
printf '#!/bin/sh\necho fake berthd\n' > "$fake_bins/berthd"
printf '#!/bin/sh\necho fake berth-monitor\n' > "$fake_bins/berth-monitor"
printf '#!/bin/sh\necho fake berth-pump\n' > "$fake_bins/berth-pump"
chmod 0755 "$fake_bins"/*

# snap ROOT: every path with its type and mode, and every file's sha256.
snap() {
  (cd "$1" && find . -printf '%y %m %p\n' | LC_ALL=C sort &&
    find . -type f -exec sha256sum {} + | LC_ALL=C sort -k2)
}
inst() { DESTDIR=$1 BIN_DIR_SRC=$fake_bins "${@:2}" "$repo/scripts/install.sh" >> "$tmp/install.log" 2>&1; }
uninst() { DESTDIR=$1 "$repo/scripts/install.sh" --uninstall >> "$tmp/install.log" 2>&1; }

fresh=$tmp/fresh
mkdir -p "$fresh"
snap "$fresh" > "$tmp/fresh.before"
step inst "$fresh"
lands() {
  local r=$1 f
  for f in usr/local/bin/berthd usr/local/bin/berth-monitor usr/local/bin/berth-pump; do
    if [ ! -x "$r/$f" ] || ! cmp -s "$r/$f" "$fake_bins/${f##*/}"; then echo "$f"; return 1; fi
  done
  cmp -s "$r/etc/berth/config.toml" manifests/config.toml &&
    cmp -s "$r/etc/cni/net.d/10-berth.conflist" manifests/10-berth.conflist &&
    cmp -s "$r/etc/crictl.yaml" manifests/crictl.yaml &&
    cmp -s "$r/etc/systemd/system/berthd.service" manifests/berthd.service &&
    [ -f "$r/var/lib/berth/install-manifest" ] &&
    [ "$(stat -c %a "$r/usr/local/bin/berthd")" = 755 ] &&
    [ "$(stat -c %a "$r/etc/berth/config.toml")" = 644 ]
}
check "install.sh: binaries, unit, config, CNI network and crictl.yaml land in DESTDIR" lands "$fresh"
records_all() {
  local listed
  listed=$(awk '{print $3}' "$1/var/lib/berth/install-manifest" | LC_ALL=C sort)
  [ "$listed" = "$(cd "$1" && find . -mindepth 1 | sed 's/^\.//' | LC_ALL=C sort)" ]
}
check "install.sh: the manifest lists every file and directory it made" records_all "$fresh"
snap "$fresh" > "$tmp/fresh.installed"
step inst "$fresh"
check "install.sh: a second install changes nothing" cmp "$tmp/fresh.installed" <(snap "$fresh")
step uninst "$fresh"
check "install.sh --uninstall: leaves the staging root as it was before the install" cmp "$tmp/fresh.before" <(snap "$fresh")
check "install.sh --uninstall: a second uninstall is a no-op" uninst "$fresh"

# A node with its own config, CNI network and crictl.yaml.
site=$tmp/site
mkdir -p "$site/etc/berth" "$site/etc/cni/net.d" "$site/var/lib/berth/images" "$site/usr/local/bin"
echo 'log_level = "debug"' > "$site/etc/berth/config.toml"
echo '{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"flannel"}]}' > "$site/etc/cni/net.d/10-flannel.conflist"
echo 'runtime-endpoint: unix:///run/containerd/containerd.sock' > "$site/etc/crictl.yaml"
echo other > "$site/usr/local/bin/other-tool"
snap "$site" > "$tmp/site.before"
step inst "$site"
keeps_site() {
  [ "$(cat "$site/etc/berth/config.toml")" = 'log_level = "debug"' ] &&
    [ ! -e "$site/etc/cni/net.d/10-berth.conflist" ] &&
    grep -q containerd "$site/etc/crictl.yaml" &&
    ! grep -q -e /etc/berth/config.toml -e /etc/cni -e /etc/crictl.yaml -e other-tool \
      -e ' /var/lib/berth$' "$site/var/lib/berth/install-manifest" &&
    [ -x "$site/usr/local/bin/berthd" ]
}
check "install.sh: an existing config.toml, CNI network and crictl.yaml are left alone and not recorded" keeps_site
step inst "$site"
step uninst "$site"
check "install.sh --uninstall: removes only what it installed (the node's files stay)" cmp "$tmp/site.before" <(snap "$site")

# Changed site files and PREFIX.
changed=$tmp/changed
mkdir -p "$changed"
step inst "$changed" env PREFIX=/opt/berth
prefixed() {
  grep -qx 'ExecStart=/opt/berth/bin/berthd' "$changed/etc/systemd/system/berthd.service" &&
    [ -x "$changed/opt/berth/bin/berthd" ] && [ ! -e "$changed/usr/local/bin/berthd" ]
}
check "install.sh: PREFIX=/opt/berth puts the binaries there and rewrites ExecStart" prefixed
echo 'log_level = "debug"' >> "$changed/etc/berth/config.toml"
step uninst "$changed"
keeps_changed() {
  grep -q 'log_level = "debug"' "$changed/etc/berth/config.toml" &&
    [ ! -e "$changed/opt/berth/bin/berthd" ] && [ ! -e "$changed/etc/crictl.yaml" ] &&
    [ ! -e "$changed/etc/systemd/system/berthd.service" ] &&
    [ "$(cd "$changed" && find . -mindepth 1 | LC_ALL=C sort | tr '\n' ' ')" = "./etc ./etc/berth ./etc/berth/config.toml " ]
}
check "install.sh --uninstall: keeps a config it wrote but the admin changed, removes the rest" keeps_changed

refuses=$tmp/refuses
mkdir -p "$refuses"
step inst "$refuses"
mkdir -p "$refuses/var/lib/berth/kubelet-backup"
check "install.sh --uninstall: refuses while the kubelet is switched to berth" eval '! uninst "$refuses" && [ -x "$refuses/usr/local/bin/berthd" ]'
check "install.sh: fails without the binaries (no cargo build needed, but binaries are)" \
  eval '! DESTDIR=$tmp/nobins BIN_DIR_SRC=$tmp/missing "$repo/scripts/install.sh" >/dev/null 2>&1'

if command -v systemd-analyze >/dev/null; then
  # The unit as installed, pointed at a fake berthd that exists here.
  sed "s|^ExecStart=.*|ExecStart=$fresh/usr/local/bin/berthd|" manifests/berthd.service > "$tmp/berthd.service"
  mkdir -p "$fresh/usr/local/bin" && cp "$fake_bins/berthd" "$fresh/usr/local/bin/"
  verify_unit() {
    local out
    out=$(systemd-analyze verify --man=no "$1" 2>&1) || { echo "$out"; return 1; }
    [ -z "$out" ] || { echo "$out"; return 1; }
  }
  check "systemd-analyze verify: berthd.service has no error or warning" verify_unit "$tmp/berthd.service"
  sed 's/^KillMode=process$/KillMode=proces/' "$tmp/berthd.service" > "$tmp/bad.service"
  check "systemd-analyze verify: a misspelt directive is caught (control)" eval '! verify_unit "$tmp/bad.service"'
else
  echo "SKIP: systemd-analyze verify (install Debian's systemd package to run it)"
fi

# --- the Makefile -----------------------------------------------------------
mk=$tmp/make
make_roundtrip() {
  make -s -C "$repo" install DESTDIR="$mk" BIN_DIR_SRC="$fake_bins" > /dev/null &&
    lands "$mk" &&
    make -s -C "$repo" uninstall DESTDIR="$mk" > /dev/null &&
    [ -z "$(ls -A "$mk")" ]
}
mkdir -p "$mk"
check "make install / make uninstall DESTDIR=...: install and remove through scripts/install.sh" make_roundtrip
image_context() {
  local ctx=$tmp/context src
  make -s -C "$repo" image-context BIN_DIR_SRC="$fake_bins" IMAGE_CONTEXT="$ctx" > /dev/null || return 1
  while read -r -a srcs; do
    for src in "${srcs[@]}"; do
      [ -f "$ctx/$src" ] || { echo "the Dockerfile copies $src, missing from the context"; return 1; }
    done
  done < <(sed -n 's/^COPY \(.*\) [^ ]*$/\1/p' manifests/berth-deploy.Dockerfile)
  grep -q '^COPY ' manifests/berth-deploy.Dockerfile
}
check "make image-context: every file berth-deploy.Dockerfile copies is in the context" image_context
check "make build is cargo build --release of berthd and berth-runtime" \
  eval 'make -s -n -C "$repo" build | grep -qx "cargo build --release --locked -p berthd -p berth-runtime"'

# --- scripts/deploy.sh: the kubelet switch ------------------------------------
node=$tmp/node
mkdir -p "$node/run" "$node/var/lib/kubelet" "$node/etc/default"
cat > "$tmp/fakehost" <<'EOF'
#!/bin/sh
# Stands for nsenter into the node: records the command and answers it.
echo "$*" >> "$FAKE_LOG"
case "$*" in
  "systemctl is-active --quiet kubelet") exit "${FAKE_KUBELET_DOWN:-0}" ;;
  "systemctl show -p NRestarts --value kubelet") echo "${FAKE_NRESTARTS:-0}" ;;
  "systemctl is-active --quiet berthd") exit 3 ;;
esac
exit 0
EOF
chmod +x "$tmp/fakehost"
export FAKE_LOG=$tmp/host.log
kubelet_files() {
  cat > "$node/var/lib/kubelet/config.yaml" <<'EOF'
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
authentication:
  anonymous:
    enabled: false
EOF
  printf 'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.10"\n' \
    > "$node/var/lib/kubelet/kubeadm-flags.env"
  printf 'KUBELET_EXTRA_ARGS=--container-runtime-endpoint unix:///run/containerd/containerd.sock --cgroup-driver=systemd\n' \
    > "$node/etc/default/kubelet"
  chmod 0600 "$node/etc/default/kubelet"
}
deploy() {
  HOST_ROOT=$node HOST_EXEC=$tmp/fakehost KUBELET_SETTLE=0 LABEL_NODE=false \
    BIN_DIR_SRC=$fake_bins "$repo/scripts/deploy.sh" "$@" >> "$tmp/deploy.log" 2>&1
}
kubelet_files
snap "$node" > "$tmp/node.before"
: > "$FAKE_LOG"
step deploy switch-kubelet
switched() {
  grep -qx 'containerRuntimeEndpoint: unix:///run/berth/berth.sock' "$node/var/lib/kubelet/config.yaml" &&
    grep -qx 'cgroupDriver: cgroupfs' "$node/var/lib/kubelet/config.yaml" &&
    ! grep -q imageServiceEndpoint "$node/var/lib/kubelet/config.yaml" &&
    grep -q -- '--container-runtime-endpoint=unix:///run/berth/berth.sock --pod-infra-container-image=registry.k8s.io/pause:3.10"' \
      "$node/var/lib/kubelet/kubeadm-flags.env" &&
    grep -qx 'KUBELET_EXTRA_ARGS=--container-runtime-endpoint=unix:///run/berth/berth.sock --cgroup-driver=cgroupfs' \
      "$node/etc/default/kubelet" &&
    [ "$(stat -c %a "$node/etc/default/kubelet")" = 600 ] &&
    [ "$(grep -c 'systemctl restart kubelet' "$FAKE_LOG")" = 1 ]
}
check "deploy.sh switch-kubelet: config.yaml and both flags files point at berth (cgroupfs); one kubelet restart" switched
backed_up() {
  local f
  for f in var/lib/kubelet/config.yaml var/lib/kubelet/kubeadm-flags.env etc/default/kubelet; do
    [ -f "$node/var/lib/berth/kubelet-backup/orig/$f" ] || { echo "no backup of /$f"; return 1; }
  done
  # The backups are the files as they were.
  (cd "$node/var/lib/berth/kubelet-backup/orig" && find . -type f -exec sha256sum {} +) | LC_ALL=C sort -k2 |
    diff - <(grep '^[0-9a-f]\{64\}  \./\(var/lib/kubelet\|etc/default\)/' "$tmp/node.before")
}
check "deploy.sh switch-kubelet: keeps a byte-exact backup of every file it changed" backed_up
snap "$node" > "$tmp/node.switched"
: > "$FAKE_LOG"
step deploy switch-kubelet
check "deploy.sh switch-kubelet again: changes nothing, restarts nothing" \
  eval 'cmp "$tmp/node.switched" <(snap "$node") && ! grep -q restart "$FAKE_LOG"'
: > "$FAKE_LOG"
step deploy restore-kubelet
restored() {
  diff <(grep -v ' \./run' "$tmp/node.before") <(snap "$node" | grep -v ' \./run' | grep -v ' \./var/lib/berth$') &&
    [ ! -e "$node/var/lib/berth/kubelet-backup" ] &&
    [ "$(grep -c 'systemctl restart kubelet' "$FAKE_LOG")" = 1 ]
}
check "deploy.sh restore-kubelet: the kubelet's files are back byte for byte, the backup is gone, one restart" restored
check "deploy.sh restore-kubelet again: nothing to restore" eval 'deploy restore-kubelet && [ ! -e "$node/var/lib/berth/kubelet-backup" ]'

# A kubelet that does not stay up on berth: the switch is undone.
rm -rf "$node/var/lib/berth"
kubelet_files
snap "$node" > "$tmp/node.before"
rolled_back() {
  ! FAKE_NRESTARTS=2 deploy switch-kubelet &&
    diff <(grep -v ' \./run' "$tmp/node.before") <(snap "$node" | grep -v ' \./run' | grep -v ' \./var/lib/berth$') &&
    [ ! -e "$node/var/lib/berth/kubelet-backup" ]
}
check "deploy.sh switch-kubelet: a kubelet that restarts on berth gets its files back and the switch fails" rolled_back

# A file changed by the admin after the switch is not overwritten silently.
step deploy switch-kubelet
echo 'maxPods: 50' >> "$node/var/lib/kubelet/config.yaml"
refuses_changed() {
  ! deploy restore-kubelet && grep -q 'maxPods: 50' "$node/var/lib/kubelet/config.yaml" &&
    [ -d "$node/var/lib/berth/kubelet-backup" ] &&
    FORCE_RESTORE=true deploy restore-kubelet && ! grep -q maxPods "$node/var/lib/kubelet/config.yaml"
}
check "deploy.sh restore-kubelet: refuses to overwrite a file changed since the switch, unless FORCE_RESTORE=true" refuses_changed

# On a systemd node with cgroup v2 the kubelet keeps (or gets) the systemd
# driver, which berth's default picks there too.
mkdir -p "$node/run/systemd/system" "$node/sys/fs/cgroup"
touch "$node/sys/fs/cgroup/cgroup.controllers"
systemd_switched() {
  deploy switch-kubelet &&
    grep -qx 'cgroupDriver: systemd' "$node/var/lib/kubelet/config.yaml" &&
    grep -qx 'KUBELET_EXTRA_ARGS=--container-runtime-endpoint=unix:///run/berth/berth.sock --cgroup-driver=systemd' \
      "$node/etc/default/kubelet" &&
    deploy restore-kubelet
}
check "deploy.sh switch-kubelet on a systemd node with cgroup v2: the kubelet keeps the systemd driver" systemd_switched
rm -rf "$node/run/systemd" "$node/sys"

mkdir -p "$tmp/empty-node/run"
check "deploy.sh switch-kubelet: fails on a node without kubelet config or flags" \
  eval '! HOST_ROOT=$tmp/empty-node HOST_EXEC=$tmp/fakehost "$repo/scripts/deploy.sh" switch-kubelet'

# The whole install and uninstall, as the DaemonSets run them.
rm -rf "$node"
mkdir -p "$node/run" "$node/var/lib/kubelet" "$node/etc/default"
kubelet_files
rm -f "$node/etc/default/kubelet"
snap "$node" > "$tmp/node.before"
: > "$FAKE_LOG"
step deploy install
installed_node() {
  [ -x "$node/usr/local/bin/berthd" ] && [ -f "$node/etc/systemd/system/berthd.service" ] &&
    [ ! -e "$node/etc/cni/net.d/10-berth.conflist" ] &&
    grep -qx 'containerRuntimeEndpoint: unix:///run/berth/berth.sock' "$node/var/lib/kubelet/config.yaml" &&
    grep -qx 'systemctl daemon-reload' "$FAKE_LOG" && grep -qx 'systemctl enable berthd' "$FAKE_LOG" &&
    grep -qx 'systemctl start berthd' "$FAKE_LOG" &&
    [ "$(grep -n 'systemctl start berthd' "$FAKE_LOG" | cut -d: -f1)" -lt \
      "$(grep -n 'systemctl restart kubelet' "$FAKE_LOG" | cut -d: -f1)" ]
}
check "deploy.sh install: installs, starts berthd, then switches the kubelet (no CNI network by default)" installed_node
: > "$FAKE_LOG"
step deploy uninstall
uninstalled_node() {
  diff <(grep -v ' \./run' "$tmp/node.before") <(snap "$node" | grep -v ' \./run') &&
    grep -qx 'systemctl disable --now berthd' "$FAKE_LOG" &&
    [ "$(grep -n 'systemctl restart kubelet' "$FAKE_LOG" | cut -d: -f1)" -lt \
      "$(grep -n 'systemctl disable --now berthd' "$FAKE_LOG" | cut -d: -f1)" ]
}
check "deploy.sh uninstall: kubelet restored first, berthd stopped, the node as it was" uninstalled_node

echo "manifests.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
