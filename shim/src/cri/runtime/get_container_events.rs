//! CRI `GetContainerEvents`, for the kubelet's evented PLEG: a stream of
//! CONTAINER_CREATED/STARTED/STOPPED/DELETED events, each with its pod's
//! status and the statuses of the pod's containers. Pods send the same
//! events under their own id, as containerd does. Any number of
//! subscribers; one that falls behind loses events (and the kubelet
//! relists), it never slows the runtime.

use std::sync::Arc;
use std::time::Duration;

use cri_api::v1::{ContainerEventResponse, ContainerEventType, PodSandboxStatus};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;
use tonic::codegen::BoxStream;

use super::container_status;
use crate::container::Observed;
use crate::cri::{Daemon, now_ns};

/// How often running containers are looked at for exits.
const EXIT_POLL: Duration = Duration::from_millis(200);

pub fn get_container_events(d: &Daemon) -> BoxStream<ContainerEventResponse> {
    let state = d.events.subscribe();
    let stream = futures_util::stream::unfold(state, |(mut rx, mut closed)| async move {
        loop {
            if *closed.borrow() {
                return None;
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(e) => return Some((Ok::<_, Status>(e), (rx, closed))),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!("an event subscriber fell behind and lost {n} events");
                    }
                    Err(RecvError::Closed) => return None,
                },
                r = closed.changed() => if r.is_err() {
                    return None;
                },
            }
        }
    });
    Box::pin(stream)
}

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
            .map(|p| super::pod_sandbox_status::status_of(&p))
    });
    let containers = d
        .containers
        .all()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.pod_id == pod_id)
        .map(|c| container_status::status_of(d, &c))
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
/// found running at start are watched too.
pub async fn watch_exits(d: Arc<Daemon>) {
    for c in d.containers.all().unwrap_or_default() {
        if matches!(d.containers.observe(&c.id), Observed::Running { .. }) {
            d.events.started(&c.id);
        }
    }
    let mut tick = tokio::time::interval(EXIT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for id in d.events.watched() {
            if matches!(
                d.containers.observe(&id),
                Observed::Running { .. } | Observed::Created
            ) {
                continue;
            }
            match d.containers.find(&id) {
                Ok(Some(rec)) => stopped(&d, &id, &rec.pod_id),
                _ => {
                    d.events.exited(&id);
                }
            }
        }
    }
}
