//! Pod networking through the real CNI plugins (Debian's
//! containernetworking-plugins: bridge + host-local): pod IPs, pods reaching
//! each other, /etc/hosts, clean failures, and DEL releasing the IP, also
//! after a berthd crash.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::{Berthd, mounts_under};
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use nix::sys::signal::Signal;
use tonic::Code;
use tonic::transport::Channel;

type Client = RuntimeServiceClient<Channel>;

const PLUGINS: &str = "/usr/lib/cni";

/// A private bridge network for one test: its name, bridge, subnet and
/// IPAM data dir, removed (bridge included) on drop.
struct TestNet {
    name: String,
    bridge: String,
    subnet_prefix: String,
    ipam_dir: PathBuf,
}

impl TestNet {
    /// Installs the plugins into berthd's CNI bin dir and writes a
    /// bridge + host-local conflist (plus `extra` plugins) into its conf dir.
    fn install(b: &Berthd, n: u32, extra: &[serde_json::Value]) -> TestNet {
        let d = b.dir.path();
        for p in ["bridge", "host-local", "loopback", "portmap"] {
            let link = d.join("cni-bin").join(p);
            let _ = std::os::unix::fs::symlink(Path::new(PLUGINS).join(p), link);
        }
        let tag = std::process::id() % 10_000;
        let net = TestNet {
            name: format!("berth-test-{tag}-{n}"),
            bridge: format!("bt{tag}x{n}"),
            subnet_prefix: format!("10.213.{}", (tag % 100) * 2 + n),
            ipam_dir: d.join("ipam"),
        };
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": net.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "dataDir": net.ipam_dir,
                "ranges": [[{"subnet": format!("{}.0/24", net.subnet_prefix)}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })];
        plugins.extend_from_slice(extra);
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": net.name, "plugins": plugins});
        std::fs::write(d.join("net.d/10-test.conflist"), list.to_string()).expect("conflist");
        net
    }

    /// IPs host-local has handed out and not released.
    fn allocated(&self) -> Vec<String> {
        let mut ips: Vec<String> = std::fs::read_dir(self.ipam_dir.join(&self.name))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&self.subnet_prefix))
            .collect();
        ips.sort();
        ips
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

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
    c.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config(name)),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn pod_ip(c: &mut Client, id: &str) -> String {
    c.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .expect("status")
    .into_inner()
    .status
    .and_then(|s| s.network)
    .map(|n| n.ip)
    .unwrap_or_default()
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

    // alpha reaches zulu by pod IP.
    let ping = in_netns(&b, &a, &["busybox", "ping", "-c", "1", "-W", "5", &ip_z]);
    assert!(ping.status.success(), "ping {ip_z}: {ping:?}");

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
    let id = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
        .expect("run")
        .into_inner()
        .pod_sandbox_id;
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
