//! CRI `StopPodSandbox`: its containers are killed, CNI DEL releases the
//! pod's network, and the pod
//! becomes NOTREADY. Idempotent; an unknown id is not an error (the kubelet
//! calls it more than once). A failing DEL is reported, and tried again by
//! the next Stop or Remove and in the background (`cni.del_retry_interval`).

use cri_api::v1::{ContainerEventType, StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use crate::daemon::Daemon;
use crate::pod::PodState;

pub async fn stop_pod_sandbox(
    d: &Daemon,
    req: StopPodSandboxRequest,
) -> Result<StopPodSandboxResponse, Status> {
    crate::cri::validate::id("StopPodSandbox", "pod_sandbox_id", &req.pod_sandbox_id)?;
    if let Some((_turn, mut rec)) = d.pod_turn(&req.pod_sandbox_id).await? {
        // Its containers first (the kubelet has given them their grace).
        for c in d.containers.of_pod(&rec.id) {
            d.containers.stop(&c, std::time::Duration::ZERO).await?;
            crate::cri::events::stopped(d, &c.id, &rec.id);
        }
        berth_db::crash::point("stop_pod:containers_stopped");
        // NOTREADY once its containers are gone, as containerd does; the
        // network then goes (a failure is recorded, and retried).
        if rec.state != PodState::NotReady {
            rec.state = PodState::NotReady;
            d.pods.save(&rec)?;
            tracing::info!(pod = %rec.id, "pod sandbox stopped");
            crate::cri::events::emit(
                d,
                &rec.id,
                ContainerEventType::ContainerStoppedEvent,
                &rec.id,
                None,
            );
        }
        let pods = d.pods.clone();
        crate::trace::spawn_blocking(move || pods.detach_network(&mut rec))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
    }
    Ok(StopPodSandboxResponse {})
}
