//! CRI `PodSandboxStats`, `ListPodSandboxStats` and
//! `StreamPodSandboxStats`: the pod's cgroup (or the sum of its
//! containers), its network interfaces' counters, its process count, and
//! the stats of its running containers.

use std::sync::Arc;

use cri_api::v1::{PodSandboxStats, PodSandboxStatsFilter};
use tonic::Status;

use crate::container::{ContainerRecord, Observed};
use crate::daemon::Daemon;
use crate::par::ParMap;
use crate::pod::{PodRecord, PodState};

/// The pod's stats from its `containers`.
fn pod_stats(d: &Daemon, pod: &PodRecord, containers: &[Arc<ContainerRecord>]) -> PodSandboxStats {
    let running: Vec<&Arc<ContainerRecord>> = containers
        .iter()
        .filter(|c| matches!(d.containers.observe(&c.id), Observed::Running { .. }))
        .collect();
    // Already seen running: not observed again.
    let stats = running
        .iter()
        .map(|c| crate::stats::container_stats(&d.sampler, &d.containers, c, true))
        .collect();
    // Read only for a pod without a cgroup of its own.
    let pids = || {
        running
            .iter()
            .map(|c| crate::stats::container_pids(&d.containers, c))
            .sum()
    };
    crate::stats::pod_stats(&d.sampler, &d.pods, pod, stats, pids)
}

/// A pod that is not ready has no stats: `Unavailable`, as containerd
/// answers (and lists leave it out).
pub async fn pod_sandbox_stats(d: Arc<Daemon>, id: String) -> Result<PodSandboxStats, Status> {
    let pod = d.pod(&id)?;
    if pod.state != PodState::Ready {
        return Err(Status::unavailable(format!(
            "pod sandbox {} is not ready: no stats",
            pod.id
        )));
    }
    tokio::task::spawn_blocking(move || pod_stats(&d, &pod, &d.containers.of_pod(&pod.id)))
        .await
        .map_err(|e| Status::internal(e.to_string()))
}

pub async fn list_pod_sandbox_stats(
    d: Arc<Daemon>,
    filter: Option<PodSandboxStatsFilter>,
) -> Result<Vec<PodSandboxStats>, Status> {
    let f = filter.unwrap_or_default();
    let pods = d.pods.all().map_err(|e| Status::internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        if let Ok(all) = d.containers.all() {
            super::container_stats::forget_gone(&d, &all);
        }
        pods.iter()
            .filter(|p| p.state == PodState::Ready)
            .filter(|p| f.id.is_empty() || p.id.starts_with(&f.id))
            .filter(|p| {
                let labels = &p.config_ref().labels;
                f.label_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect::<Vec<_>>()
            .as_slice()
            .par_map(|p| pod_stats(&d, p, &d.containers.of_pod(&p.id)))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))
}
