//! CRI `ListMetricDescriptors`, `ListPodSandboxMetrics` and
//! `StreamPodSandboxMetrics`: the cAdvisor-named metrics the kubelet's
//! `/metrics/cadvisor` serves when the runtime provides pod metrics
//! (feature gate `PodAndContainerStatsFromCRI`). Every metric carries the
//! labels `id, image, namespace, pod, container` (CRI-O's order; for a
//! pod-level metric, the pod id, "", its namespace and name, "POD"), plus
//! `interface` on network metrics. Values are whole units, as CRI-O and
//! containerd send them: CPU in whole seconds, times in Unix seconds.

use std::sync::Arc;

use cri_api::v1::{
    ContainerMetrics, ContainerStats, Metric, MetricDescriptor, MetricType, PodSandboxMetrics,
    UInt64Value,
};
use tonic::Status;

use crate::container::Observed;
use crate::daemon::Daemon;
use crate::pod::PodState;
use berth_runtime::now_ns;

const LABELS: [&str; 5] = ["id", "image", "namespace", "pod", "container"];

/// (name, help, type, extra label) of each metric berth reports.
const CONTAINER_METRICS: &[(&str, &str, MetricType)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        MetricType::Counter,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        MetricType::Gauge,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        MetricType::Gauge,
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        MetricType::Gauge,
    ),
    (
        "container_memory_swap",
        "Container swap usage in bytes.",
        MetricType::Gauge,
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container (0: none).",
        MetricType::Gauge,
    ),
    (
        "container_spec_cpu_shares",
        "CPU share of the container.",
        MetricType::Gauge,
    ),
    (
        "container_spec_cpu_period",
        "CPU period of the container.",
        MetricType::Gauge,
    ),
    (
        "container_spec_cpu_quota",
        "CPU quota of the container.",
        MetricType::Gauge,
    ),
    (
        "container_last_seen",
        "Last time a container was seen by the exporter (Unix seconds).",
        MetricType::Gauge,
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        MetricType::Gauge,
    ),
    (
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read.",
        MetricType::Counter,
    ),
    (
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written.",
        MetricType::Counter,
    ),
    // Pressure stall information (cgroup v2), as cAdvisor names it:
    // waiting is PSI's "some", stalled its "full".
    (
        "container_pressure_cpu_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to CPU congestion.",
        MetricType::Counter,
    ),
    (
        "container_pressure_cpu_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        MetricType::Counter,
    ),
    (
        "container_pressure_memory_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to memory congestion.",
        MetricType::Counter,
    ),
    (
        "container_pressure_memory_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to memory congestion.",
        MetricType::Counter,
    ),
    (
        "container_pressure_io_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to I/O congestion.",
        MetricType::Counter,
    ),
    (
        "container_pressure_io_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to I/O congestion.",
        MetricType::Counter,
    ),
];

const NETWORK_METRICS: &[(&str, &str)] = &[
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
    ),
];

pub fn descriptors() -> Vec<MetricDescriptor> {
    let keys = |extra: Option<&str>| -> Vec<String> {
        LABELS
            .iter()
            .copied()
            .chain(extra)
            .map(String::from)
            .collect()
    };
    CONTAINER_METRICS
        .iter()
        .map(|(name, help, _)| MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: keys(None),
        })
        .chain(NETWORK_METRICS.iter().map(|(name, help)| MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: keys(Some("interface")),
        }))
        .collect()
}

fn metric(name: &str, kind: MetricType, labels: &[String], value: u64, ts: i64) -> Metric {
    Metric {
        name: name.to_string(),
        timestamp: ts,
        metric_type: kind as i32,
        label_values: labels.to_vec(),
        value: Some(UInt64Value { value }),
    }
}

/// The metrics of every ready pod and its running containers.
pub async fn list_pod_sandbox_metrics(d: Arc<Daemon>) -> Result<Vec<PodSandboxMetrics>, Status> {
    let pods = d.pods.all().map_err(|e| Status::internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let now = now_ns();
        let secs = (now / 1_000_000_000) as u64;
        pods.iter()
            .filter(|p| p.state == PodState::Ready)
            .map(|pod| {
                let pc = pod.config();
                let m = pc.metadata.unwrap_or_default();
                let pod_labels = |extra: &str| {
                    vec![
                        pod.id.clone(),
                        String::new(),
                        m.namespace.clone(),
                        m.name.clone(),
                        "POD".to_string(),
                        extra.to_string(),
                    ]
                };
                let mut metrics = Vec::new();
                if pod.network.is_some() {
                    for i in crate::stats::net_dev(&d.pods.ns_dir(&pod.id).join("net")) {
                        let labels = pod_labels(&i.name);
                        let v = |x: &Option<UInt64Value>| x.as_ref().map_or(0, |v| v.value);
                        for (name, value) in NETWORK_METRICS.iter().map(|(n, _)| *n).zip([
                            v(&i.rx_bytes),
                            v(&i.tx_bytes),
                            v(&i.rx_errors),
                            v(&i.tx_errors),
                        ]) {
                            metrics.push(metric(name, MetricType::Counter, &labels, value, now));
                        }
                    }
                }
                let container_metrics = d
                    .containers
                    .of_pod(&pod.id)
                    .iter()
                    .filter_map(|c| match d.containers.observe(&c.id) {
                        Observed::Running { started_ns } => Some((c, started_ns)),
                        _ => None,
                    })
                    .map(|(c, started_ns)| {
                        let config = c.config();
                        let labels = vec![
                            c.id.clone(),
                            c.image.clone(),
                            m.namespace.clone(),
                            m.name.clone(),
                            config.metadata.map(|m| m.name).unwrap_or_default(),
                        ];
                        let stats = super::container_stats::stats_of(&d, c);
                        let r = config.linux.and_then(|l| l.resources).unwrap_or_default();
                        let io = crate::stats::container_cgroup(&d.containers, c)
                            .and_then(|cg| cg.io_bytes());
                        let values = values(&stats, &r, io, started_ns, secs);
                        ContainerMetrics {
                            container_id: c.id.clone(),
                            metrics: CONTAINER_METRICS
                                .iter()
                                .zip(values)
                                .filter_map(|((name, _, kind), v)| {
                                    Some(metric(name, *kind, &labels, v?, now))
                                })
                                .collect(),
                        }
                    })
                    .collect();
                PodSandboxMetrics {
                    pod_sandbox_id: pod.id.clone(),
                    metrics,
                    container_metrics,
                }
            })
            .collect()
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))
}

/// The values of [`CONTAINER_METRICS`], in order (None: not known).
fn values(
    s: &ContainerStats,
    r: &cri_api::v1::LinuxContainerResources,
    io: Option<(u64, u64)>,
    started_ns: i64,
    now_secs: u64,
) -> [Option<u64>; 19] {
    let cpu = s.cpu.as_ref();
    let mem = s.memory.as_ref();
    let get = |v: Option<&UInt64Value>| v.map(|v| v.value);
    // PSI totals are microseconds; the metrics whole seconds.
    let psi = |p: Option<&cri_api::v1::PsiStats>, full: bool| {
        let d = if full {
            p?.full.as_ref()
        } else {
            p?.some.as_ref()
        };
        d.map(|d| d.total / 1_000_000)
    };
    let (cpu_psi, mem_psi) = (
        cpu.and_then(|c| c.psi.as_ref()),
        mem.and_then(|m| m.psi.as_ref()),
    );
    let io_psi = s.io.as_ref().and_then(|i| i.psi.as_ref());
    [
        get(cpu.and_then(|c| c.usage_core_nano_seconds.as_ref())).map(|ns| ns / 1_000_000_000),
        get(mem.and_then(|m| m.working_set_bytes.as_ref())),
        get(mem.and_then(|m| m.usage_bytes.as_ref())),
        get(mem.and_then(|m| m.rss_bytes.as_ref())),
        get(s.swap.as_ref().and_then(|w| w.swap_usage_bytes.as_ref())),
        Some(r.memory_limit_in_bytes.max(0) as u64),
        Some(r.cpu_shares.max(0) as u64),
        Some(r.cpu_period.max(0) as u64),
        (r.cpu_quota > 0).then_some(r.cpu_quota as u64),
        Some(now_secs),
        Some((started_ns / 1_000_000_000).max(0) as u64),
        io.map(|(read, _)| read),
        io.map(|(_, write)| write),
        psi(cpu_psi, false),
        psi(cpu_psi, true),
        psi(mem_psi, false),
        psi(mem_psi, true),
        psi(io_psi, false),
        psi(io_psi, true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_metric_has_a_value_slot_and_a_descriptor() {
        let v = values(
            &ContainerStats::default(),
            &Default::default(),
            None,
            2_000_000_000,
            5,
        );
        assert_eq!(v.len(), CONTAINER_METRICS.len());
        assert_eq!(v[10], Some(2));
        let d = descriptors();
        assert_eq!(d.len(), CONTAINER_METRICS.len() + NETWORK_METRICS.len());
        assert!(d.iter().all(|d| d.label_keys[..5] == LABELS));
    }
}
