//! CRI `ReopenContainerLog`: the monitor closes the container's log file
//! and opens it again at its path (after the kubelet rotated it).

use cri_api::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub async fn reopen_container_log(
    d: &Daemon,
    req: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, Status> {
    let rec = d.container(&req.container_id)?;
    crate::attach::reopen_log(d, &rec)
        .await
        .map_err(|e| Status::failed_precondition(format!("ReopenContainerLog: {e}")))?;
    Ok(ReopenContainerLogResponse {})
}
