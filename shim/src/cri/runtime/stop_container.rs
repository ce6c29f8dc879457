//! CRI `StopContainer`: the stop signal, SIGKILL after `timeout` seconds;
//! returns when the container is gone. Idempotent: an unknown container
//! (removed already) is stopped, as containerd and critest have it.

use std::time::Duration;

use cri_api::v1::{StopContainerRequest, StopContainerResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub async fn stop_container(
    d: &Daemon,
    req: StopContainerRequest,
) -> Result<StopContainerResponse, Status> {
    crate::cri::validate::id("StopContainer", "container_id", &req.container_id)?;
    let Some(rec) = d.containers.find(&req.container_id)? else {
        tracing::debug!(container = %req.container_id, "stop: no such container");
        return Ok(StopContainerResponse {});
    };
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    d.containers.stop(&rec, timeout).await?;
    tracing::info!(container = %rec.id, "container stopped");
    crate::cri::events::stopped(d, &rec.id, &rec.pod_id);
    Ok(StopContainerResponse {})
}
