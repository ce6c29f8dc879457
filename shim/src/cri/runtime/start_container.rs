//! CRI `StartContainer`: the monitor starts the created container.

use cri_api::v1::{ContainerEventType, StartContainerRequest, StartContainerResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub async fn start_container(
    d: &Daemon,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    let rec = d.container(&req.container_id)?;
    d.containers.start(&rec).await?;
    tracing::info!(container = %rec.id, "container started");
    d.events.started(&rec.id);
    crate::cri::events::emit(
        d,
        &rec.id,
        ContainerEventType::ContainerStartedEvent,
        &rec.pod_id,
        None,
    );
    Ok(StartContainerResponse {})
}
