//! The CRI services: one file per RPC under `runtime/` and `image/`; the
//! tonic trait impl in each `mod.rs` only forwards.

pub mod events;
pub mod image;
pub mod runtime;
pub mod validate;

use tonic::{Response, Status};

use crate::config::Config;

/// What every CRI call shares.
pub struct Daemon {
    pub config: Config,
    pub pods: std::sync::Arc<crate::pod::Pods>,
    pub containers: std::sync::Arc<crate::container::Containers>,
    pub images: std::sync::Arc<berth_imageservice::ImageService>,
    /// Serialises pod creation and removal, so the name check and the
    /// record are one step.
    pub pod_lock: tokio::sync::Mutex<()>,
    /// CPU samples for usage rates.
    pub sampler: crate::stats::Sampler,
    /// Container events for `GetContainerEvents` subscribers.
    pub events: events::Events,
    /// The streaming server, once it listens.
    pub streaming: std::sync::OnceLock<crate::streaming::Streaming>,
}

impl Daemon {
    pub fn new(
        config: Config,
        pods: crate::pod::Pods,
        containers: crate::container::Containers,
        images: std::sync::Arc<berth_imageservice::ImageService>,
    ) -> Daemon {
        Daemon {
            config,
            pods: std::sync::Arc::new(pods),
            containers: std::sync::Arc::new(containers),
            images,
            pod_lock: tokio::sync::Mutex::new(()),
            sampler: crate::stats::Sampler::default(),
            events: events::Events::new(),
            streaming: std::sync::OnceLock::new(),
        }
    }
}

impl Daemon {
    /// The pod `id` names (full or unique prefix), or NotFound.
    pub fn pod(&self, id: &str) -> Result<crate::pod::PodRecord, Status> {
        validate::id("pod", "pod_sandbox_id", id)?;
        self.pods
            .find(id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))
    }

    /// The container `id` names (full or unique prefix), or NotFound.
    pub fn container(&self, id: &str) -> Result<crate::container::ContainerRecord, Status> {
        validate::id("container", "container_id", id)?;
        self.containers
            .find(id)
            .map_err(Status::internal)?
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))
    }
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A fresh 64-hex-character id, as containerd and CRI-O make them.
pub fn random_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

pub type CriResult<T> = Result<Response<T>, Status>;

/// The honest answer of an RPC that berth does not implement yet.
pub fn unimplemented<T>(rpc: &str) -> CriResult<T> {
    tracing::debug!(rpc, "unimplemented");
    Err(Status::unimplemented(format!(
        "{rpc} is not implemented by berth {}",
        env!("CARGO_PKG_VERSION")
    )))
}
