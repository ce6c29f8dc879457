//! The daemon's state: what every CRI call, the streaming server and the
//! background watchers share.

use crate::config::Config;

/// What every CRI call shares.
pub struct Daemon {
    pub config: Config,
    pub pods: std::sync::Arc<crate::pod::Pods>,
    pub containers: std::sync::Arc<crate::container::Containers>,
    pub images: std::sync::Arc<berth_imageservice::ImageService>,
    /// One turn at a time per pod: RunPodSandbox's name check and record,
    /// CreateContainer (its name check, up to the monitor's CREATED),
    /// StopPodSandbox, RemovePodSandbox, UpdatePodSandboxResources and the
    /// background CNI CHECK/DEL of that pod. Other pods do not wait.
    pub pod_locks: crate::serial::Locks,
    /// One turn at a time per pod name (`name_namespace_uid_attempt`)
    /// in RunPodSandbox, held until the pod is made and recorded or undone.
    pub pod_names: crate::serial::Locks,
    /// CPU samples for usage rates.
    pub sampler: crate::stats::Sampler,
    /// Container events for `GetContainerEvents` subscribers.
    pub events: crate::event_hub::Events,
    /// The streaming server, once it listens.
    pub streaming: std::sync::OnceLock<crate::streaming::Streaming>,
}

impl Daemon {
    /// The pod `id` names (full or unique prefix) with its turn held,
    /// read again once the turn is ours: it may have changed, or gone,
    /// while this call waited.
    pub async fn pod_turn(
        &self,
        id: &str,
    ) -> Result<Option<(crate::serial::Held, crate::pod::PodRecord)>, crate::pod::PodError> {
        let Some(rec) = self.pods.find(id)? else {
            return Ok(None);
        };
        let turn = self.pod_locks.lock(&rec.id).await;
        Ok(self.pods.find(&rec.id)?.map(|rec| (turn, rec)))
    }

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
            pod_locks: Default::default(),
            pod_names: Default::default(),
            sampler: crate::stats::Sampler::default(),
            events: crate::event_hub::Events::new(),
            streaming: std::sync::OnceLock::new(),
        }
    }
}
