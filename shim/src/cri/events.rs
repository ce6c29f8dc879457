//! CRI container events as berth makes them: each with its pod's status
//! and the statuses of the pod's containers, sent to the hub behind
//! `GetContainerEvents`; and the exit watcher, which turns the exits of
//! running containers into CONTAINER_STOPPED events.

use std::sync::Arc;

use cri_api::v1::{ContainerEventResponse, ContainerEventType, PodSandboxStatus};

use super::runtime::{container_status, pod_sandbox_status};
use crate::container::Observed;
use crate::daemon::Daemon;
use berth_runtime::now_ns;

/// Sends an event about `id` (a container, or a pod when `id` is the pod
/// id). `pod` is the pod's status when its record is already gone.
pub fn emit(
    d: &Daemon,
    id: &str,
    kind: ContainerEventType,
    pod_id: &str,
    pod: Option<PodSandboxStatus>,
) {
    if !d.events.has_subscribers() {
        return;
    }
    let pod = pod.or_else(|| {
        d.pods
            .find(pod_id)
            .ok()
            .flatten()
            .map(|p| pod_sandbox_status::status_of(&p))
    });
    let containers = d
        .containers
        .of_pod(pod_id)
        .iter()
        .map(|c| container_status::status_of(d, c))
        .collect();
    d.events.send(ContainerEventResponse {
        container_id: id.to_string(),
        container_event_type: kind as i32,
        created_at: now_ns(),
        pod_sandbox_status: pod,
        containers_statuses: containers,
    });
}

/// The container is known to have stopped: one STOPPED event, whoever
/// notices first (this call, or the exit watcher).
pub fn stopped(d: &Daemon, id: &str, pod_id: &str) {
    if d.events.exited(id) {
        if let Observed::Exited { exit, .. } = d.containers.observe(id)
            && exit.oom_killed
        {
            crate::metrics::oom_kill();
        }
        emit(
            d,
            id,
            ContainerEventType::ContainerStoppedEvent,
            pod_id,
            None,
        );
    }
}

/// Turns the exits of running containers into STOPPED events. Containers
/// found running at start are watched too. Each is waited on through its
/// init's pidfd in the reactor: nothing is polled while containers run.
pub async fn watch_exits(d: Arc<Daemon>) {
    let Some(mut started) = d.events.take_started() else {
        return;
    };
    for c in d.containers.all().unwrap_or_default() {
        if matches!(d.containers.observe(&c.id), Observed::Running { .. }) {
            d.events.started(&c.id);
        }
    }
    // Dropped (when berthd stops) with every wait in it.
    let mut waits = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            id = started.recv() => {
                let Some(id) = id else { return };
                let d = d.clone();
                waits.spawn(async move {
                    d.containers.exited(&id).await;
                    match d.containers.find(&id) {
                        Ok(Some(rec)) => stopped(&d, &id, &rec.pod_id),
                        _ => {
                            d.events.exited(&id);
                        }
                    }
                });
            }
            Some(_) = waits.join_next(), if !waits.is_empty() => {}
        }
    }
}
