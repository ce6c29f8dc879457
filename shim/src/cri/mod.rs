//! The CRI layer: one file per RPC under `runtime/` and `image/`, the
//! tonic trait impl in each `mod.rs` only forwards. It turns requests into
//! calls on the node's pods, containers and images and their errors into
//! gRPC codes; nothing below it imports it.

mod error;
pub mod events;
pub mod image;
pub mod runtime;
pub mod validate;

use tonic::{Response, Status};

use crate::daemon::Daemon;

impl Daemon {
    /// The pod `id` names (full or unique prefix), or NotFound.
    pub fn pod(&self, id: &str) -> Result<crate::pod::PodRecord, Status> {
        validate::id("pod", "pod_sandbox_id", id)?;
        self.pods.find(id)?.ok_or_else(|| pod_not_found(id))
    }

    /// [`Daemon::pod`], with the pod's turn held (see [`Daemon::pod_turn`]).
    pub async fn pod_in_turn(
        &self,
        id: &str,
    ) -> Result<(crate::serial::Held, crate::pod::PodRecord), Status> {
        validate::id("pod", "pod_sandbox_id", id)?;
        self.pod_turn(id).await?.ok_or_else(|| pod_not_found(id))
    }

    /// The container `id` names (full or unique prefix), or NotFound.
    pub fn container(&self, id: &str) -> Result<crate::container::ContainerRecord, Status> {
        validate::id("container", "container_id", id)?;
        self.containers
            .find(id)?
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))
    }
}

fn pod_not_found(id: &str) -> Status {
    Status::not_found(format!("pod sandbox {id:?} not found"))
}

pub type CriResult<T> = Result<Response<T>, Status>;

/// Runs an RPC's work in a task of its own, so that it goes on to its end
/// (made and recorded, or undone) when the caller gives up (the kubelet's
/// deadline), and the caller's retry finds what it made.
pub async fn to_the_end<T: Send + 'static>(
    rpc: &str,
    work: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> CriResult<T> {
    tokio::spawn(tracing::Instrument::in_current_span(work))
        .await
        .map_err(|e| Status::internal(format!("{rpc}: {e}")))?
        .map(Response::new)
}

/// A request whose pod, container or image goes on its call's span (see
/// [`crate::trace`]), so a trace and the log lines of the call name it.
pub trait Traced {
    fn trace(&self);
}

/// The message of a request, its ids recorded on the call's span.
pub fn take<T: Traced>(r: tonic::Request<T>) -> T {
    let t = r.into_inner();
    t.trace();
    t
}

macro_rules! traced {
    ($($field:ident as $key:literal: $($t:ident),+;)*) => {$($(
        impl Traced for cri_api::v1::$t {
            fn trace(&self) {
                crate::trace::record($key, &self.$field);
            }
        }
    )+)*};
}

traced! {
    pod_sandbox_id as "pod_id": StopPodSandboxRequest, RemovePodSandboxRequest,
        PodSandboxStatusRequest, PodSandboxStatsRequest, PortForwardRequest,
        UpdatePodSandboxResourcesRequest, CreateContainerRequest;
    container_id as "container_id": StartContainerRequest, StopContainerRequest,
        RemoveContainerRequest, ContainerStatusRequest, UpdateContainerResourcesRequest,
        ReopenContainerLogRequest, ExecSyncRequest, ExecRequest, AttachRequest,
        ContainerStatsRequest, CheckpointContainerRequest;
}

macro_rules! traced_image {
    ($($t:ident),+) => {$(
        impl Traced for cri_api::v1::$t {
            fn trace(&self) {
                if let Some(i) = &self.image {
                    crate::trace::record("image", &i.image);
                }
            }
        }
    )+};
}

traced_image!(PullImageRequest, ImageStatusRequest, RemoveImageRequest);
