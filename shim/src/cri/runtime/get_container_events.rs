//! CRI `GetContainerEvents`, for the kubelet's evented PLEG: a stream of
//! CONTAINER_CREATED/STARTED/STOPPED/DELETED events, each with its pod's
//! status and the statuses of the pod's containers. Pods send the same
//! events under their own id, as containerd does. Any number of
//! subscribers; one that falls behind loses events (and the kubelet
//! relists), it never slows the runtime.

use cri_api::v1::ContainerEventResponse;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;
use tonic::codegen::BoxStream;

use crate::daemon::Daemon;

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
