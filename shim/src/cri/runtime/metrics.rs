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
    let containers = d.containers.all()?;
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
                let container_metrics = containers
                    .iter()
                    .filter(|c| c.pod_id == pod.id)
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
                        let values = values(&stats, &r, started_ns, secs);
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
    started_ns: i64,
    now_secs: u64,
) -> [Option<u64>; 11] {
    let cpu = s.cpu.as_ref();
    let mem = s.memory.as_ref();
    let get = |v: Option<&UInt64Value>| v.map(|v| v.value);
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
