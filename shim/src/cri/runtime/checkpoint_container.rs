//! CRI `CheckpointContainer` (the kubelet's checkpoint API, KEP-2008): a
//! running container dumped with CRIU into an archive at `location`, and
//! left running. `timeout` (seconds) bounds the whole call; 0 means 5 minutes.
//!
//! Restoring from such an archive is CreateContainer's, as with CRI-O
//! (see `container::restore`).

use std::path::Path;
use std::time::Duration;

use cri_api::v1::CheckpointContainerRequest;
use tonic::Status;

use crate::container::checkpoint::{CheckpointError, PodNames};
use crate::daemon::Daemon;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn checkpoint_container(
    d: &Daemon,
    req: CheckpointContainerRequest,
) -> Result<(), Status> {
    let rec = d.container(&req.container_id)?;
    let location = Path::new(&req.location);
    let bad = |why: &str| {
        Err(Status::invalid_argument(format!(
            "CheckpointContainer: location {:?} {why}",
            req.location
        )))
    };
    if req.location.is_empty() {
        return bad("is empty: name the archive to write");
    }
    if !location.is_absolute() || req.location.ends_with('/') {
        return bad("must be an absolute file path");
    }
    if location.is_dir() {
        return bad("is a directory");
    }
    if !location.parent().is_some_and(Path::is_dir) {
        return bad("is in no existing directory");
    }
    if req.timeout < 0 {
        return Err(Status::invalid_argument(
            "CheckpointContainer: timeout must not be negative",
        ));
    }
    let timeout = match req.timeout {
        0 => DEFAULT_TIMEOUT,
        s => Duration::from_secs(s as u64),
    };
    let pod = d.pod(&rec.pod_id)?;
    let meta = pod.config_ref().metadata.clone().unwrap_or_default();
    let names = PodNames {
        id: pod.id.clone(),
        name: meta.name,
        namespace: meta.namespace,
        handler: pod.runtime_handler.clone(),
    };
    d.containers
        .checkpoint(&rec, &names, location, timeout)
        .await
        .map_err(|e| match e {
            CheckpointError::Refused(m) => Status::failed_precondition(m),
            CheckpointError::Deadline(m) => Status::deadline_exceeded(m),
            CheckpointError::Failed(m) => Status::internal(m),
        })?;
    tracing::info!(container = %rec.id, location = %req.location, "container checkpointed");
    Ok(())
}
