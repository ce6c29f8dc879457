//! The pod logic on a fake kernel: what a pod is made of, and that every
//! step is undone when a later one fails. No root needed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cri_api::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};

use super::*;

/// Records every call; fails `mount_tmpfs` when asked to.
#[derive(Default)]
struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
    fail_tmpfs: bool,
}

impl Fake {
    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Host for Fake {
    fn pin(
        &self,
        dir: &Path,
        kinds: &[ns::Kind],
        hostname: &str,
        userns: Option<&IdMaps>,
    ) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        for k in kinds {
            std::fs::write(dir.join(k.name()), "").map_err(|e| e.to_string())?;
        }
        let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        self.log(format!(
            "pin {} host={hostname} userns={}",
            names.join(","),
            userns.is_some()
        ));
        Ok(())
    }
    fn unpin(&self, dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
        self.log("unpin".into());
    }
    fn start_infra(&self, dir: &Path, in_userns: bool) -> Result<i32, String> {
        std::fs::write(dir.join("pid"), "").map_err(|e| e.to_string())?;
        self.log(format!("start_infra userns={in_userns}"));
        Ok(4242)
    }
    fn kill_infra(&self, pid: i32) {
        self.log(format!("kill_infra {pid}"));
    }
    fn mount_tmpfs(&self, at: &Path, options: &str) -> Result<(), String> {
        self.log(format!("mount_tmpfs {} {options}", name(at)));
        if self.fail_tmpfs {
            return Err("no tmpfs today".into());
        }
        Ok(())
    }
    fn unmount(&self, at: &Path) {
        self.log(format!("unmount {}", name(at)));
    }
    fn create_cgroup(&self, parent: &str, made: &mut Vec<String>) -> Result<(), String> {
        made.push(parent.trim_start_matches('/').to_string());
        self.log(format!("create_cgroup {parent}"));
        Ok(())
    }
    fn remove_cgroups(&self, made: &[String]) {
        self.log(format!("remove_cgroups {}", made.join(",")));
    }
    fn place_infra(
        &self,
        pid: i32,
        parent: &str,
        pod_id: &str,
        _systemd: bool,
        made: &mut Vec<String>,
    ) -> Result<(), String> {
        let path = format!("{}/berth-pod-{pod_id}", parent.trim_start_matches('/'));
        self.log(format!("place_infra {pid} {path}"));
        made.push(path);
        Ok(())
    }
    fn is_pinned(&self, path: &Path) -> bool {
        // Pins are files the fake's `pin` leaves in place of mounts.
        path.exists()
    }
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

struct Node {
    pods: Pods,
    calls: Arc<Mutex<Vec<String>>>,
    state: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl Node {
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn node(tag: &str, fail_tmpfs: bool) -> Node {
    let state = std::env::temp_dir().join(format!("berth-pod-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let db = redb::Database::builder()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let host = Fake {
        calls: calls.clone(),
        fail_tmpfs,
    };
    // No CNI config: pods keep loopback only, as on a node without one.
    let cni = crate::config::CniConfig {
        conf_dir: state.join("no-cni"),
        ..Default::default()
    };
    let pods = Pods::open_on(Arc::new(db), &state, cni, Box::new(host)).unwrap();
    Node { pods, calls, state }
}

fn config(network: NamespaceMode, pid: NamespaceMode) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/podu1".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: network as i32,
                    pid: pid as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_pod_is_its_namespaces_files_shm_and_cgroup_and_removal_releases_them() {
    let n = node("make", false);
    let c = config(NamespaceMode::Pod, NamespaceMode::Container);
    let rec = n.pods.create("p1", &c, "", 1).unwrap();
    assert_eq!(
        n.calls(),
        [
            "pin uts,net,ipc host=web-0 userns=false",
            "mount_tmpfs shm mode=1777,size=65536k",
            "create_cgroup /kubepods/podu1",
        ]
    );
    let dir = n.pods.pod_dir("p1");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read("hostname"), "web-0\n");
    assert!(read("hosts").starts_with("127.0.0.1\tlocalhost\n"));
    assert_eq!(
        read("resolv.conf"),
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert!(rec.shm_mounted && rec.infra_pid.is_none());
    assert_eq!(rec.cgroups, ["kubepods/podu1"]);
    assert_eq!(
        n.pods.find("p1").unwrap().unwrap().key(),
        "web_default_u1_0"
    );

    n.pods.remove(&rec).unwrap();
    assert_eq!(
        n.calls(),
        [
            "unmount pid",
            "unpin",
            "unmount shm",
            "remove_cgroups kubepods/podu1"
        ]
    );
    assert!(!dir.exists());
    assert!(n.pods.all().unwrap().is_empty());
}

#[test]
fn a_failed_step_undoes_the_ones_before_it_and_records_nothing() {
    let n = node("fail", true);
    let c = config(NamespaceMode::Pod, NamespaceMode::Pod);
    let err = n.pods.create("p2", &c, "", 1).unwrap_err();
    assert!(
        matches!(&err, PodError::Setup { reason, .. } if reason.contains("mount shm: no tmpfs today")),
        "{err}"
    );
    let calls = n.calls();
    // Made: the namespaces and the infra process; then the shm mount
    // failed, and the cgroup was never made.
    assert_eq!(
        calls[..3],
        [
            "pin uts,net,ipc host=web-0 userns=false".to_string(),
            "start_infra userns=false".into(),
            "mount_tmpfs shm mode=1777,size=65536k".into(),
        ]
    );
    // Undone: the infra process killed, its pin and the namespaces'
    // dropped, the pod's directory gone, nothing recorded.
    assert_eq!(
        calls[3..],
        [
            "kill_infra 4242".to_string(),
            "unmount pid".into(),
            "unpin".into(),
            "unmount shm".into(),
            "remove_cgroups ".into(),
        ]
    );
    assert!(!n.pods.pod_dir("p2").exists());
    assert!(n.pods.all().unwrap().is_empty());
}

#[test]
fn a_host_network_pod_keeps_the_nodes_hostname_and_hosts() {
    let n = node("hostnet", false);
    let c = config(NamespaceMode::Node, NamespaceMode::Container);
    n.pods.create("p3", &c, "", 1).unwrap();
    let node_name = nix::unistd::gethostname().unwrap();
    let node_name = node_name.to_string_lossy();
    assert_eq!(n.calls()[0], "pin ipc host=web-0 userns=false");
    let dir = n.pods.pod_dir("p3");
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        format!("{node_name}\n")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hosts")).unwrap(),
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    );
}

#[test]
fn what_a_dead_berthd_half_made_is_released_at_open() {
    let n = node("half", false);
    std::fs::create_dir_all(n.pods.ns_dir("orphan")).unwrap();
    std::fs::create_dir_all(n.pods.pod_dir("orphan").join("shm")).unwrap();
    let calls = n.calls.clone();
    let again = Pods::open_on(
        n.pods.records.database().clone(),
        &n.state,
        n.pods.cni.clone(),
        Box::new(Fake {
            calls: calls.clone(),
            fail_tmpfs: false,
        }),
    )
    .unwrap();
    assert!(calls.lock().unwrap().contains(&"unpin".to_string()));
    assert!(!again.pod_dir("orphan").exists());
    assert!(!again.ns_dir("orphan").exists());
}

#[test]
fn a_pod_whose_namespaces_are_gone_is_not_ready_at_open() {
    let n = node("reboot", false);
    let shared = config(NamespaceMode::Pod, NamespaceMode::Pod);
    let mut other = config(NamespaceMode::Pod, NamespaceMode::Container);
    other.metadata.as_mut().unwrap().name = "other".into();
    n.pods.create("lost", &shared, "", 1).unwrap();
    n.pods.create("kept", &other, "", 1).unwrap();
    // What a reboot does to the shared PID namespace's pin.
    std::fs::remove_file(n.pods.ns_dir("lost").join("pid")).unwrap();
    let again = Pods::open_on(
        n.pods.records.database().clone(),
        &n.state,
        n.pods.cni.clone(),
        Box::new(Fake::default()),
    )
    .unwrap();
    assert_eq!(
        again.find("lost").unwrap().unwrap().state,
        PodState::NotReady
    );
    assert_eq!(again.find("kept").unwrap().unwrap().state, PodState::Ready);
}
