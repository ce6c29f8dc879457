//! Each domain's error becomes a gRPC status here, once: the RPC files use
//! `?` and the codes stay consistent across calls.

use tonic::Status;

use crate::pod::PodError;

impl From<PodError> for Status {
    fn from(e: PodError) -> Status {
        match e {
            // The CNI config or a plugin failed: the node's network is not
            // ready, which the kubelet retries.
            PodError::Network { .. } => Status::failed_precondition(e.to_string()),
            PodError::Db(_) | PodError::Setup { .. } => Status::internal(e.to_string()),
        }
    }
}
