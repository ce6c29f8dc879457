//! CRI `UpdateRuntimeConfig`: the kubelet gives the node's pod CIDR, which
//! CNI plugins that declare the `ipRanges` capability (host-local) get in
//! their runtimeConfig.

use cri_api::v1::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};
use tonic::Status;

use crate::daemon::Daemon;

pub async fn update_runtime_config(
    d: &Daemon,
    req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse, Status> {
    let cidr = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    // An empty CIDR means "none": nothing to change.
    if !cidr.is_empty() {
        for part in cidr.split(',') {
            let (addr, len) = part.trim().split_once('/').ok_or_else(|| {
                Status::invalid_argument(format!("pod CIDR {part:?}: no prefix length"))
            })?;
            let ok = addr.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok();
            if !ok {
                return Err(Status::invalid_argument(format!(
                    "pod CIDR {part:?} is not an IP prefix"
                )));
            }
        }
        d.pods.set_pod_cidr(&cidr)?;
        tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
    }
    Ok(UpdateRuntimeConfigResponse {})
}
