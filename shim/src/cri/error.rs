//! Each domain's error becomes a gRPC status here, once: the RPC files use
//! `?` and the codes stay consistent across calls.

use tonic::Status;

use crate::container::ContainerError;
use crate::pod::PodError;

impl From<ContainerError> for Status {
    fn from(e: ContainerError) -> Status {
        match e {
            ContainerError::Spec(e) => e.into(),
            // What the config, the image or the container's state did not
            // allow.
            ContainerError::Create(_) | ContainerError::Start(_) => {
                Status::failed_precondition(e.to_string())
            }
            ContainerError::Db(_) | ContainerError::Monitor(_) => Status::internal(e.to_string()),
        }
    }
}

impl From<PodError> for Status {
    fn from(e: PodError) -> Status {
        match e {
            // The CNI config or a plugin failed: the node's network is not
            // ready, which the kubelet retries.
            PodError::Network { .. } => Status::failed_precondition(e.to_string()),
            PodError::Db(_) | PodError::State(_) | PodError::Setup { .. } => {
                Status::internal(e.to_string())
            }
        }
    }
}
