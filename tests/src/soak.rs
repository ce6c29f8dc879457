//! The soak: whole pod lives, several at once, and a census of everything
//! berthd holds on the node, taken before and after. Each cycle is what the
//! kubelet does for a short-lived pod: RunPodSandbox (a CNI bridge network
//! and a host port), CreateContainer, StartContainer, ExecSync,
//! StopContainer, StopPodSandbox, RemovePodSandbox.

use std::path::Path;
use std::process::Command;

use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use futures_util::StreamExt;
use tonic::transport::Channel;

use crate::Berthd;
use crate::net::TestNet;

/// What berthd holds on the node. Equal before and after the cycles
/// means nothing leaked (`rss_kb` aside: an allocator keeps what it had).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    /// Mounts under berthd's directories (rootfs overlays, shm, binds).
    pub mounts: usize,
    /// Of which namespace pins (nsfs).
    pub ns_pins: usize,
    /// cgroup directories below the pods' parent, in every hierarchy.
    pub cgroups: usize,
    /// Files and directories under berthd's state directory.
    pub state_entries: usize,
    /// Of which files (directories such as `pods/` appear at first use).
    pub state_files: usize,
    /// Files in the image store (blobs, snapshots' files, leases, temp
    /// files), the database aside.
    pub image_files: usize,
    /// berthd's open descriptors.
    pub fds: usize,
    /// berthd's threads.
    pub threads: usize,
    /// berth-monitor processes, and berthd's children.
    pub processes: usize,
    /// IPs host-local holds for the network.
    pub ips: usize,
    /// iptables rules (all tables; portmap's DNAT chains among them).
    pub iptables_rules: usize,
    pub rss_kb: u64,
}

impl Census {
    /// Every count but RSS.
    pub fn counts(&self) -> Census {
        Census {
            rss_kb: 0,
            ..self.clone()
        }
    }

    /// What is on the node whichever berthd process runs: not its own
    /// descriptors, threads or memory, nor directories made at first use.
    pub fn node(&self) -> Census {
        Census {
            fds: 0,
            threads: 0,
            state_entries: 0,
            ..self.counts()
        }
    }
}

pub fn census(b: &Berthd, net: &TestNet, parent: &str) -> Census {
    let pid = b.pid().as_raw();
    let count = |dir: String| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let dir = b.dir.path().display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let ours: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .collect();
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(pid)
        })
        .count();
    let rules = Command::new("iptables-save")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with('-') || l.starts_with(':'))
                .count()
        })
        .unwrap_or(0);
    Census {
        mounts: ours.len(),
        ns_pins: ours.iter().filter(|l| l.contains(" - nsfs ")).count(),
        cgroups: crate::cgroup::hierarchies()
            .iter()
            .map(|h| walk(&h.join(crate::cgroup::rel(parent)), Walk::Dirs))
            .sum(),
        state_entries: walk(&b.state, Walk::All),
        state_files: walk(&b.state, Walk::Files),
        image_files: walk(&b.root.join("images"), Walk::Files),
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
        processes: crate::monitor_pids(&b.state).len() + children,
        ips: net.allocated().len(),
        iptables_rules: rules,
        rss_kb: crate::proc_kb(&format!("/proc/{pid}/status"), "VmRSS:"),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Walk {
    All,
    Dirs,
    Files,
}

/// Entries below `dir` of the kind asked (symlinks are not followed).
fn walk(dir: &Path, kind: Walk) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let here = match kind {
                Walk::All => 1,
                Walk::Dirs => usize::from(is_dir),
                Walk::Files => usize::from(!is_dir),
            };
            here + if is_dir { walk(&e.path(), kind) } else { 0 }
        })
        .sum()
}

/// `n` pod lives, `workers` at once; pod `i` is named `<tag>-<i>` and
/// publishes host port `port_base + i`.
pub async fn cycles(
    c: &RuntimeServiceClient<Channel>,
    b: &Berthd,
    image: &str,
    parent: &str,
    (tag, n, workers, port_base): (&str, usize, usize, u16),
) {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let mut c = c.clone();
            let name = format!("{tag}-{i}");
            let mut config = crate::bench::pod_config(b, &name, parent);
            config.port_mappings = vec![PortMapping {
                protocol: Protocol::Tcp as i32,
                container_port: 80,
                host_port: i32::from(port_base) + i as i32,
                host_ip: String::new(),
            }];
            async move { cycle(&mut c, config, image, &name).await }
        })
        .buffer_unordered(workers)
        .collect::<Vec<()>>()
        .await;
}

async fn cycle(
    c: &mut RuntimeServiceClient<Channel>,
    config: PodSandboxConfig,
    image: &str,
    name: &str,
) {
    let pod = crate::bench::run_pod(c, &config).await;
    let sleep = ["/bin/sleep", "1000"];
    let log = format!("{name}.log");
    let id = crate::bench::start_container(c, &pod, &config, image, "main", &sleep, log).await;
    let r = c
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/bin/sh".into(), "-c".into(), "exit 3".into()],
            timeout: 30,
        })
        .await
        .expect("exec")
        .into_inner();
    assert_eq!(r.exit_code, 3, "{name}: exec");
    c.stop_container(StopContainerRequest {
        container_id: id,
        timeout: 0,
    })
    .await
    .expect("stop container");
    c.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .expect("stop pod");
    c.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .expect("remove pod");
}
