//! CRI `PodSandboxStats`, `ListPodSandboxStats` and
//! `StreamPodSandboxStats`: the pod's cgroup (or the sum of its
//! containers), its network interfaces' counters, its process count, and
//! the stats of its running containers.

use std::sync::Arc;

use cri_api::v1::{PodSandboxStats, PodSandboxStatsFilter};
use tonic::Status;

use super::container_stats::stats_of;
use crate::container::Observed;
use crate::daemon::Daemon;
use crate::pod::{PodRecord, PodState};

fn pod_stats(d: &Daemon, pod: &PodRecord) -> PodSandboxStats {
    let mut pids = 0;
    let containers = d
        .containers
        .all()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.pod_id == pod.id)
        .filter(|c| matches!(d.containers.observe(&c.id), Observed::Running { .. }))
        .map(|c| {
            pids += crate::stats::container_pids(&d.containers, &c);
            stats_of(d, &c)
        })
        .collect();
    crate::stats::pod_stats(&d.sampler, &d.pods, pod, containers, pids)
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
    tokio::task::spawn_blocking(move || pod_stats(&d, &pod))
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
        pods.iter()
            .filter(|p| p.state == PodState::Ready)
            .filter(|p| f.id.is_empty() || p.id.starts_with(&f.id))
            .filter(|p| {
                let labels = p.config().labels;
                f.label_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .map(|p| pod_stats(&d, p))
            .collect()
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))
}
