//! CRI `StartContainer`: the monitor starts the created container.

use cri_api::v1::{StartContainerRequest, StartContainerResponse};
use tonic::Status;

use crate::cri::Daemon;

pub async fn start_container(
    d: &Daemon,
    req: StartContainerRequest,
) -> Result<StartContainerResponse, Status> {
    let rec = d.container(&req.container_id)?;
    d.containers
        .start(&rec)
        .await
        .map_err(Status::failed_precondition)?;
    tracing::info!(container = %rec.id, "container started");
    Ok(StartContainerResponse {})
}
