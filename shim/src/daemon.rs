//! The daemon's state: what every CRI call, the streaming server and the
//! background watchers share.

use crate::config::Config;

/// What every CRI call shares.
pub struct Daemon {
    pub config: Config,
    pub pods: std::sync::Arc<crate::pod::Pods>,
    pub containers: std::sync::Arc<crate::container::Containers>,
    pub images: std::sync::Arc<berth_imageservice::ImageService>,
    /// Node-wide: RunPodSandbox, StopPodSandbox, RemovePodSandbox and
    /// CreateContainer hold it for their whole call (CNI plugins and the
    /// monitor's start-up wait included), so one such call at a time runs
    /// on the node and a name check and its record are one step.
    pub pod_lock: tokio::sync::Mutex<()>,
    /// CPU samples for usage rates.
    pub sampler: crate::stats::Sampler,
    /// Container events for `GetContainerEvents` subscribers.
    pub events: crate::event_hub::Events,
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
            events: crate::event_hub::Events::new(),
            streaming: std::sync::OnceLock::new(),
        }
    }
}
