//! Pod networking through the real CNI plugins (Debian's
//! containernetworking-plugins: bridge + host-local): pod IPs, pods reaching
//! each other, /etc/hosts, clean failures, and DEL releasing the IP, also
//! after a berthd crash.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::fixtures::{self, Compression, ImageConfig, ManifestKind, Platform};
use berth_tests::net::{PLUGINS, TestNet};
use berth_tests::registry::Registry;
use berth_tests::{Berthd, mounts_under};
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use nix::sys::signal::Signal;
use tonic::Code;
use tonic::transport::Channel;

type Client = RuntimeServiceClient<Channel>;

fn config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "net-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: HashMap::new(),
        ..Default::default()
    }
}

async fn run(c: &mut Client, name: &str) -> Result<String, tonic::Status> {
    run_config(c, config(name)).await
}

async fn run_config(c: &mut Client, cfg: PodSandboxConfig) -> Result<String, tonic::Status> {
    c.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(cfg),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn pod_status(c: &mut Client, id: &str) -> PodSandboxStatus {
    c.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .expect("status")
    .into_inner()
    .status
    .expect("status")
}

async fn pod_state(c: &mut Client, id: &str) -> i32 {
    pod_status(c, id).await.state
}

async fn pod_ip(c: &mut Client, id: &str) -> String {
    pod_status(c, id)
        .await
        .network
        .map(|n| n.ip)
        .unwrap_or_default()
}

/// (rx, tx) bytes of the pod's eth0, from PodSandboxStats.
async fn eth0_counters(c: &mut Client, id: &str) -> (u64, u64) {
    let stats = c
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .expect("pod stats")
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .and_then(|l| l.network)
        .expect("network stats");
    let eth0 = stats.default_interface.expect("eth0");
    assert_eq!(eth0.name, "eth0");
    assert!(stats.interfaces.iter().all(|i| i.name != "lo"));
    let v = |x: Option<UInt64Value>| x.map(|v| v.value).unwrap_or(0);
    (v(eth0.rx_bytes), v(eth0.tx_bytes))
}

async fn stop(c: &mut Client, id: &str) -> Result<(), tonic::Status> {
    c.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .map(|_| ())
}

async fn remove(c: &mut Client, id: &str) {
    c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("remove");
}

/// The inode of the user namespace owning the namespace pinned at `pin`
/// (`NS_GET_USERNS`).
fn net_ns_owner(pin: &Path) -> u64 {
    nix::ioctl_none!(ns_get_userns, 0xb7, 0x1);
    let f = std::fs::File::open(pin).expect("pin");
    #[allow(unsafe_code)]
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor.
    let fd = unsafe { ns_get_userns(std::os::fd::AsRawFd::as_raw_fd(&f)) }.expect("NS_GET_USERNS");
    #[allow(unsafe_code)]
    // SAFETY: the ioctl returned a descriptor we now own.
    let owner = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::os::unix::fs::MetadataExt::ino(&owner.metadata().expect("owner"))
}

fn in_netns(b: &Berthd, id: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!(
            "--net={}",
            b.state.join("ns").join(id).join("net").display()
        ))
        .args(cmd)
        .output()
        .expect("nsenter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_ips_and_reach_each_other() {
    let b = Berthd::start().await;
    let net = TestNet::install(&b, 1, &[]);
    let mut c = b.runtime().await;
    // Host ports without a portmap plugin: a clear refusal, nothing left.
    let mut cfg = config("ports");
    cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18_999,
        host_ip: String::new(),
    }];
    let e = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("no portmap");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("portMappings"), "{}", e.message());
    assert!(net.allocated().is_empty());
    assert!(mounts_under(&b.state).is_empty());

    let st = c
        .status(StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let ready = st
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(ready.status, "{ready:?}");

    let a = run(&mut c, "alpha").await.expect("run alpha");
    let z = run(&mut c, "zulu").await.expect("run zulu");
    let (ip_a, ip_z) = (pod_ip(&mut c, &a).await, pod_ip(&mut c, &z).await);
    assert!(ip_a.starts_with(&net.subnet_prefix), "{ip_a}");
    assert!(ip_z.starts_with(&net.subnet_prefix), "{ip_z}");
    assert_ne!(ip_a, ip_z);
    assert_eq!(net.allocated(), {
        let mut v = vec![ip_a.clone(), ip_z.clone()];
        v.sort();
        v
    });

    // The address is on eth0 inside the pod; /etc/hosts names it.
    let addr = in_netns(&b, &a, &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&ip_a),
        "{addr:?}"
    );
    let hosts =
        std::fs::read_to_string(b.state.join("pods").join(&a).join("hosts")).expect("hosts");
    assert!(hosts.contains(&format!("{ip_a}\talpha")), "{hosts}");

    // alpha reaches zulu by pod IP, and its eth0 counters show it.
    let before = eth0_counters(&mut c, &a).await;
    let ping = in_netns(
        &b,
        &a,
        &["busybox", "ping", "-c", "3", "-s", "1000", "-W", "5", &ip_z],
    );
    assert!(ping.status.success(), "ping {ip_z}: {ping:?}");
    let after = eth0_counters(&mut c, &a).await;
    assert!(after.0 >= before.0 + 3000, "rx {before:?} -> {after:?}");
    assert!(after.1 >= before.1 + 3000, "tx {before:?} -> {after:?}");

    // Stop releases alpha's IP (DEL), idempotently.
    stop(&mut c, &a).await.expect("stop");
    stop(&mut c, &a).await.expect("stop again");
    assert_eq!(net.allocated(), [ip_z.as_str()]);
    assert_eq!(pod_ip(&mut c, &a).await, "");

    // Remove without a Stop first releases zulu's too.
    remove(&mut c, &a).await;
    remove(&mut c, &z).await;
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert_eq!(mounts_under(&b.state).len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_fails_the_pod_cleanly() {
    let b = Berthd::start().await;
    // A plugin that fails ADD with a CNI error object, after the bridge
    // has already handed out an IP.
    let failing = b.dir.path().join("cni-bin/failing");
    std::fs::write(
        &failing,
        "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"quota exceeded\",\"details\":\"no more pods here\"}'\n  exit 1\nfi\nexit 0\n",
    )
    .expect("failing plugin");
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let net = TestNet::install(&b, 2, &[serde_json::json!({"type": "failing"})]);
    let mut c = b.runtime().await;

    let e = run(&mut c, "doomed").await.expect_err("plugin fails");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(
        e.message().contains("quota exceeded: no more pods here"),
        "{}",
        e.message()
    );
    // DEL ran for the whole list: the bridge's IP was released.
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert_eq!(mounts_under(&b.state).len(), 0, "a namespace pin was left");
    let pods = c
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(pods.is_empty());

    // A plugin missing from the bin dirs: Status not ready, pod refused.
    std::fs::write(
        b.dir.path().join("net.d/10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .expect("conflist");
    let e = run(&mut c, "doomed").await.expect_err("missing plugin");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("no-such-plugin"), "{}", e.message());
    assert_eq!(mounts_under(&b.state).len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_after_a_berthd_crash_still_releases_the_ip() {
    let mut b = Berthd::start().await;
    let net = TestNet::install(&b, 3, &[]);
    let id = run(&mut b.runtime().await, "survivor").await.expect("run");
    assert_eq!(net.allocated().len(), 1);
    b.stop_with(Signal::SIGKILL);
    b.restart().await;
    let mut c = b.runtime().await;
    assert!(pod_ip(&mut c, &id).await.starts_with(&net.subnet_prefix));
    stop(&mut c, &id).await.expect("stop");
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    remove(&mut c, &id).await;
    assert_eq!(mounts_under(&b.state).len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_cidr_from_the_kubelet_reaches_host_local() {
    let b = Berthd::start().await;
    // The bridge network, but with no ranges of its own: they come from
    // UpdateRuntimeConfig through the ipRanges capability.
    let net = TestNet::install(&b, 4, &[]);
    let conf = b.dir.path().join("net.d/10-test.conflist");
    let mut list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&conf).expect("read")).expect("json");
    let bridge = &mut list["plugins"][0];
    bridge["capabilities"] = serde_json::json!({"ipRanges": true});
    bridge["ipam"]
        .as_object_mut()
        .expect("ipam")
        .remove("ranges");
    std::fs::write(&conf, list.to_string()).expect("write");
    let cidr = format!("{}.0/24", net.subnet_prefix);

    let mut c = b.runtime().await;
    let e = c
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: "not-a-cidr".into(),
                }),
            }),
        })
        .await
        .expect_err("bad CIDR");
    assert_eq!(e.code(), Code::InvalidArgument);
    c.update_runtime_config(UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.clone(),
            }),
        }),
    })
    .await
    .expect("UpdateRuntimeConfig");

    let id = run(&mut c, "cidr").await.expect("run");
    let ip = pod_ip(&mut c, &id).await;
    assert!(ip.starts_with(&net.subnet_prefix), "{ip} not in {cidr}");
    // DEL gets the same ranges, so the IP is released.
    stop(&mut c, &id).await.expect("stop");
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    remove(&mut c, &id).await;
}

/// The node's first global IPv4 address.
fn node_ip() -> String {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .expect("the node has a global IPv4 address")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_reach_the_pod_through_portmap() {
    let b = Berthd::start().await;
    let net = TestNet::install(
        &b,
        5,
        &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
    );
    let host_port = 18_000 + (std::process::id() % 1000) as i32;
    let mut cfg = config("web");
    cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    let mut c = b.runtime().await;
    let id = run_config(&mut c, cfg).await.expect("run");
    let pin = b.state.join("ns").join(&id).join("net");

    // A one-shot server in the pod's network namespace.
    let mut server = Command::new("nsenter")
        .arg(format!("--net={}", pin.display()))
        .args([
            "busybox",
            "sh",
            "-c",
            "echo hello-from-pod | busybox nc -l -p 8080",
        ])
        .spawn()
        .expect("server");
    let addr = node_ip();
    let mut got = String::new();
    for _ in 0..50 {
        let out = Command::new("busybox")
            .args(["nc", "-w", "2", &addr, &host_port.to_string()])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("nc");
        got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got.contains("hello-from-pod") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        got.contains("hello-from-pod"),
        "{addr}:{host_port} answered {got:?}"
    );

    // Stop removes the port's rules with the rest of the network.
    stop(&mut c, &id).await.expect("stop");
    let rules = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .expect("iptables");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains(&format!("--dport {host_port}")), "{rules}");
    remove(&mut c, &id).await;
    assert!(net.allocated().is_empty());
}

/// A plugin that logs each command, answers ADD with a fixed address, and
/// fails CHECK or DEL while `fail-check` / `fail-del` exist beside it.
fn recorder_plugin(b: &Berthd) -> (PathBuf, PathBuf) {
    let dir = b.dir.path().join("cni-bin");
    let log = b.dir.path().join("recorder.log");
    let script = format!(
        r#"#!/bin/sh
echo "$CNI_COMMAND" >> {log}
fail() {{ echo "{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"$1\"}}"; exit 1; }}
case "$CNI_COMMAND" in
ADD) echo '{{"cniVersion":"1.0.0","ips":[{{"address":"10.250.0.9/24"}}]}}' ;;
CHECK) [ -e {dir}/fail-check ] && fail "eth0 has gone missing" ;;
DEL) [ -e {dir}/fail-del ] && fail "the network daemon is unreachable" ;;
esac
exit 0
"#,
        log = log.display(),
        dir = dir.display()
    );
    let path = dir.join("recorder");
    std::fs::write(&path, script).expect("plugin");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        b.dir.path().join("net.d/10-rec.conflist"),
        r#"{"cniVersion":"1.0.0","name":"rec","plugins":[{"type":"recorder"}]}"#,
    )
    .expect("conflist");
    (dir, log)
}

async fn verbose_info(c: &mut Client, id: &str) -> serde_json::Value {
    let r = c
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner();
    serde_json::from_str(&r.info["info"]).expect("info is JSON")
}

/// Polls `cond` for up to 20 s.
async fn eventually<F: FnMut() -> bool>(mut cond: F) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_del_is_reported_and_retried_in_the_background() {
    let b = Berthd::start_with(berth_tests::Options {
        cni: "del_retry_interval = \"1s\"".into(),
        ..Default::default()
    })
    .await;
    let (dir, log) = recorder_plugin(&b);
    let mut c = b.runtime().await;
    let id = run(&mut c, "del-retry").await.expect("run");
    assert_eq!(pod_ip(&mut c, &id).await, "10.250.0.9");

    std::fs::write(dir.join("fail-del"), "").expect("flag");
    let e = stop(&mut c, &id).await.expect_err("DEL fails");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("unreachable"), "{e:?}");
    // The pod is stopped; its network is still held, and says why.
    let info = verbose_info(&mut c, &id).await;
    assert!(
        info["networkError"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable")),
        "{info}"
    );
    assert_eq!(info["cniNetwork"], "rec", "{info}");
    // Remove refuses while DEL fails, so the kubelet retries.
    let e = c
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .expect_err("remove waits for DEL");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Once the plugin works again, berthd's own retry releases it.
    std::fs::remove_file(dir.join("fail-del")).expect("unflag");
    let dels_before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("DEL")
        .count();
    let mut released = false;
    for _ in 0..100 {
        let info = verbose_info(&mut c, &id).await;
        if info["cniNetwork"].is_null() && info["networkError"].is_null() {
            released = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(released, "{}", verbose_info(&mut c, &id).await);
    let dels = std::fs::read_to_string(&log)
        .expect("log")
        .matches("DEL")
        .count();
    assert!(dels > dels_before, "no DEL after the plugin recovered");
    // Nothing left to release: Remove no longer calls the plugin.
    remove(&mut c, &id).await;
    assert_eq!(
        std::fs::read_to_string(&log)
            .expect("log")
            .matches("DEL")
            .count(),
        dels
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_berthd_checks_each_pods_network() {
    let mut b = Berthd::start().await;
    let (dir, log) = recorder_plugin(&b);
    let mut c = b.runtime().await;
    let good = run(&mut c, "check-good").await.expect("run");
    assert!(
        !std::fs::read_to_string(&log)
            .expect("log")
            .contains("CHECK")
    );

    b.stop_with(Signal::SIGTERM);
    b.restart().await;
    let mut c = b.runtime().await;
    assert!(
        eventually(|| std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("CHECK"))
        .await,
        "no CHECK after the restart"
    );
    assert!(verbose_info(&mut c, &good).await["networkError"].is_null());

    // A plugin whose CHECK fails: the pod's status says so.
    std::fs::write(dir.join("fail-check"), "").expect("flag");
    b.stop_with(Signal::SIGKILL);
    b.restart().await;
    let mut c = b.runtime().await;
    let mut info = serde_json::Value::Null;
    for _ in 0..100 {
        info = verbose_info(&mut c, &good).await;
        if !info["networkError"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        info["networkError"]
            .as_str()
            .is_some_and(|m| m.contains("eth0 has gone missing")),
        "{info}"
    );
    stop(&mut c, &good).await.expect("stop");
    remove(&mut c, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_static_ips_and_mac_reach_their_plugins() {
    let b = Berthd::start().await;
    for p in ["static", "tuning", "bandwidth"] {
        let _ = std::os::unix::fs::symlink(
            Path::new(PLUGINS).join(p),
            b.dir.path().join("cni-bin").join(p),
        );
    }
    let net = TestNet::install(
        &b,
        6,
        &[
            serde_json::json!({"type": "tuning", "capabilities": {"mac": true}}),
            serde_json::json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
        ],
    );
    // Static addresses instead of host-local.
    let file = b.dir.path().join("net.d/10-test.conflist");
    let mut list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    list["plugins"][0]["ipam"] = serde_json::json!({"type": "static"});
    list["plugins"][0]["capabilities"] = serde_json::json!({"ips": true});
    std::fs::write(&file, list.to_string()).expect("write");

    let ip = format!("{}.77", net.subnet_prefix);
    let mac = "02:42:ac:11:00:99";
    let mut cfg = config("shaped");
    cfg.annotations = HashMap::from([
        ("kubernetes.io/ingress-bandwidth".into(), "10M".into()),
        ("kubernetes.io/egress-bandwidth".into(), "20M".into()),
        ("berth.io/ips".into(), format!("{ip}/24")),
        ("berth.io/mac".into(), mac.into()),
    ]);
    let mut c = b.runtime().await;
    // A bad annotation is refused before anything is made.
    let mut bad = cfg.clone();
    bad.annotations
        .insert("kubernetes.io/egress-bandwidth".into(), "fast".into());
    let e = run_config(&mut c, bad).await.expect_err("bad quantity");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("egress-bandwidth"), "{e:?}");
    assert!(std::fs::read_dir(b.state.join("ns")).map_or(true, |mut d| d.next().is_none()));

    let id = run_config(&mut c, cfg).await.expect("run");
    assert_eq!(pod_ip(&mut c, &id).await, ip);
    let link = in_netns(&b, &id, &["ip", "-o", "link", "show", "eth0"]);
    assert!(
        String::from_utf8_lossy(&link.stdout).contains(mac),
        "{link:?}"
    );
    let qdiscs = || {
        let out = Command::new("tc")
            .args(["qdisc", "show"])
            .output()
            .expect("tc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shaped = qdiscs();
    assert!(shaped.contains("rate 10Mbit"), "{shaped}");
    assert!(shaped.contains("rate 20Mbit"), "{shaped}");

    stop(&mut c, &id).await.expect("stop");
    let after = qdiscs();
    assert!(!after.contains("rate 20Mbit"), "{after}");
    remove(&mut c, &id).await;
}

/// Creates and starts a container running `command` in a pod.
async fn start_in(
    c: &mut Client,
    pod: &str,
    pod_config: &PodSandboxConfig,
    image: &str,
    name: &str,
    command: &[&str],
) -> String {
    let id = c
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: command.iter().map(|s| s.to_string()).collect(),
                log_path: format!("{name}.log"),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    c.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("start");
    id
}

/// Waits for the container to exit; returns its exit code and its log's
/// messages.
async fn finish(c: &mut Client, id: &str, log: &Path) -> (i32, String) {
    let st = berth_tests::setup::wait_exited(c, id).await;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    (
        st.exit_code,
        berth_tests::setup::log_messages(&text).join("\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_reach_pods_by_ip_and_host_port_with_their_dns() {
    let reg = Registry::start();
    let img = fixtures::Image::new(
        ManifestKind::Oci,
        ImageConfig::for_platform(&Platform::linux_amd64()).cmd(["/bin/sh"]),
    )
    .layer(fixtures::busybox_layer(Compression::Gzip));
    fixtures::push_image(&reg, "test/net", "1", &img).await;
    let image = reg.image("test/net:1");
    let b = Berthd::start().await;
    b.pull(&image, None).await.expect("pull");
    let net = TestNet::install(
        &b,
        7,
        &[serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}})],
    );
    let logs = b.dir.path().join("logs");
    let host_port = 19_000 + (std::process::id() % 1000) as i32;
    let pod_config = |name: &str| {
        let mut cfg = config(name);
        cfg.log_directory = logs.join(name).display().to_string();
        cfg.linux = Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/berth-test-net-{}-{name}", std::process::id()),
            ..Default::default()
        });
        cfg
    };
    let mut c = b.runtime().await;
    let client = c.clone();
    let run_cfg = |cfg: PodSandboxConfig| {
        let mut c = client.clone();
        async move {
            c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            })
            .await
            .expect("run")
            .into_inner()
            .pod_sandbox_id
        }
    };

    // A web server pod publishing a host port; it serves its own /etc.
    let mut web_cfg = pod_config("web");
    web_cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    let web = run_cfg(web_cfg.clone()).await;
    let web_ip = pod_ip(&mut c, &web).await;
    assert!(web_ip.starts_with(&net.subnet_prefix), "{web_ip}");
    start_in(
        &mut c,
        &web,
        &web_cfg,
        &image,
        "httpd",
        &["busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"],
    )
    .await;

    // A client pod with cluster DNS settings fetches by pod IP.
    let mut client_cfg = pod_config("client");
    client_cfg.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec![
            "net-test.svc.cluster.local".into(),
            "svc.cluster.local".into(),
        ],
        options: vec!["ndots:5".into()],
    });
    let client = run_cfg(client_cfg.clone()).await;
    let client_ip = pod_ip(&mut c, &client).await;
    let fetch = format!(
        "for i in $(busybox seq 50); do busybox wget -q -O- http://{web_ip}:8080/hostname && break; sleep 0.1; done; \
         busybox cat /etc/resolv.conf; busybox grep client /etc/hosts"
    );
    let id = start_in(
        &mut c,
        &client,
        &client_cfg,
        &image,
        "fetch",
        &["sh", "-c", &fetch],
    )
    .await;
    let (code, out) = finish(&mut c, &id, &logs.join("client/fetch.log")).await;
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"web"), "{out}");
    assert!(lines.contains(&"nameserver 10.96.0.10"), "{out}");
    assert!(
        lines.contains(&"search net-test.svc.cluster.local svc.cluster.local"),
        "{out}"
    );
    assert!(lines.contains(&"options ndots:5"), "{out}");
    assert!(
        out.contains(&format!("{client_ip}\tclient"))
            || out.contains(&format!("{client_ip} client")),
        "{out}"
    );

    // A host-network pod reaches the host port through the node's address,
    // and has the node's resolv.conf.
    let mut host_cfg = pod_config("hostnet");
    host_cfg.linux.as_mut().expect("linux").security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: 2,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hostnet = run_cfg(host_cfg.clone()).await;
    assert_eq!(pod_ip(&mut c, &hostnet).await, "");
    let fetch = format!(
        "for i in $(busybox seq 50); do busybox wget -q -O- http://{}:{host_port}/hostname && break; sleep 0.1; done; busybox cat /etc/resolv.conf",
        node_ip()
    );
    let id = start_in(
        &mut c,
        &hostnet,
        &host_cfg,
        &image,
        "fetch",
        &["sh", "-c", &fetch],
    )
    .await;
    let (code, out) = finish(&mut c, &id, &logs.join("hostnet/fetch.log")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("web\n"), "{out}");
    let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for l in node_resolv.lines().filter(|l| l.starts_with("nameserver")) {
        assert!(out.contains(l), "{l} missing from {out}");
    }

    for pod in [web, client, hostnet] {
        stop(&mut c, &pod).await.expect("stop");
        remove(&mut c, &pod).await;
    }
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(mounts_under(&b.state).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_default_network_gives_pods_an_address() {
    let b = Berthd::start().await;
    // manifests/10-berth.conflist, on this test's own bridge and subnet;
    // its loopback is berth's own.
    let net = TestNet::install_default(&b, 8, false);

    let mut c = b.runtime().await;
    let id = run(&mut c, "default-net").await.expect("run");
    let ip = pod_ip(&mut c, &id).await;
    assert!(ip.starts_with(&net.subnet_prefix), "{ip}");
    let lo = in_netns(&b, &id, &["ip", "-o", "addr", "show", "lo"]);
    assert!(
        String::from_utf8_lossy(&lo.stdout).contains("127.0.0.1"),
        "{lo:?}"
    );
    stop(&mut c, &id).await.expect("stop");
    remove(&mut c, &id).await;
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_its_own_user_namespace_is_networked_like_any_other() {
    let b = Berthd::start().await;
    let net = TestNet::install(&b, 9, &[]);
    let mut c = b.runtime().await;
    let mut cfg = config("userns");
    cfg.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(berth_tests::setup::userns_pod(300_000)),
        ..Default::default()
    });
    let u = run_config(&mut c, cfg)
        .await
        .expect("run in a user namespace");
    let plain = run(&mut c, "plain").await.expect("run plain");
    let (ip_u, ip_p) = (pod_ip(&mut c, &u).await, pod_ip(&mut c, &plain).await);
    assert!(ip_u.starts_with(&net.subnet_prefix), "{ip_u}");
    // Its network namespace belongs to its user namespace (the ioctl
    // NS_GET_USERNS, as `lsns -o NS,PNS` would show), and the pods reach
    // each other.
    let user_ns = std::fs::metadata(b.state.join("ns").join(&u).join("user")).expect("user pin");
    let owner = net_ns_owner(&b.state.join("ns").join(&u).join("net"));
    assert_eq!(owner, std::os::unix::fs::MetadataExt::ino(&user_ns));
    let ping = in_netns(
        &b,
        &plain,
        &["busybox", "ping", "-c", "2", "-W", "5", &ip_u],
    );
    assert!(ping.status.success(), "ping {ip_u}: {ping:?}");
    let ping = in_netns(&b, &u, &["busybox", "ping", "-c", "2", "-W", "5", &ip_p]);
    assert!(ping.status.success(), "ping {ip_p}: {ping:?}");
    for id in [&u, &plain] {
        stop(&mut c, id).await.expect("stop");
        remove(&mut c, id).await;
    }
    assert!(net.allocated().is_empty(), "{:?}", net.allocated());
    assert!(mounts_under(&b.state).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_node_reboot_a_pod_is_not_ready_and_its_network_is_released() {
    let mut b = Berthd::start().await;
    let (_dir, log) = recorder_plugin(&b);
    let mut c = b.runtime().await;
    let id = run(&mut c, "rebooted").await.expect("run");
    assert_eq!(
        pod_state(&mut c, &id).await,
        PodSandboxState::SandboxReady as i32
    );

    // A reboot, as far as berth can tell: berthd gone without a word, and
    // <state> (a tmpfs under /run on a node) gone with every mount in it.
    b.stop_with(Signal::SIGKILL);
    berth_tests::unmount_state(&b.state);
    std::fs::remove_dir_all(&b.state).expect("state");
    let dels = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("DEL")
            .count()
    };
    assert_eq!(dels(), 0);
    b.restart().await;
    let mut c = b.runtime().await;
    assert_eq!(
        pod_state(&mut c, &id).await,
        PodSandboxState::SandboxNotready as i32,
        "a pod whose namespaces are gone is not ready"
    );
    // The network ADD took is released by DEL, without a Stop.
    assert!(eventually(|| dels() == 1).await, "no DEL after the reboot");
    assert!(verbose_info(&mut c, &id).await["cniNetwork"].is_null());
    // And the kubelet's Stop and Remove go through.
    stop(&mut c, &id).await.expect("stop");
    remove(&mut c, &id).await;
    assert_eq!(dels(), 1);
    assert_eq!(mounts_under(&b.state).len(), 0);
}
