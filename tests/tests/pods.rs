//! Pod sandboxes through the CRI with a real berthd as root: pinned
//! namespaces, /dev/shm, DNS files, the pod cgroup, name rules, filters,
//! crash recovery, and nothing left behind after removal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::{Berthd, mounts_under};
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use nix::sys::signal::Signal;
use tonic::Code;
use tonic::transport::Channel;

type Client = RuntimeServiceClient<Channel>;

fn config(name: &str, attempt: u32, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt,
        }),
        hostname: format!("{name}-host"),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        annotations: HashMap::from([("note".to_string(), "kept".to_string())]),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn host_network(mut c: PodSandboxConfig) -> PodSandboxConfig {
    c.linux.get_or_insert_default().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

async fn run(c: &mut Client, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    c.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(c: &mut Client, id: &str) -> PodSandboxStatus {
    c.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .expect("PodSandboxStatus")
    .into_inner()
    .status
    .expect("status")
}

async fn list(c: &mut Client, filter: Option<PodSandboxFilter>) -> Vec<String> {
    c.list_pod_sandbox(ListPodSandboxRequest { filter })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
}

async fn stop(c: &mut Client, id: &str) {
    c.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("StopPodSandbox");
}

async fn remove(c: &mut Client, id: &str) {
    c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("RemovePodSandbox");
}

/// Where a pod cgroup lives on this node: the v2 directory, or v1's memory
/// hierarchy (the one every v1 node has).
fn cgroup_dir(parent: &str) -> PathBuf {
    cgroup::dir(parent, "memory")
}

use berth_tests::cgroup::{self, unique_parent as unique_cgroup};

fn nsenter(kind: &str, pin: &Path, cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--{kind}={}", pin.display()))
        .args(cmd)
        .output()
        .expect("nsenter (util-linux)");
    assert!(out.status.success(), "nsenter {kind} {cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lives_and_leaves_nothing_behind() {
    let b = Berthd::start().await;
    let mut c = b.runtime().await;
    let cg = unique_cgroup("life");
    let id = run(&mut c, config("web", 0, &cg))
        .await
        .expect("RunPodSandbox");
    assert_eq!(id.len(), 64);

    let s = status(&mut c, &id).await;
    assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(s.metadata.as_ref().expect("metadata").name, "web");
    assert_eq!(s.labels["app"], "web");
    assert_eq!(s.annotations["note"], "kept");
    assert!(s.created_at > 0);
    // A unique id prefix works as crictl users type it.
    assert_eq!(status(&mut c, &id[..12]).await.id, id);

    // Its namespaces are pinned, with the hostname set and loopback up.
    let ns = b.state.join("ns").join(&id);
    let mounted = mounts_under(&b.state);
    for k in ["net", "ipc", "uts"] {
        assert!(
            mounted.contains(&ns.join(k).display().to_string()),
            "{k} not pinned: {mounted:?}"
        );
    }
    assert_eq!(
        nsenter("uts", &ns.join("uts"), &["hostname"]).trim(),
        "web-host"
    );
    let lo = nsenter("net", &ns.join("net"), &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    let links = nsenter("net", &ns.join("net"), &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "only lo in the pod: {links}");

    // The files its containers will mount, and its /dev/shm.
    let dir = b.state.join("pods").join(&id);
    let resolv = std::fs::read_to_string(dir.join("resolv.conf")).expect("resolv.conf");
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).expect("hostname"),
        "web-host\n"
    );
    assert!(
        std::fs::read_to_string(dir.join("hosts"))
            .expect("hosts")
            .contains("localhost")
    );
    assert!(mounted.contains(&dir.join("shm").display().to_string()));
    // cgroupfs: berth makes the parent it is given. (A systemd slice is
    // systemd's, made when the first scope in it starts.)
    if !cgroup::systemd() {
        assert!(cgroup_dir(&cg).is_dir(), "pod cgroup {cg}");
    }

    // Filters.
    assert_eq!(list(&mut c, None).await, [id.as_str()]);
    let by = |f: PodSandboxFilter| Some(f);
    assert_eq!(
        list(
            &mut c,
            by(PodSandboxFilter {
                id: id[..8].into(),
                ..Default::default()
            })
        )
        .await
        .len(),
        1
    );
    let ready = PodSandboxStateValue {
        state: PodSandboxState::SandboxReady as i32,
    };
    let not_ready = PodSandboxStateValue {
        state: PodSandboxState::SandboxNotready as i32,
    };
    let with_state = |s: &PodSandboxStateValue| {
        by(PodSandboxFilter {
            state: Some(*s),
            ..Default::default()
        })
    };
    assert_eq!(list(&mut c, with_state(&ready)).await.len(), 1);
    assert_eq!(list(&mut c, with_state(&not_ready)).await.len(), 0);
    let labelled = |v: &str| {
        by(PodSandboxFilter {
            label_selector: HashMap::from([("app".to_string(), v.to_string())]),
            ..Default::default()
        })
    };
    assert_eq!(list(&mut c, labelled("web")).await.len(), 1);
    assert_eq!(list(&mut c, labelled("db")).await.len(), 0);

    // Stop (twice: idempotent), then remove (twice).
    stop(&mut c, &id).await;
    stop(&mut c, &id).await;
    assert_eq!(
        status(&mut c, &id).await.state,
        PodSandboxState::SandboxNotready as i32
    );
    assert_eq!(list(&mut c, with_state(&not_ready)).await.len(), 1);
    remove(&mut c, &id).await;
    remove(&mut c, &id).await;
    stop(&mut c, &id).await;
    let e = c
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .expect_err("removed");
    assert_eq!(e.code(), Code::NotFound);
    assert!(list(&mut c, None).await.is_empty());

    // Nothing left: no mount, no directory, no cgroup.
    assert!(
        mounts_under(&b.state).is_empty(),
        "{:?}",
        mounts_under(&b.state)
    );
    assert!(!ns.exists() && !dir.exists());
    assert!(!cgroup_dir(&cg).exists(), "cgroup {cg} left");
    assert!(!cgroup_dir(&cg).parent().expect("parent").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_per_attempt() {
    let b = Berthd::start().await;
    let mut c = b.runtime().await;
    let cg = unique_cgroup("names");
    let first = run(&mut c, config("api", 0, &cg)).await.expect("first");
    // The same call again (the kubelet retrying after its deadline): the
    // pod the first one made, not a second.
    let again = run(&mut c, config("api", 0, &cg)).await.expect("retry");
    assert_eq!(again, first);
    // Another pod under the same name and attempt is refused.
    let mut other = config("api", 0, &cg);
    other.labels.insert("tier".into(), "other".into());
    let e = run(&mut c, other).await.expect_err("clash");
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    assert!(
        e.message().contains(&first),
        "names the holder: {}",
        e.message()
    );
    let second = run(&mut c, config("api", 1, &cg))
        .await
        .expect("next attempt");
    assert_ne!(first, second);

    // A config without metadata is refused and leaves nothing.
    let e = run(&mut c, PodSandboxConfig::default())
        .await
        .expect_err("no metadata");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config("x", 0, &cg)),
            runtime_handler: "no-such-handler".into(),
        })
        .await
        .expect_err("unknown handler");
    assert_eq!(e.code(), Code::InvalidArgument);
    // The configured runc handler runs pods (security.rs runs containers
    // under it).
    let on_runc = c
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config("y", 0, &cg)),
            runtime_handler: "runc".into(),
        })
        .await
        .expect("runc handler")
        .into_inner()
        .pod_sandbox_id;
    remove(&mut c, &on_runc).await;

    for id in [first, second] {
        remove(&mut c, &id).await;
    }
    assert!(mounts_under(&b.state).is_empty());
    assert!(!cgroup_dir(&cg).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_pod_uses_the_nodes_network_and_hostname() {
    let b = Berthd::start().await;
    let mut c = b.runtime().await;
    let id = run(&mut c, host_network(config("hostnet", 0, "")))
        .await
        .expect("run");
    let ns = b.state.join("ns").join(&id);
    assert!(!ns.join("net").exists(), "no network namespace of its own");
    assert!(!ns.join("uts").exists(), "the node's hostname");
    let node = nix::unistd::gethostname().expect("hostname");
    let written = std::fs::read_to_string(b.state.join("pods").join(&id).join("hostname"))
        .expect("hostname file");
    assert_eq!(written.trim(), node.to_string_lossy());
    let opts = status(&mut c, &id)
        .await
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .expect("options");
    assert_eq!(opts.network, NamespaceMode::Node as i32);
    remove(&mut c, &id).await;
    assert!(mounts_under(&b.state).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_survive_a_berthd_crash_and_half_made_ones_are_cleaned() {
    let mut b = Berthd::start().await;
    let cg = unique_cgroup("crash");
    let id = run(&mut b.runtime().await, config("keep", 0, &cg))
        .await
        .expect("run");
    b.stop_with(Signal::SIGKILL);

    // What a berthd killed in the middle of RunPodSandbox leaves: a pod
    // directory with a mounted /dev/shm, and no record.
    let half = b.state.join("pods").join("f".repeat(64));
    std::fs::create_dir_all(half.join("shm")).expect("half-made");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(half.join("shm"))
        .status()
        .expect("mount");
    assert!(st.success());

    b.restart().await;
    let mut c = b.runtime().await;
    assert_eq!(
        status(&mut c, &id).await.state,
        PodSandboxState::SandboxReady as i32
    );
    let ns = b.state.join("ns").join(&id);
    assert_eq!(
        nsenter("uts", &ns.join("uts"), &["hostname"]).trim(),
        "keep-host"
    );
    assert!(!half.exists(), "half-made pod not cleaned");
    remove(&mut c, &id).await;
    assert!(
        mounts_under(&b.state).is_empty(),
        "{:?}",
        mounts_under(&b.state)
    );
    assert!(!cgroup_dir(&cg).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_a_hostname_gets_the_nodes_whatever_its_name() {
    let b = Berthd::start().await;
    let mut c = b.runtime().await;
    // critest's pods: no hostname, and names longer than a hostname may be.
    let long = format!(
        "create-PodSandbox-for-container-{}",
        "0123456789abcdef".repeat(3)
    );
    let mut cfg = config(&long, 0, "");
    cfg.hostname.clear();
    let id = run(&mut c, cfg).await.expect("run");
    let node = nix::unistd::gethostname().expect("hostname");
    let ns = b.state.join("ns").join(&id);
    assert_eq!(
        nsenter("uts", &ns.join("uts"), &["hostname"]).trim(),
        node.to_string_lossy()
    );
    let written = std::fs::read_to_string(b.state.join("pods").join(&id).join("hostname"))
        .expect("hostname file");
    assert_eq!(written.trim(), node.to_string_lossy());
    remove(&mut c, &id).await;

    // A hostname the kernel cannot take is refused before anything is made.
    let mut cfg = config("toolong", 0, "");
    cfg.hostname = "h".repeat(65);
    let e = run(&mut c, cfg).await.expect_err("too long");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("longer than 64 bytes"), "{e:?}");
    assert!(mounts_under(&b.state).is_empty());
    // berthd's log says so too.
    let log = b.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("RunPodSandbox")
            && l.contains("InvalidArgument")
            && l.contains("longer than 64 bytes")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_level_resources_from_the_kubelet_are_recorded() {
    let b = Berthd::start().await;
    let mut c = b.runtime().await;
    let id = run(&mut c, config("resized", 0, "")).await.expect("run");
    c.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: id.clone(),
        overhead: Some(LinuxContainerResources {
            cpu_shares: 20,
            ..Default::default()
        }),
        resources: Some(LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
    })
    .await
    .expect("UpdatePodSandboxResources");
    let info = c
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).expect("json");
    assert_eq!(info["resources"]["cpuShares"], 512, "{info}");
    assert_eq!(info["resources"]["memoryLimitInBytes"], 128 << 20, "{info}");
    assert_eq!(info["overhead"]["cpuShares"], 20, "{info}");
    // An unknown pod is NotFound; a stopped one cannot be resized.
    let e = c
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound);
    stop(&mut c, &id).await;
    let e = c
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("stopped");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    remove(&mut c, &id).await;
}
