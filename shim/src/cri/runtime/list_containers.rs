//! CRI `ListContainers`, with its filter: id (or prefix), state, pod, labels.

use cri_api::v1::{ListContainersRequest, ListContainersResponse};
use tonic::Status;

use super::container_status::to_cri;
use crate::daemon::Daemon;

pub async fn list_containers(
    d: &Daemon,
    req: ListContainersRequest,
) -> Result<ListContainersResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let mut containers: Vec<_> = d
        .containers
        .all()?
        .into_iter()
        .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
        .filter(|c| f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
        .map(|c| to_cri(d, &c))
        .filter(|c| f.state.as_ref().is_none_or(|s| c.state == s.state))
        .filter(|c| {
            f.label_selector
                .iter()
                .all(|(k, v)| c.labels.get(k) == Some(v))
        })
        .collect();
    containers.sort_by_key(|c| c.created_at);
    Ok(ListContainersResponse { containers })
}
