//! CRI `RemoveContainer`: killed if it runs, its rootfs unmounted, its
//! directories and record removed. Idempotent.

use cri_api::v1::{ContainerEventType, RemoveContainerRequest, RemoveContainerResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub async fn remove_container(
    d: &Daemon,
    req: RemoveContainerRequest,
) -> Result<RemoveContainerResponse, Status> {
    crate::cri::validate::id("RemoveContainer", "container_id", &req.container_id)?;
    if let Some(rec) = d.containers.find(&req.container_id)? {
        d.containers.remove(&rec).await?;
        d.images
            .release(&rec.id)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(container = %rec.id, "container removed");
        crate::cri::events::stopped(d, &rec.id, &rec.pod_id);
        crate::cri::events::emit(
            d,
            &rec.id,
            ContainerEventType::ContainerDeletedEvent,
            &rec.pod_id,
            None,
        );
    }
    Ok(RemoveContainerResponse {})
}
