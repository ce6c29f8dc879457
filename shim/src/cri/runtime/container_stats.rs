//! CRI `ContainerStats`, `ListContainerStats` and `StreamContainerStats`:
//! cgroup CPU and memory of running containers (a stopped one answers
//! with its writable layer and no CPU or memory figures, as containerd
//! does), and each container's writable-layer usage.

use std::sync::Arc;

use cri_api::v1::{ContainerStats, ContainerStatsFilter};
use tonic::Status;

use crate::container::{ContainerRecord, Observed};
use crate::daemon::Daemon;
use crate::par::ParMap;

pub fn stats_of(d: &Daemon, rec: &ContainerRecord) -> ContainerStats {
    let running = matches!(d.containers.observe(&rec.id), Observed::Running { .. });
    crate::stats::container_stats(&d.sampler, &d.containers, rec, running)
}

pub async fn container_stats(d: Arc<Daemon>, id: String) -> Result<ContainerStats, Status> {
    let rec = d.container(&id)?;
    tokio::task::spawn_blocking(move || stats_of(&d, &rec))
        .await
        .map_err(|e| Status::internal(e.to_string()))
}

/// Forgets the samples and cgroups held for containers (`all` of them)
/// and pods that no longer exist.
pub(super) fn forget_gone(d: &Daemon, all: &[Arc<ContainerRecord>]) {
    let known: std::collections::HashSet<&str> = all.iter().map(|c| c.id.as_str()).collect();
    let pods: std::collections::HashSet<String> = d
        .pods
        .all()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.id.clone())
        .collect();
    d.sampler.retain(&|k| known.contains(k) || pods.contains(k));
}

pub async fn list_container_stats(
    d: Arc<Daemon>,
    filter: Option<ContainerStatsFilter>,
) -> Result<Vec<ContainerStats>, Status> {
    let f = filter.unwrap_or_default();
    let all = d.containers.all()?;
    tokio::task::spawn_blocking(move || {
        forget_gone(&d, &all);
        let mut out: Vec<ContainerStats> = all
            .iter()
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| {
                let labels = &c.config_ref().labels;
                f.label_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect::<Vec<_>>()
            .as_slice()
            .par_map(|c| stats_of(&d, c));
        out.sort_by(|a, b| {
            let id = |s: &ContainerStats| s.attributes.as_ref().map(|a| a.id.clone());
            id(a).cmp(&id(b))
        });
        out
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))
}
