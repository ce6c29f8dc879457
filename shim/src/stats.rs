//! Container and pod stats for the kubelet's summary API and eviction
//! manager: cgroup CPU and memory, writable-layer usage, pod network
//! counters read inside the pod's network namespace, process counts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use cri_api::v1::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage, IoUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, ProcessUsage, SwapUsage, UInt64Value,
};

use crate::cgroups::{Cgroup, Memory};
use crate::container::{ContainerRecord, Containers};
use crate::pod::{PodRecord, Pods};
use berth_runtime::now_ns;

fn v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

/// The last CPU sample of each container or pod, so that `usage_nano_cores`
/// is the rate since the previous call, as the kubelet expects.
/// Also holds each measured container's and pod's cgroup, its files kept
/// open between calls (see [`Cgroup::kept`]).
#[derive(Default)]
pub struct Sampler {
    last: Mutex<HashMap<String, (i64, u64)>>,
    cgroups: Mutex<HashMap<String, std::sync::Arc<Cgroup>>>,
}

impl Sampler {
    /// Records `(now, usage)` for `key`; the rate in nanocores since the
    /// previous sample, if there is one.
    fn rate(&self, key: &str, now: i64, usage: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = last.insert(key.to_string(), (now, usage));
        let (t0, u0) = prev?;
        let dt = now.checked_sub(t0).filter(|d| *d > 0)? as u128;
        let du = usage.checked_sub(u0)? as u128;
        Some((du * 1_000_000_000 / dt) as u64)
    }

    /// Forgets samples (and cgroups) of what no longer exists.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.retain(|k, _| keep(k));
        let mut cgroups = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        cgroups.retain(|k, _| keep(k));
    }

    /// The cgroup of `key` held since an earlier call, else `make`'s if it
    /// exists (then held, its files kept open).
    fn cgroup(
        &self,
        key: &str,
        make: impl FnOnce() -> Option<Cgroup>,
    ) -> Option<std::sync::Arc<Cgroup>> {
        let held = |s: &Self| {
            let cgroups = s.cgroups.lock().unwrap_or_else(|e| e.into_inner());
            cgroups.get(key).cloned()
        };
        if let Some(cg) = held(self) {
            return Some(cg);
        }
        let cg = std::sync::Arc::new(make()?.kept());
        if !cg.exists() {
            return None;
        }
        let mut cgroups = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        Some(cgroups.entry(key.to_string()).or_insert(cg).clone())
    }

    fn cpu(&self, key: &str, cg: Option<&Cgroup>, now: i64) -> CpuUsage {
        let usage = cg.and_then(Cgroup::cpu_usage_ns);
        CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: usage.and_then(v),
            usage_nano_cores: usage.and_then(|u| self.rate(key, now, u)).and_then(v),
            psi: cg.and_then(|c| c.psi("cpu")),
        }
    }
}

/// I/O pressure of a cgroup (v2); None without a cgroup.
fn io(cg: Option<&Cgroup>, now: i64) -> Option<IoUsage> {
    cg.map(|c| IoUsage {
        timestamp: now,
        psi: c.psi("io"),
    })
}

fn memory(cg: Option<&Cgroup>, m: Option<&Memory>, now: i64) -> MemoryUsage {
    let Some(m) = m else {
        return MemoryUsage {
            timestamp: now,
            ..Default::default()
        };
    };
    MemoryUsage {
        timestamp: now,
        working_set_bytes: v(m.working_set),
        available_bytes: m.limit.and_then(|l| v(l.saturating_sub(m.working_set))),
        usage_bytes: v(m.usage),
        rss_bytes: v(m.rss),
        page_faults: v(m.page_faults),
        major_page_faults: v(m.major_page_faults),
        psi: cg.and_then(|c| c.psi("memory")),
    }
}

/// The cgroup a container runs in: recorded at create, else read back
/// from its bundle.
pub fn container_cgroup(cs: &Containers, rec: &ContainerRecord) -> Option<Cgroup> {
    if !rec.cgroup.is_empty() {
        return Cgroup::new(&rec.cgroup);
    }
    let spec = std::fs::read(cs.state_dir(&rec.id).join("config.json")).ok()?;
    let spec: crate::spec::Spec = serde_json::from_slice(&spec).ok()?;
    Cgroup::new(spec.linux().as_ref()?.cgroups_path().as_ref()?.to_str()?)
}

pub fn container_stats(
    sampler: &Sampler,
    cs: &Containers,
    rec: &ContainerRecord,
    running: bool,
) -> ContainerStats {
    let now = now_ns();
    let config = rec.config_ref();
    let cg = running
        .then(|| sampler.cgroup(&rec.id, || container_cgroup(cs, rec)))
        .flatten();
    let cg = cg.as_deref();
    let mem = cg.and_then(|c| c.memory(true));
    let (bytes, inodes) = crate::cgroups::disk_usage(&cs.upper_dir(&rec.id));
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: rec.id.clone(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        cpu: Some(sampler.cpu(&rec.id, cg, now)),
        memory: Some(memory(cg, mem.as_ref(), now)),
        writable_layer: Some(FilesystemUsage {
            timestamp: now,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: cs.layers_dir().display().to_string(),
            }),
            used_bytes: v(bytes),
            inodes_used: v(inodes),
        }),
        swap: Some(SwapUsage {
            timestamp: now,
            swap_available_bytes: mem
                .as_ref()
                .and_then(|m| Some(m.swap_limit?.saturating_sub(m.swap_usage?)))
                .and_then(v),
            swap_usage_bytes: mem.as_ref().and_then(|m| m.swap_usage).and_then(v),
        }),
        io: io(cg, now),
    }
}

/// Stats of a pod: its cgroup (the kubelet's `cgroup_parent`) when it has
/// one, else the sum of its containers; its network interfaces; and the
/// stats of each running container.
pub fn pod_stats(
    sampler: &Sampler,
    pods: &Pods,
    pod: &PodRecord,
    containers: Vec<ContainerStats>,
    pids: impl FnOnce() -> u64,
) -> PodSandboxStats {
    let now = now_ns();
    let config = pod.config_ref();
    let parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str());
    let cg = sampler.cgroup(&pod.id, || parent.and_then(Cgroup::new));
    let cg = cg.as_deref();
    let (cpu, mem, processes) = match cg {
        Some(cg) => (
            sampler.cpu(&pod.id, Some(cg), now),
            memory(Some(cg), cg.memory(false).as_ref(), now),
            cg.pids().unwrap_or_else(pids),
        ),
        None => {
            let sum = |f: &dyn Fn(&ContainerStats) -> Option<u64>| -> Option<UInt64Value> {
                let vals: Vec<u64> = containers.iter().filter_map(f).collect();
                (!vals.is_empty()).then(|| UInt64Value {
                    value: vals.iter().sum(),
                })
            };
            let cpu = CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: sum(&|c| {
                    Some(c.cpu.as_ref()?.usage_core_nano_seconds.as_ref()?.value)
                }),
                usage_nano_cores: sum(&|c| Some(c.cpu.as_ref()?.usage_nano_cores.as_ref()?.value)),
                psi: None,
            };
            let field = |f: fn(&MemoryUsage) -> Option<&UInt64Value>| {
                sum(&|c: &ContainerStats| Some(f(c.memory.as_ref()?)?.value))
            };
            let mem = MemoryUsage {
                timestamp: now,
                working_set_bytes: field(|m| m.working_set_bytes.as_ref()),
                usage_bytes: field(|m| m.usage_bytes.as_ref()),
                rss_bytes: field(|m| m.rss_bytes.as_ref()),
                page_faults: field(|m| m.page_faults.as_ref()),
                major_page_faults: field(|m| m.major_page_faults.as_ref()),
                ..Default::default()
            };
            (cpu, mem, pids())
        }
    };
    let network = pod.network.as_ref().map(|_| {
        let mut interfaces = net_dev(&pods.ns_dir(&pod.id).join("net"));
        interfaces.retain(|i| i.name != "lo");
        NetworkUsage {
            timestamp: now,
            default_interface: interfaces.iter().find(|i| i.name == "eth0").cloned(),
            interfaces,
        }
    });
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: Some(cpu),
            memory: Some(mem),
            network,
            process: Some(ProcessUsage {
                timestamp: now,
                process_count: v(processes),
            }),
            containers,
            io: io(cg, now),
        }),
        windows: None,
    }
}

/// Processes in a container's cgroup (for a pod without a cgroup of its own).
pub fn container_pids(cs: &Containers, rec: &ContainerRecord) -> u64 {
    container_cgroup(cs, rec)
        .and_then(|c| c.pids())
        .unwrap_or(0)
}

/// The interface counters of a network namespace: `/proc/net/dev` as a
/// thread that joined it sees it. The thread is a fresh one and ends
/// after, so no pool thread is left in the pod's namespace.
pub fn net_dev(netns: &Path) -> Vec<NetworkInterfaceUsage> {
    let Ok(ns) = std::fs::File::open(netns) else {
        return Vec::new();
    };
    let text = std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        std::fs::read_to_string("/proc/thread-self/net/dev").ok()
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or_default();
    parse_net_dev(&text)
}

fn parse_net_dev(text: &str) -> Vec<NetworkInterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            if f.len() < 11 {
                return None;
            }
            Some(NetworkInterfaceUsage {
                name: name.trim().to_string(),
                rx_bytes: v(f[0]),
                rx_errors: v(f[2]),
                tx_bytes: v(f[8]),
                tx_errors: v(f[10]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cores_come_from_two_samples() {
        let s = Sampler::default();
        assert_eq!(s.rate("c", 1_000_000_000, 5_000_000_000), None);
        // Half a core over two seconds.
        assert_eq!(s.rate("c", 3_000_000_000, 6_000_000_000), Some(500_000_000));
        // A counter that went back (a new cgroup) gives no rate.
        assert_eq!(s.rate("c", 4_000_000_000, 10), None);
        s.retain(&|k| k != "c");
        assert_eq!(s.rate("c", 5_000_000_000, 20), None);
    }

    #[test]
    fn proc_net_dev_is_parsed() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    5000      40    1    0    0     0          0         0     3000      30    2    0    0     0       0          0
";
        let i = parse_net_dev(text);
        assert_eq!(i.len(), 2);
        assert_eq!(i[1].name, "eth0");
        assert_eq!(i[1].rx_bytes, v(5000));
        assert_eq!(i[1].rx_errors, v(1));
        assert_eq!(i[1].tx_bytes, v(3000));
        assert_eq!(i[1].tx_errors, v(2));
    }
}
