//! CRI `RemovePodSandbox`: removes its containers, releases the namespaces, /dev/shm, files and
//! cgroup, then the record. Idempotent.

use cri_api::v1::{ContainerEventType, RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub async fn remove_pod_sandbox(
    d: &Daemon,
    req: RemovePodSandboxRequest,
) -> Result<RemovePodSandboxResponse, Status> {
    crate::cri::validate::id("RemovePodSandbox", "pod_sandbox_id", &req.pod_sandbox_id)?;
    if let Some((_turn, rec)) = d.pod_turn(&req.pod_sandbox_id).await? {
        for c in d.containers.of_pod(&rec.id) {
            d.containers.remove(&c).await?;
            d.images
                .release(&c.id)
                .map_err(|e| Status::internal(e.to_string()))?;
            crate::cri::events::stopped(d, &c.id, &rec.id);
            crate::cri::events::emit(
                d,
                &c.id,
                ContainerEventType::ContainerDeletedEvent,
                &rec.id,
                None,
            );
        }
        berth_db::crash::point("remove_pod:containers_removed");
        let pods = d.pods.clone();
        let id = rec.id.clone();
        let mut last = super::pod_sandbox_status::status_of(&rec);
        crate::trace::spawn_blocking(move || pods.remove(&rec))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        tracing::info!(pod = %id, "pod sandbox removed");
        last.state = cri_api::v1::PodSandboxState::SandboxNotready as i32;
        crate::cri::events::emit(
            d,
            &id,
            ContainerEventType::ContainerDeletedEvent,
            &id,
            Some(last),
        );
    }
    Ok(RemovePodSandboxResponse {})
}
