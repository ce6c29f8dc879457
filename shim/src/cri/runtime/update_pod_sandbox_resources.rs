//! CRI `UpdatePodSandboxResources`: the kubelet, having resized a pod's
//! cgroup itself, tells the runtime the pod's new overhead and resources
//! (the sum of its containers'). berth records them in the pod's config,
//! where `PodSandboxStatus` (verbose) shows them; the containers' own
//! limits change through `UpdateContainerResources`.

use cri_api::v1::{UpdatePodSandboxResourcesRequest, UpdatePodSandboxResourcesResponse};
use tonic::Status;

use crate::daemon::Daemon;
use crate::pod::PodState;

pub async fn update_pod_sandbox_resources(
    d: &Daemon,
    req: UpdatePodSandboxResourcesRequest,
) -> Result<UpdatePodSandboxResourcesResponse, Status> {
    let (_turn, mut rec) = d.pod_in_turn(&req.pod_sandbox_id).await?;
    if rec.state != PodState::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {} is not ready: its resources cannot change",
            rec.id
        )));
    }
    let mut config = rec.config();
    let linux = config.linux.get_or_insert_with(Default::default);
    if req.overhead.is_some() {
        linux.overhead = req.overhead;
    }
    if req.resources.is_some() {
        linux.resources = req.resources;
    }
    rec.set_config(&config);
    d.pods
        .save(&rec)
        .map_err(|e| Status::internal(e.to_string()))?;
    tracing::info!(pod = %rec.id, "pod resources recorded");
    Ok(UpdatePodSandboxResourcesResponse {})
}
