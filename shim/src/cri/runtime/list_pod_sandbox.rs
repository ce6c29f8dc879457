//! CRI `ListPodSandbox`, with its filter: id (or id prefix), state, labels.

use cri_api::v1::{ListPodSandboxRequest, ListPodSandboxResponse};
use tonic::Status;

use super::pod_sandbox_status::{state_of, to_cri};
use crate::daemon::Daemon;

pub async fn list_pod_sandbox(
    d: &Daemon,
    req: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let mut items: Vec<_> = d
        .pods
        .all()?
        .into_iter()
        .filter(|p| f.id.is_empty() || p.id.starts_with(&f.id))
        .filter(|p| {
            f.state
                .as_ref()
                .is_none_or(|s| state_of(p) as i32 == s.state)
        })
        .map(|p| to_cri(&p))
        .filter(|p| {
            f.label_selector
                .iter()
                .all(|(k, v)| p.labels.get(k) == Some(v))
        })
        .collect();
    items.sort_by_key(|p| p.created_at);
    Ok(ListPodSandboxResponse { items })
}
